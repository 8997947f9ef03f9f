"""``python -m carbonpipe`` is the ``carbonpipe`` command."""

import sys

from carbonpipe.cli import main

sys.exit(main())
