"""Error types raised by parcelzarr.

Every error is a :class:`ParcelzarrError` and also inherits the builtin exception that
describes its kind, so callers may catch either. Messages name the problem and what to do.
"""

from __future__ import annotations

__all__ = [
    "BandNotFoundError",
    "CredentialsError",
    "GeometryError",
    "GridGrowthError",
    "IngestConflictError",
    "InvalidSourceError",
    "ParcelzarrError",
    "SourceNotFoundError",
    "StoreLockedError",
    "StoreNotFoundError",
    "StoreUnreachableError",
    "UnknownCRSError",
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
    """The storage service could not be reached."""


class CredentialsError(ParcelzarrError, PermissionError):
    """No usable credentials for the storage account."""


class BandNotFoundError(ParcelzarrError, KeyError):
    """A requested band, index or layer is not in the store."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class GeometryError(ParcelzarrError, ValueError):
    """Parcels cannot be used as given (no CRS, wrong geometry type, unreadable file)."""


class UnknownCRSError(ParcelzarrError, ValueError):
    """A coordinate reference system is missing or not understood."""
