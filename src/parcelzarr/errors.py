"""Error types raised by parcelzarr.

Every error is a :class:`ParcelzarrError` and also inherits the builtin exception that
describes its kind, so callers may catch either. Messages name the problem and what to do.
"""

from __future__ import annotations

__all__ = [
    "BandNotFoundError",
    "CredentialsError",
    "DatabaseError",
    "DateNotFoundError",
    "GeometryError",
    "GridGrowthError",
    "IngestConflictError",
    "InvalidSourceError",
    "ParcelzarrError",
    "QueryDeadlineError",
    "ReflectanceWarning",
    "SourceNotFoundError",
    "StoreAccessDeniedError",
    "StoreChangedError",
    "StoreIOError",
    "StoreLockedError",
    "StoreNotFoundError",
    "StoreUnreachableError",
    "StoreWriteError",
    "UnknownCRSError",
    "plain",
]


class ParcelzarrError(Exception):
    """Base class of all parcelzarr errors."""


class SourceNotFoundError(ParcelzarrError, FileNotFoundError):
    """An ingest source (path, URL or glob) matches no file."""


class InvalidSourceError(ParcelzarrError, ValueError):
    """A source exists but cannot be ingested (not a GeoTIFF, not georeferenced, ...)."""


class GridGrowthError(InvalidSourceError):
    """A source would add more pixels to a grid than the configured limit allows."""


class IngestConflictError(ParcelzarrError, ValueError):
    """Sources disagree with each other or with the store (CRS, resolution, duplicates)."""


class StoreNotFoundError(ParcelzarrError, FileNotFoundError):
    """The store URL does not point at a parcelzarr store."""


class StoreLockedError(ParcelzarrError, TimeoutError):
    """Another writer (ingest or compaction) holds the store's writer lock."""


class StoreUnreachableError(ParcelzarrError, ConnectionError):
    """The storage service could not be reached, or did not answer in time (after retries,
    within ``PARCELZARR_UNREACHABLE_AFTER`` seconds)."""


class StoreAccessDeniedError(ParcelzarrError, PermissionError):
    """The store refused access: HTTP 401/403 (credentials, SAS permissions or expiry) or,
    for a local store, file permissions."""


class StoreIOError(ParcelzarrError, OSError):
    """A storage request failed for a reason retrying does not fix (``errno`` is the cause's,
    for local stores)."""


class StoreWriteError(StoreIOError):
    """The store cannot take writes: disk full, quota exceeded or a read-only file system."""


class QueryDeadlineError(ParcelzarrError, TimeoutError):
    """A query did not finish within its ``deadline``."""


class StoreChangedError(ParcelzarrError, RuntimeError):
    """No committed version of the store could be read whole within
    ``PARCELZARR_SNAPSHOT_WAIT`` (a writer rewrote committed objects in place, or was
    interrupted doing so): nothing was returned, so no value is wrong; retry later."""


class CredentialsError(ParcelzarrError, PermissionError):
    """No usable credentials for the storage account."""


class BandNotFoundError(ParcelzarrError, KeyError):
    """A requested band, index or layer is not in the store."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class DateNotFoundError(ParcelzarrError, LookupError):
    """A time selection matches no date stored for the bands asked for."""


class GeometryError(ParcelzarrError, ValueError):
    """Parcels cannot be used as given (no CRS, wrong geometry type, unreadable file)."""


class UnknownCRSError(ParcelzarrError, ValueError):
    """A coordinate reference system is missing or not understood."""


class ReflectanceWarning(UserWarning):
    """A spectral index was computed on a band that declares no reflectance scale."""


def plain(value: object) -> object:
    """``value`` as a plain Python object for messages (``3``, not ``np.int64(3)``)."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        return item()
    return value


class DatabaseError(ParcelzarrError, OSError):
    """A PostgreSQL/PostGIS database refused a connection or a statement (parcels read from
    or results written to a ``postgresql://`` URL)."""
