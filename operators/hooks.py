"""Open a carbonpipe store with credentials taken from Airflow connections.

``s3://`` stores read an Amazon Web Services connection (``aws_default``): login and password
are the access key pair, and its extra may carry ``endpoint_url``, ``region_name``,
``aws_session_token`` (or ``service_config: {"s3": {"endpoint_url": ...}}``), as the Amazon
provider reads them. ``gs://`` stores read a Google Cloud connection (``google_cloud_default``):
extra ``project``, ``keyfile_dict`` or ``key_path``, and ``endpoint_url`` for an emulator.
``az://`` stores read an Azure Blob Storage connection (type ``wasb``, ``wasb_default``) with
the fields the Microsoft Azure provider gives it: extra ``connection_string`` first; else the
host is the account URL and login the account name, with extra ``tenant_id`` (login and password
are then a service principal's client id and secret), ``shared_access_key``, ``sas_token``, the
password or extra ``account_key`` (the account key), else ``DefaultAzureCredential`` (extra
``managed_identity_client_id`` / ``workload_identity_tenant_id``). The provider itself need not
be installed. A connection that does not exist falls back to the SDK's own credential chain, as the Amazon
provider does. Nothing here does I/O until :meth:`CarbonStoreHook.get_store` is called, and
boto3, the GCS and the Azure clients load only then.
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
    """Return ``s3``, ``gs``, ``az`` or ``""`` (a local folder) for a store URI."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    return {"gcs": "gs", "azure": "az"}.get(scheme, scheme)


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


def azure_options(conn: Any) -> dict[str, Any]:
    """Translate an Azure Blob Storage (``wasb``) connection into :class:`AzureBlobStore` options."""
    extra = conn.extra_dejson or {}

    def field(name: str) -> Any:
        return extra.get(name) or extra.get(f"extra__wasb__{name}") or None

    connection_string = field("connection_string")
    if connection_string:
        return {"connection_string": connection_string}
    options: dict[str, Any] = {}
    host = (conn.host or "").strip()
    if host:
        options["endpoint_url"] = host if "://" in host else f"https://{host}"
    tenant = field("tenant_id")
    account = "" if tenant else (conn.login or "")
    if not account and ".blob." in host:
        # https://ACCOUNT.blob.core.windows.net: the account a key signs for.
        account = host.split("://", 1)[-1].split(".", 1)[0]
    if account:
        options["account_name"] = account
    sas = field("sas_token")
    if tenant:
        with needs_extra("azure", "Azure connections"):
            from azure.identity import ClientSecretCredential

        options["credential"] = ClientSecretCredential(
            tenant_id=tenant, client_id=conn.login, client_secret=conn.password
        )
    elif field("shared_access_key"):
        options["account_key"] = field("shared_access_key")
    elif sas:
        if sas.startswith("http"):  # a whole SAS URL: the account URL and the token
            url, _, sas = sas.partition("?")
            options["endpoint_url"] = url.rstrip("/")
        options["sas_token"] = sas
    elif conn.password or field("account_key"):
        options["account_key"] = conn.password or field("account_key")
    elif field("managed_identity_client_id") or field("workload_identity_tenant_id"):
        with needs_extra("azure", "Azure connections"):
            from azure.identity import DefaultAzureCredential

        options["credential"] = DefaultAzureCredential(
            managed_identity_client_id=field("managed_identity_client_id"),
            workload_identity_tenant_id=field("workload_identity_tenant_id"),
        )
    return options


class CarbonStoreHook(BaseHook):
    """Open the carbonpipe store a URI names, with credentials from an Airflow connection.

    :param store: the store URI: a folder, ``s3://bucket/prefix``, ``gs://bucket/prefix`` or
        ``az://container/prefix``;
        ``None`` resolves it like the tracker does (``CARBONPIPE_STORE``, then carbon.yaml).
    :param aws_conn_id: Airflow connection for ``s3://`` stores (``None``: the SDK's chain).
    :param gcp_conn_id: Airflow connection for ``gs://`` stores (``None``: the SDK's chain).
    :param azure_conn_id: Airflow ``wasb`` connection for ``az://`` stores (``None``: the SDK's
        chain).
    """

    hook_name = "Carbonpipe store"

    def __init__(
        self,
        store: str | None = None,
        *,
        aws_conn_id: str | None = "aws_default",
        gcp_conn_id: str | None = "google_cloud_default",
        azure_conn_id: str | None = "wasb_default",
    ) -> None:
        super().__init__()
        self.store_uri = store
        self.aws_conn_id = aws_conn_id
        self.gcp_conn_id = gcp_conn_id
        self.azure_conn_id = azure_conn_id

    def resolved_uri(self) -> str:
        """The store URI: the argument, else carbonpipe's configuration."""
        if self.store_uri:
            return self.store_uri
        from carbonpipe.config import resolve_settings

        return resolve_settings().store

    def _conn_id_for(self, scheme: str) -> str | None:
        return {"s3": self.aws_conn_id, "gs": self.gcp_conn_id, "az": self.azure_conn_id}.get(
            scheme
        )

    def _options_from(self, scheme: str, conn: Any) -> dict[str, Any]:
        translate = {"s3": s3_options, "gs": gcs_options, "az": azure_options}[scheme]
        return translate(conn)

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
