"""The obstore transport: Azure Blob Storage through obstore's Rust client (zarr ObjectStore).

Credentials are the same as for adlfs (:func:`~parcelzarr.stores._azure.azure_options`):
a connection string (option or ``AZURE_STORAGE_CONNECTION_STRING``), or an account name with
an account key or SAS token (options or ``AZURE_STORAGE_*`` variables, which obstore also
reads itself). obstore's own retries are switched off: transient errors are retried in one
place, by :class:`~parcelzarr.stores._retry.ResilientStore`, for every transport.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from zarr.abc.store import Store

from parcelzarr import _config

__all__ = ["ADLFS_OPTIONS", "OBSTORE_OPTIONS", "obstore_store"]

#: adlfs's own parameter names (safe to name in an error; any other name is not repeated).
ADLFS_OPTIONS = frozenset({
    "account_name", "account_key", "connection_string", "credential", "sas_token",
    "request_session", "socket_timeout", "blocksize", "client_id", "client_secret", "tenant_id",
    "anon", "location_mode", "default_fill_cache", "default_cache_type", "version_aware",
    "assume_container_exists", "max_concurrency", "timeout", "connection_timeout",
    "read_timeout", "account_host"})

#: adlfs storage options this transport understands; others need the adlfs transport.
OBSTORE_OPTIONS = frozenset({"connection_string", "account_name", "account_key", "sas_token",
                             "anon"})


def _parse_connection_string(text: str) -> dict[str, str]:
    parts = dict(p.split("=", 1) for p in text.split(";") if "=" in p)
    out: dict[str, str] = {}
    if "AccountName" in parts:
        out["account_name"] = parts["AccountName"]
    if "AccountKey" in parts:
        out["account_key"] = parts["AccountKey"]
    if "SharedAccessSignature" in parts:
        out["sas_key"] = parts["SharedAccessSignature"]
    if "BlobEndpoint" in parts:
        out["endpoint"] = parts["BlobEndpoint"].rstrip("/")
        if "account_name" not in out and (account := _account_of(out["endpoint"])):
            out["account_name"] = account  # a SAS connection string names only the endpoint
    elif parts.get("EndpointSuffix") and "AccountName" in parts:
        proto = parts.get("DefaultEndpointsProtocol", "https")
        out["endpoint"] = f"{proto}://{parts['AccountName']}.blob.{parts['EndpointSuffix']}"
    return out


def _account_of(endpoint: str) -> str | None:
    """The account an endpoint URL serves: ``https://ACCOUNT.blob.core.windows.net`` or,
    for emulators, ``http://host:port/ACCOUNT``."""
    parts = urlsplit(endpoint)
    path = parts.path.strip("/")
    if path:
        return path.split("/", 1)[0]
    host = parts.hostname or ""
    if ".blob." in host:
        return host.split(".", 1)[0]
    return None


def client_options(*, allow_http: bool) -> dict[str, Any]:
    """obstore client options: connection pool and the ``PARCELZARR_*`` timeouts.

    ``connect_timeout`` bounds connecting, ``read_timeout`` how long a response may leave the
    client waiting for its next byte (first byte included), and ``timeout`` a whole request
    (the write timeout, the longest any request may take).
    """
    read = _config.read_timeout()
    client: dict[str, Any] = {
        "pool_max_idle_per_host": "256",
        "connect_timeout": timedelta(seconds=_config.connect_timeout()),
        "read_timeout": timedelta(seconds=read),
        "timeout": timedelta(seconds=max(read, _config.write_timeout())),
    }
    if allow_http:
        client["allow_http"] = True
    return client


def obstore_store(path: str, options: Mapping[str, Any], *, read_only: bool) -> Store:
    """A zarr ``ObjectStore`` over obstore's ``AzureStore`` for ``container/prefix``.

    ``options`` are already checked by ``azure_options``; keys outside
    :data:`OBSTORE_OPTIONS` raise ``TypeError`` (use ``transport="adlfs"`` for them).
    """
    from obstore.store import AzureStore
    from zarr.storage import ObjectStore

    from ._quiesce import register

    register()  # its threads must leave Python before the interpreter finalizes (at exit)

    unknown = sorted(set(options) - OBSTORE_OPTIONS)
    if unknown:
        named = [k for k in unknown if k in ADLFS_OPTIONS]  # others might be secrets
        others = len(unknown) - len(named)
        raise TypeError(
            f"storage options {named}{f' and {others} other(s)' if others else ''} are not "
            "supported by the obstore transport; pass "
            "storage_options={'transport': 'adlfs', ...} (or PARCELZARR_TRANSPORT=adlfs)"
        )
    container, _, prefix = path.strip("/").partition("/")
    conn = options.get("connection_string") or (
        None if any(k in options for k in ("account_key", "sas_token", "anon"))
        else os.environ.get("AZURE_STORAGE_CONNECTION_STRING"))
    config: dict[str, Any] = _parse_connection_string(conn) if conn else {}
    if options.get("account_name"):
        config["account_name"] = options["account_name"]
    if options.get("account_key"):
        config["account_key"] = options["account_key"]
    if options.get("sas_token"):
        config["sas_key"] = str(options["sas_token"]).lstrip("?")
    if options.get("anon"):
        config["skip_signature"] = True
    client = client_options(allow_http=str(config.get("endpoint", "")).startswith("http://"))
    az = AzureStore(
        container, prefix=prefix or None, client_options=client,  # type: ignore[arg-type]
        retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=30)}, **config,
    )
    return ObjectStore(az, read_only=read_only)
