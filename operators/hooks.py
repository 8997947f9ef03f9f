"""Open a carbonpipe store with credentials taken from Airflow connections.

``s3://`` stores read an Amazon Web Services connection (``aws_default``): login and password
are the access key pair, and its extra may carry ``endpoint_url``, ``region_name``,
``aws_session_token`` (or ``service_config: {"s3": {"endpoint_url": ...}}``), as the Amazon
provider reads them. ``gs://`` stores read a Google Cloud connection (``google_cloud_default``):
extra ``project``, ``keyfile_dict`` or ``key_path``, and ``endpoint_url`` for an emulator.
A connection that does not exist falls back to the SDK's own credential chain, as the Amazon
provider does. Nothing here does I/O until :meth:`CarbonStoreHook.get_store` is called, and
boto3 and the GCS client load only then.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from carbonpipe._optional import needs_extra

with needs_extra("airflow", "Airflow operators"):
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

if TYPE_CHECKING:
    from carbonpipe.stores.base import Store

_AWS_EXTRA_CLIENT_KEYS = ("region_name", "aws_session_token")


def store_scheme(uri: str) -> str:
    """Return ``s3``, ``gs`` or ``""`` (a local folder) for a store URI."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    return "gs" if scheme == "gcs" else scheme


def s3_options(conn: Any) -> dict[str, Any]:
    """Translate an Amazon Web Services connection into :class:`S3Store` options."""
    extra = conn.extra_dejson or {}
    options: dict[str, Any] = {}
    endpoint = extra.get("endpoint_url") or (extra.get("service_config") or {}).get("s3", {}).get(
        "endpoint_url"
    )
    if endpoint:
        options["endpoint_url"] = endpoint
    if conn.login:
        options["aws_access_key_id"] = conn.login
    if conn.password:
        options["aws_secret_access_key"] = conn.password
    for key in _AWS_EXTRA_CLIENT_KEYS:
        if extra.get(key):
            options[key] = extra[key]
    return options


def gcs_options(conn: Any) -> dict[str, Any]:
    """Translate a Google Cloud connection into :class:`GCSStore` options (a client if keyed)."""
    extra = conn.extra_dejson or {}

    def field(name: str) -> Any:
        return extra.get(name) or extra.get(f"extra__google_cloud_platform__{name}")

    options: dict[str, Any] = {}
    project, endpoint = field("project"), field("endpoint_url")
    keyfile_dict, key_path = field("keyfile_dict"), field("key_path")
    if project:
        options["project"] = project
    if endpoint:
        options["endpoint_url"] = endpoint
    if keyfile_dict or key_path:
        with needs_extra("gcs", "Google Cloud connections"):
            from google.cloud import storage
            from google.oauth2 import service_account

        if keyfile_dict:
            info = json.loads(keyfile_dict) if isinstance(keyfile_dict, str) else keyfile_dict
            credentials = service_account.Credentials.from_service_account_info(info)
        else:
            credentials = service_account.Credentials.from_service_account_file(key_path)
        client_options = {"api_endpoint": endpoint} if endpoint else None
        options["client"] = storage.Client(
            project=project or credentials.project_id,
            credentials=credentials,
            client_options=client_options,
        )
    return options


class CarbonStoreHook(BaseHook):
    """Open the carbonpipe store a URI names, with credentials from an Airflow connection.

    :param store: the store URI: a folder, ``s3://bucket/prefix`` or ``gs://bucket/prefix``;
        ``None`` resolves it like the tracker does (``CARBONPIPE_STORE``, then carbon.yaml).
    :param aws_conn_id: Airflow connection for ``s3://`` stores (``None``: the SDK's chain).
    :param gcp_conn_id: Airflow connection for ``gs://`` stores (``None``: the SDK's chain).
    """

    hook_name = "Carbonpipe store"

    def __init__(
        self,
        store: str | None = None,
        *,
        aws_conn_id: str | None = "aws_default",
        gcp_conn_id: str | None = "google_cloud_default",
    ) -> None:
        super().__init__()
        self.store_uri = store
        self.aws_conn_id = aws_conn_id
        self.gcp_conn_id = gcp_conn_id

    def resolved_uri(self) -> str:
        """The store URI: the argument, else carbonpipe's configuration."""
        if self.store_uri:
            return self.store_uri
        from carbonpipe.config import resolve_settings

        return resolve_settings().store

    def _conn_id_for(self, scheme: str) -> str | None:
        return {"s3": self.aws_conn_id, "gs": self.gcp_conn_id}.get(scheme)

    def _options_from(self, scheme: str, conn: Any) -> dict[str, Any]:
        return s3_options(conn) if scheme == "s3" else gcs_options(conn)

    def store_options(self) -> dict[str, Any]:
        """The backend options the connection gives (empty for a local store or no connection)."""
        scheme = store_scheme(self.resolved_uri())
        conn_id = self._conn_id_for(scheme)
        if not conn_id:
            return {}
        try:
            conn = self.get_connection(conn_id)
        except AirflowNotFoundException:
            self.log.info(
                "connection %r not defined; %s store uses the SDK's credentials", conn_id, scheme
            )
            return {}
        return self._options_from(scheme, conn)

    async def astore_options(self) -> dict[str, Any]:
        """:meth:`store_options` for the triggerer's event loop."""
        scheme = store_scheme(self.resolved_uri())
        conn_id = self._conn_id_for(scheme)
        if not conn_id:
            return {}
        try:
            conn = await self.aget_connection(conn_id)
        except AirflowNotFoundException:
            self.log.info(
                "connection %r not defined; %s store uses the SDK's credentials", conn_id, scheme
            )
            return {}
        return self._options_from(scheme, conn)

    def get_store(self) -> Store:
        """Open the store (no request is sent until it is used)."""
        from carbonpipe.stores.opener import open_store

        return open_store(self.resolved_uri(), **self.store_options())

    async def aget_store(self) -> Store:
        """Open the store from inside a trigger."""
        from carbonpipe.stores.opener import open_store

        return open_store(self.resolved_uri(), **await self.astore_options())

    def get_conn(self) -> Store:
        """Return the store (the hook's "connection")."""
        return self.get_store()
