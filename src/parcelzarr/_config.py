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
=============================  ======================================================  ========

The transport defaults to obstore for reading and adlfs for writing (bench/RESULTS.md); the
``transport`` storage option overrides it per store.
The cache defaults to ``$XDG_CACHE_HOME/parcelzarr`` (``~/.cache/parcelzarr``).
Azure credentials are not read here: adlfs reads the usual ``AZURE_STORAGE_*`` variables.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "default_chunk", "default_concurrency", "default_workers",
           "read_cache_mb", "transport"]


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
