"""One writer at a time: the store's writer lock, held for a whole ingest or compaction.

* local stores: an OS file lock (``filelock``) on ``parcelzarr-writer.lock`` inside the store
  directory. The operating system drops it the moment its process dies, so a killed writer
  never blocks the next one.
* ``az://`` stores: a blob lease on ``parcelzarr-writer.lock`` beside the store's objects,
  renewed every third of its duration while the writer runs. A killed writer's lease expires
  at most ``PARCELZARR_LOCK_LEASE`` (default 30) seconds later.
* ``memory://`` stores: a lock in this process.

A second writer waits up to ``wait`` seconds, then fails with :class:`StoreLockedError`.
Readers never take the lock: they read the last commit.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from parcelzarr import _config
from parcelzarr._zarr_compat import sync
from parcelzarr.errors import StoreLockedError

from ._azure import redact
from ._errors import translate
from ._open import azure_filesystem
from ._retry import RetryPolicy

__all__ = ["LOCK_NAME", "WriterLock", "writer_lock"]

logger = logging.getLogger(__name__)

#: Name of the lock object inside a store.
LOCK_NAME = "parcelzarr-writer.lock"

_MEMORY_LOCKS: dict[str, threading.Lock] = {}
_MEMORY_GUARD = threading.Lock()


def _locked_error(url: str, released: str) -> StoreLockedError:
    return StoreLockedError(
        f"store {url} is being written by another ingest or compaction (writer lock "
        f"{LOCK_NAME}); wait for it to finish, or re-run with --wait SECONDS (Python: "
        f"lock_timeout=SECONDS). A killed writer's lock is released {released}"
    )


class WriterLock:
    """The held writer lock of one store; a context manager that releases it on exit."""

    def __init__(self, url: str) -> None:
        self.url = url

    def check(self) -> None:
        """Raise :class:`StoreLockedError` if the lock was lost (a lease not renewed)."""

    @property
    def held(self) -> bool:
        """Whether the lock is still ours (not released, not lost)."""
        try:
            self.check()
        except StoreLockedError:
            return False
        return True

    def release(self) -> None:
        """Give the lock up (idempotent)."""

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class _FileLock(WriterLock):
    def __init__(self, url: str, directory: str, wait: float) -> None:
        import filelock

        super().__init__(url)
        self._lock = filelock.FileLock(os.path.join(directory, LOCK_NAME), timeout=wait)
        try:
            os.makedirs(directory, exist_ok=True)
            self._lock.acquire()
        except filelock.Timeout:
            raise _locked_error(url, "by the operating system at once") from None
        except OSError as exc:  # read-only, full or forbidden: one typed line
            err = translate(exc, store=url, what=LOCK_NAME, write=True)
            if err is None:
                raise
            raise err from exc

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()


class _MemoryLock(WriterLock):
    def __init__(self, url: str, wait: float) -> None:
        super().__init__(url)
        with _MEMORY_GUARD:
            self._lock = _MEMORY_LOCKS.setdefault(url, threading.Lock())
        acquired = (self._lock.acquire(timeout=wait) if wait > 0
                    else self._lock.acquire(blocking=False))
        if not acquired:
            raise _locked_error(url, "when its process ends")
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._lock.release()


class _LeaseLock(WriterLock):
    """An Azure blob lease, renewed by a daemon thread on zarr's event loop."""

    def __init__(self, url: str, fs: Any, container: str, blob: str, wait: float,
                 lease_seconds: int) -> None:
        super().__init__(url)
        self._policy = RetryPolicy()
        self._seconds = lease_seconds
        self._client = fs.service_client.get_blob_client(container, blob)
        self._lost: BaseException | None = None
        self._stop = threading.Event()
        self._lease = self._acquire(wait)
        self._thread = threading.Thread(target=self._renew, name="parcelzarr-lease",
                                        daemon=True)
        self._thread.start()

    def _acquire(self, wait: float) -> Any:
        from azure.core.exceptions import HttpResponseError

        async def create() -> None:
            try:
                await self._client.upload_blob(b"", overwrite=False)
            except HttpResponseError as exc:  # exists already (and may be leased): fine
                if exc.status_code not in (409, 412):
                    raise

        sync(self._policy.run(LOCK_NAME, create))
        deadline = time.monotonic() + wait
        while True:
            try:
                return sync(self._policy.run(
                    LOCK_NAME, lambda: self._client.acquire_lease(lease_duration=self._seconds)))
            except Exception as exc:  # the policy raises typed errors from the SDK's
                if _http_status(exc, HttpResponseError) != 409:  # 409: leased by another
                    raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise _locked_error(self.url, f"when its lease expires, within {self._seconds} s")
            time.sleep(min(1.0, left))

    def _renew(self) -> None:
        while not self._stop.wait(self._seconds / 3):
            try:
                sync(self._policy.run(LOCK_NAME, self._lease.renew))
            except Exception as exc:
                self._lost = exc
                logger.error("lost the writer lease of %s: %s", self.url,
                             redact(f"{type(exc).__name__}: {exc}")[:200])
                return

    def check(self) -> None:
        if self._lost is not None:
            raise StoreLockedError(
                f"lost the writer lock of {self.url} (its lease could not be renewed: "
                f"{redact(str(self._lost))[:120]}); nothing more was committed: re-run"
            )

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        try:
            sync(self._lease.release())
        except Exception as exc:  # it expires by itself; never mask the caller's error
            logger.warning("releasing the writer lease of %s: %s", self.url,
                           redact(str(exc))[:200])


def _http_status(exc: BaseException | None, kind: type[Exception]) -> int | None:
    """The HTTP status of the first ``kind`` error in ``exc``'s chain of causes."""
    while exc is not None:
        if isinstance(exc, kind):
            return getattr(exc, "status_code", None)
        exc = exc.__cause__
    return None


def writer_lock(handle: Any, storage_options: Mapping[str, Any] | None = None, *,
                wait: float | None = None) -> WriterLock:
    """Take the writer lock of the store behind ``handle`` (a :class:`StoreHandle`).

    Parameters
    ----------
    handle:
        The opened store.
    storage_options:
        The store's options (credentials), for ``az://`` stores not written through adlfs.
    wait:
        Seconds to wait for another writer (default ``PARCELZARR_LOCK_WAIT``, 0: fail at once).

    Raises
    ------
    StoreLockedError
        Another writer holds the lock for longer than ``wait``.
    """
    wait = _config.lock_wait() if wait is None else float(wait)
    if wait < 0:
        raise ValueError(f"lock wait must be at least 0 seconds, got {wait}")
    location = handle.location
    if location.protocol == "file":
        return _FileLock(handle.url, location.path, wait)
    if location.protocol == "memory":
        return _MemoryLock(handle.url, wait)

    fs = getattr(handle.store.inner, "fs", None)
    if fs is None or not hasattr(fs, "service_client"):
        fs = azure_filesystem(storage_options)
    container, _, prefix = location.path.strip("/").partition("/")
    blob = f"{prefix}/{LOCK_NAME}" if prefix else LOCK_NAME
    return _LeaseLock(handle.url, fs, container, blob, wait, _config.lock_lease_seconds())
