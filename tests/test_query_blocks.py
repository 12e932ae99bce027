"""Dask partitions: lattice-aligned blocks, sized by work, and the chunks read twice."""

from __future__ import annotations

import numpy as np
import shapely
from parcelzarr.query._blocks import (
    block_edge,
    block_parts,
    block_tasks,
    chunk_ranges,
    chunk_reads,
    partition_parcels,
)
from pyproj import CRS

from parcelzarr._grid import GridSpec

# a 100 x 100 chunk lattice of 256 px at 10 m (256 x 256 km: a state-sized grid)
SPEC = GridSpec(crs_wkt=CRS.from_epsg(32616).to_wkt(), x0=300_000.0, y0=4_700_000.0, res_x=10.0,
                res_y=10.0, width=25_600, height=25_600, chunk_x=256, chunk_y=256)
N_COLS = 100


def _lattice(n_side: int, cell: float, x0: float = 300_005.0, y0: float = 4_699_995.0
             ) -> np.ndarray:
    k = np.arange(n_side * n_side)
    x = x0 + (k % n_side) * cell
    y = y0 - (k // n_side) * cell
    return shapely.box(x, y - cell + 10, x + cell - 10, y)


def test_chunk_ranges_by_hand() -> None:
    geoms = np.array([shapely.box(300_010, 4_699_000, 300_020, 4_699_990),  # chunk (0, 0)
                      shapely.box(302_500, 4_697_400, 302_700, 4_697_500),  # crosses x 2560 m
                      shapely.box(0, 0, 1, 1),  # far outside
                      shapely.Polygon()])
    r = chunk_ranges(shapely.bounds(geoms), SPEC)
    assert r[0].tolist() == [0, 0, 0, 0]
    # rows: 4,697,400-4,697,500 is 250-260 px below the top: chunks 0 and 1; cols 250-270 px
    assert r[1].tolist() == [0, 1, 0, 1]
    assert r[2].tolist() == [-1, -1, -1, -1] and r[3].tolist() == [-1, -1, -1, -1]


def test_blocks_are_lattice_aligned_and_cover_every_parcel_once() -> None:
    geoms = _lattice(120, 316.0)  # 14,400 parcels of 10 ha over ~38 km
    r = chunk_ranges(shapely.bounds(geoms), SPEC)
    parts = block_parts(r, N_COLS, edge=4)
    allp = np.sort(np.concatenate(parts))
    assert (allp == np.arange(len(geoms))).all()
    for p in parts:  # every parcel of a task starts in the same 4 x 4 block of chunks
        assert np.unique(r[p, 0] // 4).size == 1 and np.unique(r[p, 2] // 4).size == 1
    total, distinct = chunk_reads(parts, r, N_COLS)
    # whole parcels per block: only parcels straddling a block edge make a second read, at
    # most one row and one column of chunks beyond each 4 x 4 block, (2 * 4 + 1) / 16
    assert distinct < total <= (1 + 9 / 16) * distinct
    # the tasks the Dask path runs read only their own block: never a chunk twice
    assert chunk_reads(block_tasks(r, N_COLS, 4), r, N_COLS) == (distinct, distinct)
    # today's partitioning (contiguous runs of the row-major order) reads far more twice
    runs = np.array_split(np.arange(len(geoms)), len(parts))
    t_runs, d_runs = chunk_reads(runs, r, N_COLS)
    assert d_runs == distinct and t_runs - d_runs > 2 * (total - distinct)


def test_block_edge_follows_the_work_not_the_parcel_count() -> None:
    geoms = _lattice(200, 316.0)
    r = chunk_ranges(shapely.bounds(geoms), SPEC)
    needed = np.unique(np.concatenate(
        [np.arange(a, b + 1) * N_COLS for a, b in r[:, :2]])).size  # rows touched
    assert needed > 0
    # 0.1 s per spatial chunk, 1.6 s per task: 16 chunks per block, edge 4
    assert block_edge(r, N_COLS, seconds_per_chunk=0.1, target_s=1.6) == 4
    # ten times the work per chunk: blocks of one chunk
    assert block_edge(r, N_COLS, seconds_per_chunk=1.0, target_s=1.6) == 1
    # a large target: one block, unless at least 4 tasks are asked for
    assert len(block_parts(r, N_COLS, block_edge(r, N_COLS, seconds_per_chunk=0.01,
                                                  target_s=1e6))) == 1
    e = block_edge(r, N_COLS, seconds_per_chunk=0.01, target_s=1e6, min_tasks=4)
    assert len(block_parts(r, N_COLS, e)) >= 4


def test_a_state_is_thousands_of_tasks_not_millions() -> None:
    # 1 M parcels of 10 ha (316 km square): with 30 s per task and the default 2.4 ms per
    # band chunk x 4 bands x 20 dates per spatial chunk, a few thousand tasks
    spec = GridSpec(crs_wkt=CRS.from_epsg(32616).to_wkt(), x0=200_000.0, y0=4_700_000.0, res_x=10.0,
                    res_y=10.0, width=40_960, height=40_960, chunk_x=256, chunk_y=256)
    geoms = _lattice(1000, 316.0, x0=200_005.0, y0=4_699_995.0)
    grid_of = np.zeros(len(geoms), dtype=np.int64)
    parts, edges = partition_parcels({"g": spec}, {"g": geoms}, grid_of,
                                     seconds_per_chunk={"g": 0.0024 * 4 * 20}, target_s=30.0,
                                     min_tasks=4)
    assert 100 <= len(parts) <= 5_000, len(parts)
    assert np.unique(np.concatenate([t.parcels for t in parts])).size == len(geoms)
    # a parcel is whole in exactly one task, or a straddler in every block it touches
    whole = np.concatenate([t.parcels[~t.straddle] for t in parts if t.straddle is not None])
    assert whole.size == np.unique(whole).size
    assert edges["g"] >= 2
