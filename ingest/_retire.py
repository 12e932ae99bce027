"""Keep superseded objects for readers of older versions, and delete them after the grace.

The writer's side of :mod:`parcelzarr._snapshot`. Every function here runs under the store's
writer lock; those that commit (:func:`collect`, :func:`mark_in_place`) do so when the live
store equals the committed one (at the start of a writer, after recovery), so that their
commit publishes nothing but the new ``intact_from``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from parcelzarr.stores import StoreHandle

from parcelzarr import _config
from parcelzarr._layout import commit, other_separator
from parcelzarr._snapshot import (
    RETIRED_KEY,
    Retired,
    Snapshot,
    due,
    retired_from_json,
    retired_to_json,
    snapshot_of,
)

from ._relayout import Journal, chunk_keys, delete_keys, read_doc, separator_of

__all__ = ["collect", "committed_snapshot", "finish", "load", "mark_in_place", "retire",
           "retired_keys", "unmark_in_place"]

logger = logging.getLogger(__name__)


def committed_snapshot(handle: StoreHandle) -> Snapshot:
    """The version the root records (version 0: nothing committed, or before versions)."""
    root = handle.read_json("zarr.json")
    attrs = root.get("attributes", {}) if isinstance(root, Mapping) else {}
    return snapshot_of(attrs if isinstance(attrs, Mapping) else {})


def load(handle: StoreHandle) -> list[Retired]:
    """The retired objects recorded in the store."""
    return retired_from_json(handle.read_json(RETIRED_KEY))


def _save(handle: StoreHandle, entries: list[Retired]) -> None:
    if entries:
        handle.write_json(RETIRED_KEY, retired_to_json(entries))
    elif handle.exists(RETIRED_KEY):
        delete_keys(handle.store, [RETIRED_KEY])


def retired_keys(handle: StoreHandle) -> set[tuple[str, str]]:
    """``(array path, separator)`` of every retired set: recovery leaves them alone."""
    return {(e.path, e.sep) for e in load(handle)}


def retire(handle: StoreHandle, paths: Iterable[str], snap: Snapshot) -> None:
    """Record the objects of ``paths`` under the separator their committed document no
    longer uses as superseded by ``snap`` (idempotent)."""
    entries = load(handle)
    have = {(e.path, e.sep) for e in entries}
    for path in paths:
        sep = other_separator(separator_of(read_doc(handle.store, path)))
        if (path, sep) not in have:
            entries.append(Retired(path, sep, snap.version, snap.committed_at))
            have.add((path, sep))
    _save(handle, entries)


def finish(handle: StoreHandle, journal: Journal, version: int, grace: float) -> int:
    """After a commit that swapped the layout of ``journal``'s arrays: delete the old
    objects now (``grace`` 0: the commit invalidated older versions), else retire them for
    ``grace`` seconds. Returns the objects deleted."""
    if grace <= 0 or not journal.paths:
        return journal.finish(handle.store)
    retire(handle, journal.paths, Snapshot(version, time.time(), 0))
    logger.info("kept the objects of %d relaid-out array(s) for readers of older versions "
                "(%g s grace)", len(journal.paths), grace)
    journal.forget()
    return 0


def collect(handle: StoreHandle, *, clobbered: Iterable[str] = (),
            now: float | None = None) -> int:
    """Delete retired objects past the grace period, and those of arrays about to be
    rewritten (``clobbered``: array paths, or ``"grid/"`` prefixes), after committing an
    ``intact_from`` that sends readers of the older versions to a newer one. Returns the
    objects deleted."""
    entries = load(handle)
    if not entries:
        return 0
    grace = _config.snapshot_grace()
    now = time.time() if now is None else now
    clobbered = list(clobbered)
    gone = due(entries, now=now, grace=grace, clobbered=clobbered)
    if not gone:
        return 0
    early = [e.path for e in gone if e.retired_at + grace > now]
    if early:
        logger.warning("deleting the superseded objects of %s before their grace period ends "
                       "(they are rewritten now); queries still on older versions retry",
                       sorted(set(early)))
    commit(handle.store, [], intact_from=max(e.version for e in gone))
    deleted = 0
    for e in gone:
        if separator_of(read_doc(handle.store, e.path)) == e.sep:
            continue  # in use again (never expected: a relayout collects first)
        keys = [k for k, _ in chunk_keys(handle.store, e.path, e.sep)]
        delete_keys(handle.store, keys)
        deleted += len(keys)
    _save(handle, [e for e in entries if e not in gone])
    if deleted:
        logger.info("deleted %d object(s) superseded before version %d", deleted,
                    max(e.version for e in gone))
    return deleted


def mark_in_place(handle: StoreHandle) -> None:
    """Before objects of a committed date are rewritten in place (a tile added to a date
    already stored): commit an ``intact_from`` past every version up to this one, so that
    queries wait for the writer's commit instead of reading a mix."""
    snap = committed_snapshot(handle)
    commit(handle.store, [], intact_from=snap.version + 2)  # this commit is version + 1
    logger.info("queries wait for this write: it changes objects of committed dates")


def unmark_in_place(handle: StoreHandle, lock: Any) -> None:
    """After a failed write that had :func:`mark_in_place`: once its live changes are rolled
    back, commit the store readable again (a new version; ``intact_from`` never goes down,
    so readers that read during the write still retry)."""
    if not lock.held:
        return  # the next writer's commit does it
    try:
        commit(handle.store, [], invalidate_previous=True)
    except Exception as exc:  # never mask the error that made us roll back
        logger.error("could not mark the store readable after the failed write (%s); the "
                     "next ingest or compaction will", type(exc).__name__)
