"""Change an array's layout without a reader ever seeing a half-changed array.

Growing a grid to the west or north moves every chunk key (chunk boundaries sit on a fixed
lattice), and compaction changes the chunk shape. Both are done the same way:

1. **journal**: record the arrays about to change in ``parcelzarr-relayout.json``.
2. **fill**: write the new chunk objects under the *other* chunk-key separator (``c/0/1/2``
   vs ``c.0.1.2``), next to the committed ones, and point the arrays' *live* documents at
   them. Nothing readers see is touched.
3. **commit** (:func:`parcelzarr._layout.commit`): readers switch in one step, together with
   whatever else the write did (an ingest's new data).
4. **clean**: delete the old separator's objects (grace period 0), or retire them for readers
   of older versions (:mod:`._retire`), then delete the journal.

Recovery (:mod:`._recover`) needs no more than the journal and the committed metadata: for
each journalled array, objects under the separator the *committed* document does not use are
deleted before the commit (those are the new objects: the relayout is undone, and a re-run
starts it afresh); after it (the journal's ``base_version`` is older than the committed
version) the old ones are retired, or deleted if the commit already invalidated them.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import zarr
from zarr import AsyncArray
from zarr.buffer import default_buffer_prototype
from zarr.storage import StorePath

from parcelzarr._concurrency import gather_bounded
from parcelzarr._layout import commit, other_separator
from parcelzarr._zarr_compat import sync

__all__ = [
    "RELAYOUT_KEY",
    "ArrayChange",
    "Journal",
    "chunk_keys",
    "delete_keys",
    "parse_chunk_key",
    "read_doc",
    "recover_legacy_relayout",
    "staged_array",
    "write_doc",
]

logger = logging.getLogger(__name__)

RELAYOUT_KEY = "parcelzarr-relayout.json"


@dataclass(frozen=True)
class ArrayChange:
    """One array's new ``zarr.json`` document; its chunks are under ``new_sep`` already."""

    path: str
    doc: Mapping[str, Any]

    @property
    def new_sep(self) -> str:
        return str(self.doc["chunk_key_encoding"]["configuration"]["separator"])


def read_doc(store: Any, path: str) -> dict[str, Any]:
    """The ``zarr.json`` document of the array or group at ``path``."""
    buf = sync(store.get(f"{path}/zarr.json", default_buffer_prototype()))
    if buf is None:
        raise FileNotFoundError(f"{path}/zarr.json")
    return dict(json.loads(buf.to_bytes()))


def _put(store: Any, key: str, data: bytes) -> None:
    sync(store.set(key, default_buffer_prototype().buffer.from_bytes(data)))


def write_doc(store: Any, path: str, doc: Mapping[str, Any]) -> None:
    """Replace the ``zarr.json`` document at ``path``."""
    _put(store, f"{path}/zarr.json", json.dumps(doc, indent=2).encode())


def separator_of(doc: Mapping[str, Any]) -> str:
    """Chunk key separator of an array document."""
    return str(doc.get("chunk_key_encoding", {}).get("configuration", {}).get("separator", "/"))


def with_separator(doc: Mapping[str, Any], sep: str) -> dict[str, Any]:
    """A copy of ``doc`` whose chunk keys use ``sep``."""
    out = copy.deepcopy(dict(doc))
    out["chunk_key_encoding"] = {"name": "default", "configuration": {"separator": sep}}
    return out


def chunk_keys(store: Any, path: str, sep: str) -> list[tuple[str, tuple[int, ...]]]:
    """Chunk (or shard) keys of the array at ``path`` written with separator ``sep``.

    Returns ``(key, chunk_coords)`` pairs.
    """

    async def listing() -> list[str]:
        # The array's whole folder: stores list a prefix as a folder, so ``{path}/c`` would
        # miss the ``c.0.1.2`` keys of the "." separator.
        return [k async for k in store.list_prefix(f"{path}/")]

    head = f"{path}/c{sep}"
    out = []
    for key in sync(listing()):
        if not key.startswith(head):
            continue
        parts = key[len(head):].split(sep)
        if all(p.isdigit() for p in parts):
            out.append((key, tuple(int(p) for p in parts)))
    return sorted(out)


def key_of(path: str, sep: str, coords: Iterable[int]) -> str:
    """The key of chunk ``coords`` of the array at ``path``."""
    return f"{path}/c{sep}" + sep.join(str(c) for c in coords)


async def _gather(jobs: Sequence[Callable[[], Awaitable[Any]]]) -> None:
    await gather_bounded(jobs)


def delete_keys(store: Any, keys: Sequence[str]) -> None:
    """Delete ``keys`` (missing ones are fine)."""
    if keys:
        sync(_gather([partial(store.delete, k) for k in keys]))


def copy_shifted(store: Any, path: str, old_sep: str, new_sep: str,
                 shift: tuple[int, ...]) -> int:
    """Copy every chunk object of ``path`` to its key moved by ``shift`` chunks, under
    ``new_sep``; returns the number of objects copied."""
    keys = chunk_keys(store, path, old_sep)
    proto = default_buffer_prototype()

    async def move(src: str, coords: tuple[int, ...]) -> None:
        buf = await store.get(src, proto)
        if buf is not None:
            dst = key_of(path, new_sep, (c + s for c, s in zip(coords, shift, strict=True)))
            await store.set(dst, buf)

    sync(_gather([partial(move, k, c) for k, c in keys]))
    return len(keys)


def staged_array(store: Any, path: str, doc: Mapping[str, Any]) -> zarr.Array:
    """A writable array on ``doc`` at ``path`` whose metadata is *not* written (yet)."""
    async_arr: AsyncArray[Any] = AsyncArray(
        metadata=dict(doc),  # type: ignore[call-overload]
        store_path=StorePath(store, path), config={"write_empty_chunks": False})
    return zarr.Array(async_arr)


def clear_other(store: Any, path: str, live_sep: str) -> None:
    """Delete stray chunk keys of the separator that ``path`` does not use."""
    delete_keys(store, [k for k, _ in chunk_keys(store, path, other_separator(live_sep))])


class Journal:
    """The relayout journal of one write: the arrays whose objects are being written anew.

    ``writer`` stores a record (or deletes it, given None); see
    :func:`parcelzarr._ingest._recover.journal_writer`.
    """

    def __init__(self, writer: Callable[[Mapping[str, Any] | None], None]) -> None:
        self._write = writer
        self.paths: list[str] = []

    def add(self, paths: Sequence[str]) -> None:
        """Step 1: record ``paths`` (before any of their new objects is written)."""
        self.paths += [p for p in paths if p not in self.paths]
        self._write({"format": 2, "arrays": list(self.paths)})

    def finish(self, store: Any) -> int:
        """Step 4, after the commit: delete the objects the arrays no longer use, then the
        journal; returns the objects deleted."""
        if not self.paths:
            return 0
        deleted = 0
        for path in self.paths:
            sep = other_separator(separator_of(read_doc(store, path)))
            keys = [k for k, _ in chunk_keys(store, path, sep)]
            delete_keys(store, keys)
            deleted += len(keys)
        self.forget()
        return deleted

    def forget(self) -> None:
        """Delete the journal (its arrays' old objects are deleted or retired)."""
        self._write(None)
        self.paths = []


def parse_chunk_key(path: str, key: str) -> tuple[str, tuple[int, ...]] | None:
    """``(separator, chunk coords)`` of a chunk key of the array at ``path``, else None."""
    head = f"{path}/c"
    if not key.startswith(head) or len(key) <= len(head) + 1:
        return None
    sep = key[len(head)]
    parts = key[len(head) + 1:].split(sep)
    if sep not in ("/", ".") or not all(p.isdigit() for p in parts):
        return None
    return sep, tuple(int(p) for p in parts)


def _apply_legacy_swap(store: Any, record: Mapping[str, Any]) -> None:
    for change in record["changes"]:
        write_doc(store, change["path"], change["doc"])
    for path, attrs in record["array_attrs"].items():
        doc = read_doc(store, path)
        doc["attributes"] = {**doc.get("attributes", {}), **attrs}
        write_doc(store, path, doc)
    commit(store, record["grids"], attrs=record["group_attrs"])
    for change in record["changes"]:
        new_sep = separator_of(change["doc"])
        clear_other(store, change["path"], new_sep)


def recover_legacy_relayout(
    store: Any,
    record: Mapping[str, Any],
    journal: Callable[[Mapping[str, Any] | None], None],
) -> None:
    """Finish (or forget) a relayout journalled by parcelzarr <= 0.1 (``"phase"`` records:
    the new documents were recorded just before the swap, whose commit is then finished)."""
    if record.get("phase") == "swap":
        logger.warning("finishing an interrupted relayout of %s",
                       [c["path"] for c in record["changes"]])
        _apply_legacy_swap(store, record)
    journal(None)
