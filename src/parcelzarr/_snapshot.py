"""Versions of a store, so that a reader sees one commit from the start of a call to its end.

Every commit (the root ``zarr.json``, see :mod:`parcelzarr._commit`) records in the root
attribute ``parcelzarr_snapshot``:

* ``version``: one more than the commit before (a store written before versions were
  recorded is at version 0);
* ``committed_at``: when, in seconds since the epoch (the writer's clock);
* ``intact_from``: the oldest version whose objects are all still stored, unchanged.

The rule writers keep: an object that a committed version reads is deleted or changed only
after a commit has raised ``intact_from`` past that version. A reader therefore pins the
version it resolved at the start of a call, reads only what that version's metadata
addresses, and at the end reads the root once more: if ``intact_from`` is still at most its
version, nothing it read was deleted or changed meanwhile and its answer is that version's,
whole (see :mod:`query._snapshot`).

Objects a commit supersedes (a growth or compaction rewrites arrays under the other chunk-key
separator, :mod:`parcelzarr._ingest._relayout`) are not deleted at once: they are *retired*
in ``parcelzarr-retired.json`` with the commit's time, and a later writer deletes them once
``PARCELZARR_SNAPSHOT_GRACE`` seconds have passed, raising ``intact_from`` first. Readers
still on the older version then retry on the newer one.

This module holds the pure parts: the record's shape and the decisions on it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "RETIRED_KEY",
    "SNAPSHOT_ATTR",
    "Retired",
    "Snapshot",
    "due",
    "next_attr",
    "retired_from_json",
    "retired_to_json",
    "snapshot_of",
]

SNAPSHOT_ATTR = "parcelzarr_snapshot"
RETIRED_KEY = "parcelzarr-retired.json"


@dataclass(frozen=True)
class Snapshot:
    """The version a root document records."""

    version: int = 0
    committed_at: float = 0.0
    intact_from: int = 0

    @property
    def readable(self) -> bool:
        """All objects this version addresses are stored as committed (no writer is
        changing them in place, none was interrupted doing so)."""
        return self.intact_from <= self.version

    def survives(self, later: Snapshot) -> bool:
        """True if this version's objects were all still intact when ``later`` (read after
        this one) was the root: what was read from this version is this version's."""
        return later.intact_from <= self.version


def snapshot_of(attributes: Mapping[str, Any]) -> Snapshot:
    """The :class:`Snapshot` of a root's attributes (version 0 if none is recorded)."""
    raw = attributes.get(SNAPSHOT_ATTR)
    if not isinstance(raw, Mapping):
        return Snapshot()
    return Snapshot(int(raw.get("version", 0)), float(raw.get("committed_at", 0.0)),
                    int(raw.get("intact_from", 0)))


def next_attr(previous: Snapshot, *, intact_from: int | None = None,
              invalidate_previous: bool = False, now: float | None = None) -> dict[str, Any]:
    """The ``parcelzarr_snapshot`` attribute of the commit after ``previous``.

    ``invalidate_previous``: older versions lose objects right after this commit.
    ``intact_from``: raise it to at least this (it never goes down).
    """
    version = previous.version + 1
    intact = max(previous.intact_from, intact_from or 0)
    if invalidate_previous:
        intact = max(intact, version)
    return {"version": version, "committed_at": time.time() if now is None else now,
            "intact_from": intact}


@dataclass(frozen=True)
class Retired:
    """Objects of array ``path`` under chunk-key separator ``sep``, superseded by commit
    ``version`` at ``retired_at``: kept for readers of older versions until the grace ends."""

    path: str
    sep: str
    version: int
    retired_at: float


def retired_from_json(record: Any) -> list[Retired]:
    """The entries of a ``parcelzarr-retired.json`` document (none if absent)."""
    if not isinstance(record, Mapping):
        return []
    return [Retired(str(e["path"]), str(e["sep"]), int(e["version"]), float(e["retired_at"]))
            for e in record.get("retired", [])]


def retired_to_json(entries: Iterable[Retired]) -> dict[str, Any]:
    """The document for ``entries``."""
    return {"format": 1, "retired": [
        {"path": e.path, "sep": e.sep, "version": e.version, "retired_at": e.retired_at}
        for e in entries]}


def due(entries: Sequence[Retired], *, now: float, grace: float,
        clobbered: Iterable[str] = ()) -> list[Retired]:
    """Entries to delete now: past the grace period, or of an array about to be rewritten
    under the same separator (``clobbered``: array paths, or group paths ending in ``/``)."""
    prefixes = tuple(clobbered)
    return [e for e in entries
            if e.retired_at + grace <= now or any(
                e.path == p or (p.endswith("/") and e.path.startswith(p)) for p in prefixes)]
