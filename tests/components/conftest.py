"""Share one hardware-profile cache across these tests (still never the user's)."""

from __future__ import annotations

# Importing the fixture is how a sibling package shares it without a root conftest change.
from tests.pipelines.conftest import _shared_hardware_cache, shared_cache_dir  # noqa: F401
