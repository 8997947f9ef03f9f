"""Store URIs: parse and check one with no import, and open the backend it names.

``carbonpipe run`` refuses a bad URI before it starts the command, so :func:`parse_store_uri`
imports nothing; :func:`open_store` picks the backend from a scheme table and imports it then.
"""

from __future__ import annotations

import os
import re

from carbonpipe.errors import InvalidStoreURI

DEFAULT_STORE = "./carbon-artifacts"
# Seconds one call to an object store may take, retries included (the ``store_timeout_s`` setting).
DEFAULT_STORE_TIMEOUT_S = 5.0
ACCEPTED_FORMS = (
    "a local folder path, file:///abs/path, s3://bucket[/prefix], gs://bucket[/prefix] "
    "or az://container[/prefix]"
)

# A known scheme missing its "://" ("s3:/x", "gs:x", "s3//x", "gcs:\\x"): refused, never a folder.
_MISTYPED_SCHEME = re.compile(r"(s3|s3a|s3n|gs|gcs|az|azure|file)(?::|//|\\)", re.IGNORECASE)
_FORM_OF = {
    "s3": "s3://BUCKET[/PREFIX]",
    "gs": "gs://BUCKET[/PREFIX]",
    "az": "az://CONTAINER[/PREFIX]",
    "file": "file://PATH",
}
_KNOWN_SCHEMES = ("s3", "gs", "gcs", "az", "azure", "file")
# "azure" and "gcs" are aliases (DuckDB reads azure://, gsutil users write gcs://).
_CANONICAL = {"s3a": "s3", "s3n": "s3", "gcs": "gs", "azure": "az"}

_EDGE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_S3_CHARS = _EDGE_CHARS | frozenset(".-")  # S3 general purpose bucket naming rules
_GS_CHARS = _EDGE_CHARS | frozenset("._-")  # GCS: dotted names may reach 222 characters
_AZ_CHARS = _EDGE_CHARS | frozenset("-")  # Azure containers: no dots, no "--"


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
    _refuse_mistyped_scheme(uri, scheme if sep else None)
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
    if scheme in ("az", "azure"):
        parts = _bucket_and_prefix(rest, _AZ_CHARS, 63)
        if parts is None or "--" in parts[0]:
            raise InvalidStoreURI(
                f"store URI {uri!r} is not a valid Azure Blob URI; expected "
                "az://container[/prefix] with a lower-case container name of 3-63 letters, "
                "digits and single hyphens"
            )
        return ("az", *parts)
    if scheme == "file":
        if not rest.strip():
            raise InvalidStoreURI(f"store URI {uri!r} names no folder; use {ACCEPTED_FORMS}")
        return "file", rest, ""
    if scheme:
        raise InvalidStoreURI(
            f"store URI {uri!r} has unsupported scheme {scheme!r}; use {ACCEPTED_FORMS}"
        )
    return "file", uri, ""


def _refuse_mistyped_scheme(uri: str, scheme: str | None) -> None:
    """Refuse a URI whose scheme is mistyped: its "://" broken, or not in lower case."""
    folder = ""
    if scheme is None:
        typo = _MISTYPED_SCHEME.match(uri)
        if typo is None:
            return
        meant = typo.group(1).lower()
        problem = f"looks like a mistyped {meant}:// URI"
        folder = f" (for a local folder of that name, write ./{uri})"
    elif scheme.lower() in _KNOWN_SCHEMES and scheme != scheme.lower():
        meant = scheme.lower()
        problem = f"has its scheme in upper case ({scheme}://)"
    else:
        return
    form = _FORM_OF[_CANONICAL.get(meant, meant)]
    raise InvalidStoreURI(
        f"store URI {uri!r} {problem}: write {form}; accepted: {ACCEPTED_FORMS}{folder}"
    )
