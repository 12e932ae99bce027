"""Storage: URLs and credentials in, zarr stores out.

Local directories are the embedded default; ``az://container/path`` reaches Azure Blob Storage
through obstore (reads, the measured-faster default) or adlfs (writes; or any store with
``storage_options={"transport": "adlfs"}`` / ``PARCELZARR_TRANSPORT``), with credentials from
storage options or the usual ``AZURE_STORAGE_*`` environment variables; ``memory://name`` is
for tests and notebooks. Every store retries transient errors and counts its I/O. Writers
(ingest, compaction) hold the store's writer lock (:func:`writer_lock`): one at a time.
"""

from ._azure import AZURITE_ACCOUNT, AZURITE_KEY, azure_options, check_option_names, redact
from ._errors import storage_error
from ._lock import LOCK_NAME, WriterLock, writer_lock
from ._open import (
    DEFAULT_READ_TRANSPORT,
    StoreHandle,
    Transport,
    choose_transport,
    filesystem_for,
    open_store_handle,
)
from ._retry import IOCounters, ResilientStore, RetryPolicy, is_transient
from ._url import Location, parse_location

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "DEFAULT_READ_TRANSPORT",
    "LOCK_NAME",
    "IOCounters",
    "Location",
    "ResilientStore",
    "RetryPolicy",
    "StoreHandle",
    "Transport",
    "WriterLock",
    "azure_options",
    "check_option_names",
    "choose_transport",
    "filesystem_for",
    "is_transient",
    "open_store_handle",
    "parse_location",
    "redact",
    "storage_error",
    "writer_lock",
]
