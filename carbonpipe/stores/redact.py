"""Keep secrets out of what carbonpipe logs or keeps: URL userinfo and known credential values.

The store backends redact their errors with it and the spool its envelopes, so it sits below
both.
"""

from __future__ import annotations

import os
import re

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s]*@")
# Values of these variables are scrubbed from any text the spool writes or logs.
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GOOGLE_OAUTH_ACCESS_TOKEN")


def redact(text: str) -> str:
    """Remove URL userinfo and known secret values from ``text`` before it is logged or kept."""
    text = _USERINFO.sub(r"\g<scheme>", text)
    for name in _SECRET_ENV:
        value = os.environ.get(name, "")
        if len(value) >= 8:  # shorter values would blank ordinary words
            text = text.replace(value, "***")
    return text
