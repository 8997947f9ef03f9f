"""What the commands print: the data as JSON (``--json``) or as text, and the log level ``-v`` sets."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    import json

    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True, default=str, allow_nan=False))
    else:
        print(text)


# Set to 1 to let -v show the SDKs' own debug logs too (botocore, urllib3, google-auth): they
# print signed requests, so their lines may hold what redaction does not know to be a secret.
DEBUG_SDK_ENV = "CARBONPIPE_DEBUG_SDK"


def configure_logging(verbose: bool) -> None:
    """``-v`` shows carbonpipe's own debug logs; every other logger stays at WARNING.

    Third-party loggers (botocore's signed requests, urllib3's URLs) join in only with
    ``CARBONPIPE_DEBUG_SDK=1``. Every line, whoever logs it, goes through
    :func:`carbonpipe.stores.redact.redact` (URL userinfo, keys, tokens, passwords).
    """
    import logging
    import os

    from carbonpipe.stores.redact import RedactingFormatter

    sdk = verbose and os.environ.get(DEBUG_SDK_ENV, "") not in ("", "0")
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:  # ours, or an embedding program's: each line is redacted
        fmt = handler.formatter._fmt if handler.formatter else "%(levelname)s %(name)s: %(message)s"
        handler.setFormatter(RedactingFormatter(fmt))
    root.setLevel(logging.DEBUG if sdk else logging.WARNING)
    logging.getLogger("carbonpipe").setLevel(logging.DEBUG if verbose else logging.NOTSET)
