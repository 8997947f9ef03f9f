"""``python -m carbonpipe`` is the ``carbonpipe`` command."""

import sys

from carbonpipe.cli.app import main

sys.exit(main())
