"""Pure planning properties (no storage): the chunk lattice, growth shifts, task ownership."""

from __future__ import annotations

from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from parcelzarr._ingest._grow import chunk_shift
from parcelzarr._ingest._plan import plan_ingest
from parcelzarr._ingest._sources import SourceInfo
from pyproj import CRS

from parcelzarr._grid import GridSpec

WKT = CRS.from_epsg(32616).to_wkt()
corner = st.tuples(st.integers(3_000, 12_000), st.integers(70_000, 80_000)).map(
    lambda t: (t[0] * 60.0, t[1] * 60.0))  # Sentinel-2 tile corners: multiples of 60 m
size = st.integers(50, 1200)
chunk = st.sampled_from([64, 128, 256])


def _grid(origin: tuple[float, float], n: int, ch: int) -> GridSpec:
    left, top = origin
    return GridSpec.covering(WKT, 10.0, 10.0, (left, top - 10 * n, left + 10 * n, top),
                             phase_x=left, phase_y=top, chunk_y=ch, chunk_x=ch)


@settings(max_examples=200, deadline=None)
@given(a=corner, b=corner, na=size, nb=size, ch=chunk)
def test_lattice_independent_of_first_tile_and_growth_moves_whole_chunks(
    a: tuple[float, float], b: tuple[float, float], na: int, nb: int, ch: int
) -> None:
    ga, gb = _grid(a, na, ch), _grid(b, nb, ch)
    assert ga.same_lattice(gb)
    grown = ga.union(gb)
    assert grown == gb.union(ga)
    dy, dx = chunk_shift(ga, grown)
    assert dy >= 0
    assert dx >= 0
    for g in (ga, gb):
        r, c = grown.offset_of(g)
        assert r % ch == 0
        assert c % ch == 0


def _source(tile: str, origin: tuple[float, float], n: int, day: int, band: str) -> SourceInfo:
    return SourceInfo(
        uri=f"/x/{tile}_{band}_{day}.tif", local_path="/nonexistent", band=band, tile=tile,
        time=datetime(2024, 6, day), band_index=1, crs_wkt=WKT,
        transform=(10.0, 0.0, origin[0], 0.0, -10.0, origin[1]), width=n, height=n,
        dtype="uint16", nodata=0, fingerprint="f", attrs={},
    )


@settings(max_examples=100, deadline=None)
@given(tiles=st.lists(st.tuples(corner, size), min_size=1, max_size=4),
       days=st.sets(st.integers(1, 28), min_size=1, max_size=3), ch=chunk,
       region=st.integers(1, 4))
def test_no_two_tasks_write_the_same_object(
    tiles: list[tuple[tuple[float, float], int]], days: set[int], ch: int, region: int
) -> None:
    sources = [_source(f"T16T{chr(65 + i)}K", o, n, d, b) for i, (o, n) in enumerate(tiles)
               for d in days for b in ("B04", "B08")]
    plan = plan_ingest(sources, chunk=ch, region_chunks=region)
    owned: set[tuple[str, str, datetime, int, int]] = set()
    for task in plan.tasks:
        spec = plan.grids[task.grid].spec
        assert task.row0 % spec.chunk_y == 0
        assert task.col0 % spec.chunk_x == 0
        for r in range(task.row0 // ch, -(-task.row1 // ch)):
            for c in range(task.col0 // ch, -(-task.col1 // ch)):
                key = (task.grid, task.band, task.time, r, c)
                assert key not in owned
                owned.add(key)
    # every source pixel is covered by a task of its band and date
    for i, s in enumerate(sources):
        spec = plan.grids["utm16n/10m"].spec
        r0, r1, c0, c1 = spec.pixel_window(s.bounds)
        covered = [t for t in plan.tasks if i in t.sources]
        assert sum((min(r1, t.row1) - max(r0, t.row0)) * (min(c1, t.col1) - max(c0, t.col0))
                   for t in covered) == (r1 - r0) * (c1 - c0)
