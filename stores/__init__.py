"""Storage: URLs and credentials in, zarr stores out.

Local directories are the embedded default; ``az://container/path`` reaches Azure Blob Storage
through obstore (reads, the measured-faster default) or adlfs (writes; or any store with
``storage_options={"transport": "adlfs"}`` / ``PARCELZARR_TRANSPORT``), with credentials from
storage options or the usual ``AZURE_STORAGE_*`` environment variables; ``memory://name`` is
for tests and notebooks. Every store retries transient errors and counts its I/O. Writers
(ingest, compaction) hold the store's writer lock (:func:`writer_lock`): one at a time.
"""

from ._lock import WriterLock, writer_lock
from ._open import StoreHandle, Transport, open_store_handle
from ._retry import IOCounters, IOSnapshot, ResilientStore, RetryPolicy
from ._url import Location, parse_location

__all__ = [
    "IOCounters",
    "IOSnapshot",
    "Location",
    "ResilientStore",
    "RetryPolicy",
    "StoreHandle",
    "Transport",
    "WriterLock",
    "open_store_handle",
    "parse_location",
    "writer_lock",
]
