"""Checks of the user's store URI and provider name that import nothing.

``carbonpipe run`` refuses bad input before it starts the command, and checks it with these
before anything else is loaded; :mod:`carbonpipe.store` and :mod:`carbonpipe.cloud` re-export them.
"""

from __future__ import annotations

import os

from carbonpipe.errors import InvalidStoreURI

DEFAULT_STORE = "./carbon-artifacts"
ACCEPTED_FORMS = (
    "a local folder path, file:///abs/path, s3://bucket[/prefix] or gs://bucket[/prefix]"
)

_EDGE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_S3_CHARS = _EDGE_CHARS | frozenset(".-")  # S3 general purpose bucket naming rules
_GS_CHARS = _EDGE_CHARS | frozenset("._-")  # GCS: dotted names may reach 222 characters

_ALIASES = {
    "gcp": "gcp",
    "google": "gcp",
    "gce": "gcp",
    "aws": "aws",
    "amazon": "aws",
    "ec2": "aws",
    "azure": "azure",
    "microsoft": "azure",
}


def _bucket_and_prefix(rest: str, chars: frozenset[str], max_len: int) -> tuple[str, str] | None:
    bucket, _, prefix = rest.partition("/")
    if (
        not 3 <= len(bucket) <= max_len
        or bucket[0] not in _EDGE_CHARS
        or bucket[-1] not in _EDGE_CHARS
        or not chars.issuperset(bucket)
        or "\n" in prefix
    ):
        return None
    return bucket, prefix.strip("/")


def parse_store_uri(uri: str | os.PathLike[str] | None) -> tuple[str, str, str]:
    """Split a store URI into (scheme, bucket or folder, prefix); raise naming the accepted forms.

    Cheap and offline: it imports no backend, so callers can validate configuration early.
    """
    if uri is None:
        uri = DEFAULT_STORE
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidStoreURI(f"store URI {uri!r} is empty or not a string; use {ACCEPTED_FORMS}")
    uri = uri.strip()
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme == "s3":
        parts = _bucket_and_prefix(rest, _S3_CHARS, 63) if uri.startswith("s3://") else None
        if parts is None:
            raise InvalidStoreURI(
                f"store URI {uri!r} is not a valid S3 URI; expected s3://bucket[/prefix] "
                "with a lower-case bucket name of 3-63 characters"
            )
        return ("s3", *parts)
    if scheme in ("gs", "gcs"):
        parts = _bucket_and_prefix(rest, _GS_CHARS, 222)
        if parts is None:
            raise InvalidStoreURI(
                f"store URI {uri!r} is not a valid GCS URI; expected gs://bucket[/prefix]"
            )
        return ("gs", *parts)
    if scheme == "file":
        return "file", rest, ""
    if scheme:
        raise InvalidStoreURI(
            f"store URI {uri!r} has unsupported scheme {scheme!r}; use {ACCEPTED_FORMS}"
        )
    return "file", uri, ""


def check_attempt(attempt: object, *, name: str = "attempt") -> None:
    """Refuse an attempt number that is not an integer >= 1 (``None``: the next attempt)."""
    if attempt is not None and (
        isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1
    ):
        raise ValueError(f"{name} must be an integer >= 1, got {attempt!r}")


def normalize_provider(value: str, *, name: str = "provider") -> str:
    """Return ``"gcp"``, ``"aws"`` or ``"azure"`` for a provider name or alias, else ValueError."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    provider = _ALIASES.get(value.strip().lower())
    if provider is None:
        raise ValueError(
            f"{name}={value!r} is not a cloud provider; use 'gcp', 'aws' or 'azure' "
            "(aliases 'google', 'amazon', 'microsoft')"
        )
    return provider
