"""Open the store a URI names: the backend comes from a scheme table and loads on first use."""

from __future__ import annotations

import importlib
import os
from typing import Any

from carbonpipe.stores.base import Store
from carbonpipe.stores.deadline import check_timeout
from carbonpipe.stores.uri import parse_store_uri

# scheme -> the backend class, imported only when a URI of that scheme is opened (boto3 and
# google-cloud-storage cost a tracked step hundreds of milliseconds it should not pay for a
# local folder). Each takes (bucket or folder, prefix, **options).
BACKENDS: dict[str, str] = {
    "file": "carbonpipe.stores.local:LocalStore",
    "s3": "carbonpipe.stores.s3:S3Store",
    "gs": "carbonpipe.stores.gcs:GCSStore",
    "az": "carbonpipe.stores.azure:AzureBlobStore",
}
# Schemes whose backend talks to a server, and so takes the ``timeout_s`` deadline.
NETWORK_SCHEMES = frozenset({"s3", "gs", "az"})


def open_store(
    uri: str | os.PathLike[str] | Store | None = None,
    *,
    timeout_s: float | str | None = None,
    **options: Any,
) -> Store:
    """Open the store a URI names: a folder, ``s3://``, ``gs://`` or ``az://container/prefix``.

    ``options`` go to the backend (``endpoint_url=``, ``client=`` ...). ``timeout_s`` is the
    deadline of every call to an object store (the ``store_timeout_s`` setting; a local folder
    has none, and ignores it). ``None`` opens the default local folder ``./carbon-artifacts``.
    """
    if timeout_s is not None:
        timeout_s = check_timeout(timeout_s, "timeout_s")
    if isinstance(uri, Store):
        return uri
    scheme, bucket, prefix = parse_store_uri(uri)
    if timeout_s is not None and scheme in NETWORK_SCHEMES:
        options["timeout_s"] = timeout_s
    module, _, name = BACKENDS[scheme].partition(":")
    backend: type[Any] = getattr(importlib.import_module(module), name)
    return backend(bucket, prefix, **options)  # type: ignore[no-any-return]
