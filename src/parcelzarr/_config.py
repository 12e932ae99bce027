"""Project settings, read in one place from ``PARCELZARR_*`` environment variables.

=============================  ======================================================  ========
variable                       meaning                                                 default
=============================  ======================================================  ========
``PARCELZARR_WORKERS``         threads for ingest and query CPU work                   cores
``PARCELZARR_CONCURRENCY``     chunk requests in flight during a query                 64
``PARCELZARR_CACHE_DIR``       where downloaded sources and demo data are cached       see below
``PARCELZARR_CHUNK``           chunk edge in pixels for new grids                      256
``PARCELZARR_TRANSPORT``       az:// client: ``adlfs`` or ``obstore``                  see below
``PARCELZARR_READ_CACHE_MB``   decoded chunks kept by ``read()`` per store (0: off)     64
``PARCELZARR_LOCK_WAIT``       seconds a writer waits for another writer's lock        0
``PARCELZARR_LOCK_LEASE``      seconds of an az:// writer lease (15-60), renewed       30
``PARCELZARR_MAX_GROWTH_PX``   pixels one source may add to a grid                     1e10
=============================  ======================================================  ========

The transport defaults to obstore for reading and adlfs for writing (bench/RESULTS.md); the
``transport`` storage option overrides it per store.
The cache defaults to ``$XDG_CACHE_HOME/parcelzarr`` (``~/.cache/parcelzarr``).
Azure credentials are not read here: adlfs reads the usual ``AZURE_STORAGE_*`` variables.

One writer at a time: ingest and compaction hold the store's writer lock (see
:mod:`parcelzarr.stores`). A second writer waits up to ``PARCELZARR_LOCK_WAIT`` seconds, then
fails with ``StoreLockedError``. The lock of a killed writer is released by the operating
system at once (local stores) or when its Azure lease expires, at most
``PARCELZARR_LOCK_LEASE`` seconds after the kill.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "default_chunk", "default_concurrency", "default_workers",
           "lock_lease_seconds", "lock_wait", "max_growth_px", "read_cache_mb", "transport"]


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def default_workers() -> int:
    """Worker threads (``PARCELZARR_WORKERS``, default: the number of cores)."""
    return _int("PARCELZARR_WORKERS", os.cpu_count() or 1)


def default_concurrency() -> int:
    """Chunk requests in flight (``PARCELZARR_CONCURRENCY``, default 64)."""
    return _int("PARCELZARR_CONCURRENCY", 64)


def default_chunk() -> int:
    """Chunk edge in pixels for new grids (``PARCELZARR_CHUNK``, default 256)."""
    return _int("PARCELZARR_CHUNK", 256)


def read_cache_mb() -> float:
    """MB of decoded chunks ``ParcelStore.read`` keeps (``PARCELZARR_READ_CACHE_MB``, 64).

    0 turns the cache off.
    """
    raw = os.environ.get("PARCELZARR_READ_CACHE_MB")
    if raw is None or raw.strip() == "":
        return 64.0
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"PARCELZARR_READ_CACHE_MB={raw!r} is not a number") from None
    if not value >= 0:
        raise ValueError(f"PARCELZARR_READ_CACHE_MB must be at least 0, got {raw!r}")
    return value


def cache_dir() -> Path:
    """Cache folder (``PARCELZARR_CACHE_DIR``)."""
    raw = os.environ.get("PARCELZARR_CACHE_DIR")
    if raw:
        return Path(raw).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "parcelzarr"


def transport() -> str | None:
    """The az:// transport named by ``PARCELZARR_TRANSPORT`` (None: the default)."""
    raw = os.environ.get("PARCELZARR_TRANSPORT", "").strip().lower()
    if raw and raw not in ("adlfs", "obstore"):
        raise ValueError(f"PARCELZARR_TRANSPORT={raw!r}: use 'adlfs' or 'obstore'")
    return raw or None


def _float(name: str, default: float, *, low: float, high: float = float("inf")) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {raw!r}")
    return value


def lock_wait() -> float:
    """Seconds a writer waits for another writer's lock (``PARCELZARR_LOCK_WAIT``, 0)."""
    return _float("PARCELZARR_LOCK_WAIT", 0.0, low=0.0)


def lock_lease_seconds() -> int:
    """Duration of an az:// writer lease (``PARCELZARR_LOCK_LEASE``, 30; Azure allows 15-60).

    The holder renews it every third of it; a killed writer's lease expires after it.
    """
    return int(_float("PARCELZARR_LOCK_LEASE", 30, low=15, high=60))


def max_growth_px() -> int:
    """Pixels one source may add to a grid (``PARCELZARR_MAX_GROWTH_PX``, 1e10).

    Ten billion pixels is a 1,000 km square at 10 m; a source beyond it is more likely
    mis-georeferenced than meant.
    """
    return int(_float("PARCELZARR_MAX_GROWTH_PX", 1e10, low=1))
