"""Project settings, read in one place from ``PARCELZARR_*`` environment variables.

================================  ======================================================  =========
variable                          meaning                                                 default
================================  ======================================================  =========
``PARCELZARR_WORKERS``            threads for ingest and query CPU work                   cores
``PARCELZARR_CONCURRENCY``        storage requests in flight (query chunks, relayouts)    64
``PARCELZARR_CACHE_DIR``          where downloaded sources and demo data are cached       see below
``PARCELZARR_CHUNK``              chunk edge in pixels for new grids                      256
``PARCELZARR_TRANSPORT``          az:// client: ``adlfs`` or ``obstore``                  see below
``PARCELZARR_READ_CACHE_MB``      decoded chunks kept by ``read()`` per store (0: off)    64
``PARCELZARR_CONNECT_TIMEOUT``    seconds to open a connection to blob storage            5
``PARCELZARR_READ_TIMEOUT``       seconds one read request (chunk GET, HEAD, list page)   10
                                  may take; also the longest a transfer may stall
``PARCELZARR_WRITE_TIMEOUT``      seconds one write or delete request, or a whole         60
                                  listing, may take
``PARCELZARR_RETRIES``            retries of a request after a transient error (0: none)  5
``PARCELZARR_UNREACHABLE_AFTER``  seconds one storage operation may spend over all its    60
                                  attempts before ``StoreUnreachableError``
``PARCELZARR_HEDGE_AFTER``        seconds (at least: the 95th percentile of recent reads  2
                                  if longer) before a still unanswered read gets a
                                  second, identical request (first answer wins; 0: off)
``PARCELZARR_DEADLINE``           default ``deadline`` of ``zonal_stats`` in seconds      none
                                  (``QueryDeadlineError`` past it)
``PARCELZARR_LOCK_WAIT``          seconds a writer waits for another writer's lock        0
``PARCELZARR_LOCK_LEASE``         seconds of an az:// writer lease (15-60), renewed       30
``PARCELZARR_MAX_GROWTH_PX``      pixels one source may add to a grid                     1e10
``PARCELZARR_SNAPSHOT_GRACE``     seconds objects a commit superseded are kept for        3600
                                  readers still on an older version (0: deleted at once)
``PARCELZARR_SNAPSHOT_WAIT``      seconds a query waits for a writer rewriting committed  60
                                  objects in place before ``StoreChangedError``
``PARCELZARR_CHUNK_SECONDS``      CPU seconds to decode and reduce one band chunk, for    0.0024
                                  ``plan``'s time estimate
``PARCELZARR_REQUESTS_PER_S``     GET requests one process completes per second, for      1000
                                  ``plan``'s time estimate
``PARCELZARR_GET_PRICE``          USD per 10,000 read operations, for ``plan``            0.004
``PARCELZARR_EGRESS_PRICE``       USD per GB read out of the store's region, for ``plan`` 0
``PARCELZARR_TASK_SECONDS``       work per Dask query task (sizes the spatial blocks)     30
================================  ======================================================  =========
``plan``'s defaults are measurements and a published price (docs/scale.md): 2.4 ms of CPU per
band chunk (the county's 784 band chunks in ~1.9 s of CPU, bench/RESULTS.md), 1,000 GETs/s (obstore
through a 20 ms proxy, 64 in flight: 919-1,515/s, bench/RESULTS.md), and Azure Blob Storage's
list price for read operations on the Hot tier, LRS, US East (USD 0.004 per 10,000).
Egress is free within a region; set ``PARCELZARR_EGRESS_PRICE`` when the query runs outside it.

The transport defaults to obstore for reading and adlfs for writing (bench/RESULTS.md); the
``transport`` storage option overrides it per store.
The cache defaults to ``$XDG_CACHE_HOME/parcelzarr`` (``~/.cache/parcelzarr``).
Azure credentials are not read here: adlfs reads the usual ``AZURE_STORAGE_*`` variables.

Timeouts bound what a dead or hung store can cost (docs/reliability.md): a request that gets
no answer fails after ``PARCELZARR_READ_TIMEOUT`` and is retried (transient errors back off
exponentially, up to ``PARCELZARR_RETRIES`` times); whatever happens, one storage operation
gives up with :class:`~parcelzarr.errors.StoreUnreachableError` after
``PARCELZARR_UNREACHABLE_AFTER`` seconds, so a dead store fails a command within about that
bound. Hedging re-sends a read once when it is slower than both ``PARCELZARR_HEDGE_AFTER`` and
the 95th percentile of recent reads, so a few hung requests cost seconds, not timeouts, while a
slow but healthy store gets at most ~5 % more requests.

One writer at a time: ingest and compaction hold the store's writer lock (see
:mod:`parcelzarr.stores`). A second writer waits up to ``PARCELZARR_LOCK_WAIT`` seconds, then
fails with ``StoreLockedError``. The lock of a killed writer is released by the operating
system at once (local stores) or when its Azure lease expires, at most
``PARCELZARR_LOCK_LEASE`` seconds after the kill.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "chunk_seconds", "connect_timeout", "deadline", "default_chunk",
           "default_concurrency", "default_workers", "egress_price", "get_price", "hedge_after",
           "lock_lease_seconds", "lock_wait", "max_growth_px", "read_cache_mb", "read_timeout",
           "requests_per_s", "retries", "snapshot_grace", "snapshot_wait", "task_seconds",
           "transport", "unreachable_after", "write_timeout"]


def _int(name: str, default: int, *, least: int = 1) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None
    if value < least:
        raise ValueError(f"{name} must be at least {least}, got {value}")
    return value


def default_workers() -> int:
    """Worker threads (``PARCELZARR_WORKERS``, default: the number of cores)."""
    return _int("PARCELZARR_WORKERS", os.cpu_count() or 1)


def default_concurrency() -> int:
    """Storage requests in flight (``PARCELZARR_CONCURRENCY``, default 64): query chunk
    fetches and every other fan-out (:func:`parcelzarr._concurrency.gather_bounded`)."""
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


def _seconds(name: str, default: float | None, *, zero_ok: bool = False) -> float | None:
    """A positive number of seconds from ``name`` (``zero_ok``: 0 allowed; unset: default)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None
    if not (value >= 0 if zero_ok else value > 0) or value == float("inf"):
        least = "0 or more" if zero_ok else "more than 0"
        raise ValueError(f"{name} must be {least} seconds, got {raw!r}")
    return value


def connect_timeout() -> float:
    """Seconds to open a connection to blob storage (``PARCELZARR_CONNECT_TIMEOUT``, 5)."""
    return _seconds("PARCELZARR_CONNECT_TIMEOUT", 5.0) or 5.0


def read_timeout() -> float:
    """Seconds one read request may take (``PARCELZARR_READ_TIMEOUT``, 10).

    Chunk objects are small, so this is in effect a first-byte timeout: a GET the store does
    not answer fails after it and is retried. It is also the transports' stall timeout.
    """
    return _seconds("PARCELZARR_READ_TIMEOUT", 10.0) or 10.0


def write_timeout() -> float:
    """Seconds one write or delete request, or a whole listing, may take
    (``PARCELZARR_WRITE_TIMEOUT``, 60)."""
    return _seconds("PARCELZARR_WRITE_TIMEOUT", 60.0) or 60.0


def retries() -> int:
    """Retries after a transient storage error (``PARCELZARR_RETRIES``, 5; 0: none)."""
    return _int("PARCELZARR_RETRIES", 5, least=0)


def unreachable_after() -> float:
    """Seconds one storage operation may spend over all its attempts and waits before it
    fails with ``StoreUnreachableError`` (``PARCELZARR_UNREACHABLE_AFTER``, 60)."""
    return _seconds("PARCELZARR_UNREACHABLE_AFTER", 60.0) or 60.0


def hedge_after() -> float | None:
    """Least seconds before an unanswered read is sent a second time
    (``PARCELZARR_HEDGE_AFTER``, 2); None when set to 0 (no hedging)."""
    value = _seconds("PARCELZARR_HEDGE_AFTER", 2.0, zero_ok=True)
    return value or None


def deadline() -> float | None:
    """Default overall ``deadline`` of a query in seconds (``PARCELZARR_DEADLINE``; None)."""
    return _seconds("PARCELZARR_DEADLINE", None)


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


def snapshot_grace() -> float:
    """Seconds the objects a commit superseded are kept (``PARCELZARR_SNAPSHOT_GRACE``, 3600).

    Readers that pinned an older version (a query in flight, a handle opened before) keep
    reading them meanwhile; the next writer after the grace period deletes them. 0 deletes
    them right after the commit (readers then retry on the new version).
    """
    value = _seconds("PARCELZARR_SNAPSHOT_GRACE", 3600.0, zero_ok=True)
    return 3600.0 if value is None else value


def snapshot_wait() -> float:
    """Seconds a query waits for a writer that rewrites committed objects in place, or for
    a version it can read whole, before ``StoreChangedError`` (``PARCELZARR_SNAPSHOT_WAIT``,
    60)."""
    return _seconds("PARCELZARR_SNAPSHOT_WAIT", 60.0) or 60.0
def chunk_seconds() -> float:
    """CPU seconds to decode, label and reduce one band chunk (``PARCELZARR_CHUNK_SECONDS``,
    0.0024: the county's 784 band chunks took ~1.9 s of CPU, bench/RESULTS.md)."""
    return _float("PARCELZARR_CHUNK_SECONDS", 0.0024, low=0.0)


def requests_per_s() -> float:
    """GET requests one process completes per second (``PARCELZARR_REQUESTS_PER_S``, 1000:
    obstore through a 20 ms proxy with 64 in flight did 919-1,515/s, bench/RESULTS.md)."""
    return _float("PARCELZARR_REQUESTS_PER_S", 1000.0, low=1e-9)


def get_price() -> float:
    """USD per 10,000 read operations (``PARCELZARR_GET_PRICE``, 0.004: Azure Blob Storage,
    Hot tier, LRS, US East list price; see docs/scale.md)."""
    return _float("PARCELZARR_GET_PRICE", 0.004, low=0.0)


def egress_price() -> float:
    """USD per GB read out of the store's region (``PARCELZARR_EGRESS_PRICE``, 0: a query run
    in the store's region pays no egress)."""
    return _float("PARCELZARR_EGRESS_PRICE", 0.0, low=0.0)


def task_seconds() -> float:
    """Seconds of work per Dask query task (``PARCELZARR_TASK_SECONDS``, 30): blocks of the
    chunk lattice are sized to it, so a state is thousands of tasks, not millions."""
    return _float("PARCELZARR_TASK_SECONDS", 30.0, low=1e-3)
