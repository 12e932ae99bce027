"""One committed version per query call: the reader's side of :mod:`parcelzarr._snapshot`.

A call (``zonal_stats``, ``read``, ``info``, ``to_xarray``) first reads the root document
once (one GET). If it is not the version the store object was built from, the catalogue is
rebuilt from exactly those bytes, so a handle opened long ago reads what is committed now.
The call then reads only the objects that version's metadata addresses. At its end the root
is read once more: if the version's objects may have been deleted or changed meanwhile
(``intact_from`` past it), the call is run again on the newer version, transparently. While a
writer rewrites committed objects in place, calls wait for its commit, at most
``PARCELZARR_SNAPSHOT_WAIT`` seconds, then fail with :class:`StoreChangedError`: a call
returns one version's values, or nothing.

Calls of several threads on one store share a version: a thread that finds a newer one waits
until the calls in flight on the older one are done, then switches.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import zarr
from parcelzarr.stores import StoreHandle
from zarr.core.buffer import default_buffer_prototype
from zarr.core.group import AsyncGroup, GroupMetadata
from zarr.core.sync import sync
from zarr.storage import StorePath

from parcelzarr import _config
from parcelzarr._snapshot import Snapshot, snapshot_of
from parcelzarr.errors import StoreChangedError, StoreNotFoundError

__all__ = ["Pin", "SnapshotMoved", "pinned", "read_root", "root_group", "same_version"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SnapshotMoved(Exception):  # noqa: N818  (a signal inside a pinned call, never raised out)
    """Part of a call ran on another version (a Dask worker opened the store after a
    commit): the call is run again."""


def same_version(pinned: int, parts: list[int]) -> None:
    """Raise :class:`SnapshotMoved` unless every part of a call read version ``pinned``."""
    if any(v != pinned for v in parts):
        raise SnapshotMoved(f"parts read versions {sorted(set(parts))}, not {pinned}")


def read_root(handle: StoreHandle) -> tuple[bytes, Snapshot]:
    """The root ``zarr.json`` as stored now, and the version it records."""
    buf = sync(handle.store.get("zarr.json", default_buffer_prototype()))
    if buf is None:
        raise StoreNotFoundError(f"no parcelzarr store at {handle.url}: its zarr.json is gone")
    raw = buf.to_bytes()
    try:
        attrs = json.loads(raw).get("attributes", {})
    except ValueError as exc:
        raise StoreNotFoundError(f"{handle.url}/zarr.json is not JSON") from exc
    return raw, snapshot_of(attrs if isinstance(attrs, dict) else {})


def root_group(handle: StoreHandle, raw: bytes) -> zarr.Group:
    """The committed (consolidated) root group described by ``raw``, without further reads."""
    meta = GroupMetadata.from_dict(json.loads(raw))
    if meta.consolidated_metadata is None:
        raise ValueError("the root holds no consolidated (committed) metadata")
    return zarr.Group(AsyncGroup(metadata=meta, store_path=StorePath(handle.store, "")))


class Pin:
    """Runs calls on one committed version of a store; ``load`` rebuilds the store's
    catalogue from a root group when the version changes."""

    def __init__(self, handle: StoreHandle, raw: bytes, snapshot: Snapshot,
                 load: Callable[[zarr.Group], None]) -> None:
        self._handle = handle
        self._raw = raw
        self.snapshot = snapshot
        self._load = load
        self._cond = threading.Condition()
        self._active = 0
        self._local = threading.local()

    def run(self, call: Callable[[], T]) -> T:
        """``call()`` on one committed version, run again if that version's objects may
        have changed under it."""
        if getattr(self._local, "inside", False):  # a call made by a pinned call
            return call()
        give_up = time.monotonic() + _config.snapshot_wait()
        delay = 0.05
        while True:
            raw, snap = read_root(self._handle)
            if snap.readable:
                try:
                    result, ok = self._run_on(raw, snap, call)
                except SnapshotMoved:
                    result, ok = None, False
                if ok:
                    return result
                logger.info("the store changed during the query (version %d superseded); "
                            "reading the newer version", snap.version)
            if time.monotonic() >= give_up:
                raise StoreChangedError(
                    f"store {self._handle.url} had no version that could be read whole for "
                    f"{_config.snapshot_wait():g} s (a writer is rewriting committed dates, or "
                    "one was interrupted doing so: re-run it); nothing was returned, retry")
            time.sleep(delay)
            delay = min(2 * delay, 1.0)

    def _run_on(self, raw: bytes, snap: Snapshot, call: Callable[[], T]) -> tuple[Any, bool]:
        with self._cond:
            while raw != self._raw and self._active:
                self._cond.wait()
            if raw != self._raw:
                self._load(root_group(self._handle, raw))
                self._raw, self.snapshot = raw, snap
                logger.debug("query on version %d of %s", snap.version, self._handle.url)
            self._active += 1
        self._local.inside = True
        try:
            result = call()
        finally:
            self._local.inside = False
            with self._cond:
                self._active -= 1
                self._cond.notify_all()
        _, after = read_root(self._handle)
        return result, snap.survives(after)


def pinned(method: Callable[..., T]) -> Callable[..., T]:
    """Decorate a store method so that it runs on one committed version (``self._pin``)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> T:
        return self._pin.run(lambda: method(self, *args, **kwargs))

    return wrapper
