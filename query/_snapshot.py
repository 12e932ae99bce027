"""One committed version per query call: the reader's side of :mod:`parcelzarr._snapshot`.

A call (``zonal_stats``, ``read``, ``info``, ``to_xarray``) runs on the version the store
object last saw and reads only the objects that version's metadata addresses. At its end the
root document is read (one GET): unchanged, the answer is the newest version's, whole.
Changed, the catalogue is rebuilt from exactly those bytes and the call runs again on that
version, so a handle opened long ago answers with what is committed now; a re-run is
accepted if its version's objects stayed intact (``intact_from`` not past it) during it. While a
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
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import zarr
from parcelzarr.stores import StoreHandle
from zarr.buffer import default_buffer_prototype
from zarr.storage import StorePath

from parcelzarr import _config
from parcelzarr._snapshot import Snapshot, snapshot_of
from parcelzarr._zarr_compat import AsyncGroup, GroupMetadata, sync
from parcelzarr.errors import StoreChangedError, StoreNotFoundError

__all__ = ["Pin", "SnapshotMoved", "open_pinned", "pinned", "read_root", "root_group",
           "same_version"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds an answer served wholly from a handle's chunk cache may lag the newest commit.
FRESH_S = 1.0
S = TypeVar("S")
P = ParamSpec("P")


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


def open_pinned(handle: StoreHandle) -> tuple[bytes, Snapshot, zarr.Group | None]:
    """The root document as stored now, its version, and the committed root group it
    describes (None if there is none: the catalogue then says why, in its own words)."""
    try:
        raw, snap = read_root(handle)
        return raw, snap, root_group(handle, raw)
    except (FileNotFoundError, ValueError, KeyError):
        return b"", Snapshot(), None


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
        #: Calls begun whose result is not yet confirmed by an end-of-call root check.
        self._unconfirmed = 0
        #: When an end-of-call root check last found this handle on the newest version.
        self._confirmed_at = -float("inf")
        self._local = threading.local()

    def run(self, call: Callable[[], T]) -> T:
        """``call()`` on one committed version, run again if that version's objects may
        have changed under it, or if it was not the newest one any more."""
        if getattr(self._local, "inside", False):  # a call made by a pinned call
            return call()
        with self._cond:
            self._unconfirmed += 1
            alone = self._unconfirmed == 1
        gets = self._handle.counters.snapshot().get_requests
        try:
            return self._run(call, alone=alone, gets=gets)
        finally:
            with self._cond:
                self._unconfirmed -= 1

    def _served_from_memory(self, gets: int) -> bool:
        """Whether a call that began alone read nothing from the store while it ran, no
        other call began meanwhile, and the root was found unchanged less than
        :data:`FRESH_S` ago. Its answer then comes from chunks cached on this version, each
        confirmed by the end check of the call that fetched it (a version change clears the
        cache): one committed version, at most ``FRESH_S`` behind the newest, with no root
        GET (a cached ``read()`` loop would otherwise pay a round trip per parcel)."""
        with self._cond:
            alone = self._unconfirmed == 1
            fresh = time.monotonic() - self._confirmed_at < FRESH_S
        return alone and fresh and self._handle.counters.snapshot().get_requests == gets

    def _run(self, call: Callable[[], T], *, alone: bool, gets: int) -> T:
        give_up = time.monotonic() + _config.snapshot_wait()
        delay = 0.05
        # First on the version last seen (no request): accepted if the root is unchanged at
        # the end, so the answer is the newest version's. Then on the version the end check
        # found: accepted if that version's objects stayed intact during the call.
        with self._cond:
            raw, snap = self._raw, self.snapshot
        first = True
        while True:
            if snap.readable:
                try:
                    result = self._run_on(raw, snap, call)
                    moved = False
                except SnapshotMoved:
                    result, moved = None, True
                if first and alone and not moved and self._served_from_memory(gets):
                    return result  # type: ignore[return-value]
                after_raw, after = read_root(self._handle)
                if not moved and (after_raw == raw if first else snap.survives(after)):
                    if after_raw == raw:
                        with self._cond:
                            self._confirmed_at = time.monotonic()
                    return result  # type: ignore[return-value]
                if not first:
                    logger.info("the store changed during the query (version %d "
                                "superseded); reading the newer version", snap.version)
                raw, snap, first = after_raw, after, False
                if snap.readable:
                    continue
            if time.monotonic() >= give_up:
                raise StoreChangedError(
                    f"store {self._handle.url} had no version that could be read whole for "
                    f"{_config.snapshot_wait():g} s (a writer is rewriting committed dates, or "
                    "one was interrupted doing so: re-run it); nothing was returned, retry")
            time.sleep(delay)
            delay = min(2 * delay, 1.0)
            raw, snap = read_root(self._handle)
            first = False

    def _run_on(self, raw: bytes, snap: Snapshot, call: Callable[[], T]) -> T:
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
            return call()
        finally:
            self._local.inside = False
            with self._cond:
                self._active -= 1
                self._cond.notify_all()


def pinned(method: Callable[Concatenate[S, P], T]) -> Callable[Concatenate[S, P], T]:
    """Decorate a store method so that it runs on one committed version (``self._pin``);
    the method's signature is kept for type checkers."""

    @functools.wraps(method)
    def wrapper(self: S, *args: P.args, **kwargs: P.kwargs) -> T:
        return cast(Any, self)._pin.run(lambda: method(self, *args, **kwargs))

    return wrapper
