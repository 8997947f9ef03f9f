"""Keep secrets out of what carbonpipe logs or keeps: URL userinfo and known credential values.

The store backends redact their errors with it and the spool its envelopes, so it sits below
both. ``carbonpipe``'s log handler formats every line through it too
(:class:`RedactingFormatter`), whatever logger the line came from.
"""

from __future__ import annotations

import logging
import os
import re

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s]*@")
# Values of these variables are scrubbed from any text the spool writes or logs.
_SECRET_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_SECRET",
)
# AWS access key ids (long-term AKIA..., temporary ASIA...), wherever they appear.
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b")
# name=value where the name says it is a secret: --password=x, DB_PASSWORD=x, ?token=x,
# X-Amz-Security-Token=x, "aws_secret_access_key": "x" (JSON and headers: name, separator, value).
_NAMED = re.compile(
    r"(?i)(?P<name>[\w.\-]*(?:password|passwd|pwd|secret|token|credential|api[_\-]?key|"
    r"signature)[\w.\-]*)(?P<sep>\"?\s*[:=]\s*\"?|=)(?P<value>[^\s&\"',;}]+)"
)
# Azure: a connection string's AccountKey=..., a SAS token's signature (sig=..., also inside
# SharedAccessSignature=...), wherever they appear, whatever follows them.
_AZURE_KEY = re.compile(r"(?i)(?P<name>\bAccount_?Key\"?\s*[:=]\s*\"?)[^\s;&\"',}]+")
_SAS_SIG = re.compile(r"(?i)(?P<name>(?<![\w\-])sig=)[^\s;&\"',}]+")
# --password VALUE (the value as the next argument)
_FLAG_SPACE = re.compile(
    r"(?i)(?<![\w\-])(?P<flag>--?[\w\-]*(?:password|passwd|secret|token)[\w\-]*)\s+(?!-)\S+"
)
# Authorization: AWS4-HMAC-SHA256 Credential=..., Signature=... / Bearer ...
_AUTH_HEADER = re.compile(r"(?i)(?P<name>authorization[\"']?\s*[:=]\s*[\"']?)[^\"'\n]+")


def redact(text: str) -> str:
    """Remove URL userinfo and known secret values from ``text`` before it is logged or kept."""
    text = _USERINFO.sub(r"\g<scheme>", text)
    for name in _SECRET_ENV:
        value = os.environ.get(name, "")
        if len(value) >= 8:  # shorter values would blank ordinary words
            text = text.replace(value, "***")
    text = _AUTH_HEADER.sub(r"\g<name>***", text)
    text = _AZURE_KEY.sub(r"\g<name>***", text)
    text = _SAS_SIG.sub(r"\g<name>***", text)
    text = _NAMED.sub(r"\g<name>\g<sep>***", text)
    text = _FLAG_SPACE.sub(r"\g<flag> ***", text)
    return _AWS_KEY_ID.sub("***", text)


class RedactingFormatter(logging.Formatter):
    """A formatter whose every line (message, arguments, traceback) goes through :func:`redact`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
