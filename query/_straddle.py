"""Parcels straddling Dask blocks (pure): read each chunk in one task, reduce where they meet.

A Dask task of a block (:mod:`._blocks`) reads only the chunks of its block. Parcels wholly
inside it are reduced there as in a single run. For a parcel reaching beyond the block the task
hands over, chunk by chunk, the parcel's *prepared* pixels (per layer: values, coverage
weights, nodata pixels, areas: :class:`._engine.Prepared`) instead of statistics. The driver
gathers these pieces from every block the parcel touches and folds them, in the plan's chunk
order, through the engine's own reduction (:func:`._engine.reduce_prepared`): the statistics
are those of the single-process run, bit for bit (means and std fold chunk by chunk in the
same order; medians, percentiles and modes see the same values; coverage fractions do not
depend on the chunking, :mod:`._coverage`), and no chunk is read by two tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ._engine import GridJob, Layer, LayerResult, Prepared, reduce_prepared

__all__ = ["BlockLimit", "Engine", "LayerKey", "Packed", "Pieces", "layer_key",
           "merge_pieces", "replay_engine"]

#: A layer across processes: name, time index, composite's time indices and rule.
LayerKey = tuple[str, int, tuple[int, ...], str | None]
#: What :func:`._zonal.run_zonal` runs per grid instead of reading: (grid name, job,
#: positions of the job's parcels in the query's parcel set) -> the layers' results.
Engine = Callable[[str, GridJob, np.ndarray], list[LayerResult]]


def layer_key(layer: Layer) -> LayerKey:
    """What identifies ``layer`` in another process (its formula is a closure)."""
    return (layer.name, layer.time_index, layer.times, layer.composite)


@dataclass(frozen=True)
class BlockLimit:
    """What a block's task reads: the chunks of grid ``grid`` in ``window`` (chunk rows
    ``cy0:cy1``, columns ``cx0:cx1``, half-open); ``straddle`` marks (per parcel of the task)
    the parcels reaching beyond the window, whose pixels become :class:`Pieces`."""

    grid: str
    window: tuple[int, int, int, int]
    straddle: np.ndarray


def _runs(parcels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted parcel indices as runs: (index, length) of each."""
    if parcels.size == 0:
        return parcels, np.empty(0, np.int64)
    starts = np.flatnonzero(np.r_[True, parcels[1:] != parcels[:-1]])
    return parcels[starts], np.diff(np.r_[starts, parcels.size])


@dataclass(frozen=True)
class Packed:
    """A :class:`._engine.Prepared` with its sorted parcel indices as runs (a piece travels
    between processes: a pixel's parcel index cost more than its value)."""

    ids: np.ndarray
    counts: np.ndarray
    values: np.ndarray
    weights: np.ndarray | None
    nodata_ids: np.ndarray
    nodata_counts: np.ndarray
    nodata_weights: np.ndarray | None
    area: np.ndarray | None
    cw: np.ndarray | None = None

    @classmethod
    def of(cls, p: Prepared) -> Packed:
        ids, counts = _runs(p.parcels)
        nids, ncounts = _runs(p.nodata_parcels)
        return cls(ids, counts, p.values, p.weights, nids, ncounts, p.nodata_weights, p.area,
                   p.cw)

    def unpack(self) -> Prepared:
        return Prepared(np.repeat(self.ids, self.counts), self.values, self.weights,
                        np.repeat(self.nodata_ids, self.nodata_counts), self.nodata_weights,
                        self.area, self.cw)


@dataclass
class Pieces:
    """Prepared pixels of straddling parcels, per (grid, layer): ``(chunk row, chunk col,
    piece)`` in chunk order; parcel indices are positions in the task's parcel set until
    :meth:`renumbered`."""

    by_layer: dict[tuple[str, LayerKey], list[tuple[int, int, Packed]]] = field(
        default_factory=dict)

    def add(self, grid: str, chunk: tuple[int, int], layers: Sequence[Layer],
            prepared: Sequence[Prepared], positions: np.ndarray) -> None:
        """One chunk's pieces of a job whose parcel ``i`` is ``positions[i]``."""
        for layer, p in zip(layers, prepared, strict=True):
            self.by_layer.setdefault((grid, layer_key(layer)), []).append(
                (chunk[0], chunk[1], Packed.of(p.renumber(positions))))

    def renumbered(self, positions: np.ndarray) -> Pieces:
        """The pieces with parcel ``i`` renamed ``positions[i]`` (a task's parcels to the
        query's)."""
        return Pieces({k: [(cy, cx, Packed.of(p.unpack().renumber(positions)))
                           for cy, cx, p in v] for k, v in self.by_layer.items()})

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays held."""
        return sum(a.nbytes for v in self.by_layer.values() for _, _, p in v
                   for a in (p.ids, p.counts, p.values, p.weights, p.nodata_ids,
                             p.nodata_counts, p.nodata_weights, p.area, p.cw)
                   if a is not None)


def merge_pieces(parts: Iterable[Pieces]) -> Pieces:
    """The pieces of all tasks in one; a chunk comes from one task only (blocks do not
    share chunks), so each (grid, layer, chunk) has one piece."""
    out: dict[tuple[str, LayerKey], list[tuple[int, int, Packed]]] = {}
    for part in parts:
        for k, v in part.by_layer.items():
            out.setdefault(k, []).extend(v)
    return Pieces(out)


def replay_engine(pieces: Pieces, positions: np.ndarray, n_query: int) -> Engine:
    """An :data:`Engine` reducing the straddlers from ``pieces`` instead of reading:
    ``positions[i]`` is the query position (the pieces' numbering, ``< n_query``) of
    parcel ``i`` of the set the engine runs on."""
    index: dict[tuple[str, LayerKey], Mapping[tuple[int, int], Packed]] = {
        k: {(cy, cx): p for cy, cx, p in v} for k, v in pieces.by_layer.items()}

    def run(grid: str, job: GridJob, subset: np.ndarray) -> list[LayerResult]:
        local = np.full(n_query, -1, dtype=np.int64)
        local[positions[subset]] = np.arange(subset.size)
        per_layer = [index.get((grid, layer_key(layer)), {}) for layer in job.layers]

        def chunks() -> Iterable[tuple[int, list[Prepared]]]:
            for k, (cy, cx) in enumerate(job.plan.chunks.tolist()):
                got = [found.get((cy, cx)) for found in per_layer]
                if any(p is None for p in got):
                    raise RuntimeError(f"no task returned chunk ({cy}, {cx}) of grid {grid} "
                                       "for parcels straddling its block")
                ready = [p.unpack().renumber(local) for p in got if p is not None]
                if any((p.parcels < 0).any() or (p.nodata_parcels < 0).any() for p in ready):
                    raise RuntimeError(f"chunk ({cy}, {cx}) of grid {grid}: pieces of "
                                       "parcels this grid does not read")
                yield k, ready

        return reduce_prepared(job, chunks())

    return run
