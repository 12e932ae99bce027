"""The fault matrix: crash ingest, growth, new-grid creation and compaction at *every* write
boundary, deterministically, then re-run.

:class:`parcelzarr.testing.CrashingStore` numbers the mutating store operations of a run and
"kills" it at boundary ``n`` (the operation and everything after it never happen). A dry
run counts the boundaries of each scenario; then for every ``n``:

1. the scenario's starting store is copied and the operation crashed at ``n``;
2. a reader of the committed view at that moment (the root's consolidated metadata, and
   each grid's own copy) must see exactly the store before the operation or exactly the
   store after it, every pixel checked;
3. the same operation is re-run to completion; every stored pixel must then equal the
   sources as rasterio reads them (the independent oracle), and no object may be left that
   the committed metadata does not address (no orphaned bytes, no journal).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr

import parcelzarr as pz
from parcelzarr.testing import FaultPlan, SimulatedCrash, crashing_stores

from ._rasters import scene_data, write_tif

D1, D2, D3 = "20240601T100000", "20240611T100000", "20240621T100000"
CHUNK = 32
SIZE = 40  # 10 m pixels: 2 x 2 objects of 32 px per date


@dataclass(frozen=True)
class Src:
    tile: str
    date: str
    band: str
    res: int
    origin: tuple[float, float]
    seed: int

    @property
    def name(self) -> str:
        return f"{self.tile}_{self.date}_{self.band}_{self.res}m.tif"

    @property
    def grid(self) -> str:
        return f"utm16n/{self.res}m"


A1 = Src("T16TBK", D1, "B04", 10, (300_000.0, 4_500_000.0), 1)
A2 = Src("T16TBK", D2, "B04", 10, (300_000.0, 4_500_000.0), 2)
A3 = Src("T16TBK", D3, "B04", 10, (300_000.0, 4_500_000.0), 3)
A1_20M = Src("T16TBK", D1, "B05", 20, (300_000.0, 4_500_000.0), 4)
A1_B08 = Src("T16TBK", D1, "B08", 10, (300_000.0, 4_500_000.0), 9)  # a new band, same grid
WEST1 = Src("T16TAK", D1, "B04", 10, (299_700.0, 4_499_900.0), 5)  # overlaps A1, same date
NORTH2 = Src("T16TBL", D2, "B04", 10, (300_100.0, 4_500_300.0), 6)
EAST3 = Src("T16TCK", D3, "B04", 10, (300_250.0, 4_499_950.0), 7)
WEST3 = Src("T16TAK", D3, "B04", 10, (299_700.0, 4_499_900.0), 8)

Step = tuple[str, Sequence[Src] | int]  # ("ingest", sources) or ("compact", time_chunk)

SCENARIOS: dict[str, tuple[list[Step], Step]] = {
    "initial ingest": ([], ("ingest", [A1])),
    "new date": ([("ingest", [A1])], ("ingest", [A2])),
    "new 20 m grid": ([("ingest", [A1])], ("ingest", [A1_20M])),
    "new band in an existing grid": ([("ingest", [A1])], ("ingest", [A1_B08])),
    "westward growth into a committed date": ([("ingest", [A1])], ("ingest", [WEST1])),
    "northward growth with a new date": ([("ingest", [A1])], ("ingest", [NORTH2])),
    "compaction": ([("ingest", [A1]), ("ingest", [A2]), ("ingest", [A3])], ("compact", 2)),
    "compaction again after an append": (
        [("ingest", [A1]), ("ingest", [A2]), ("compact", 2), ("ingest", [A3])], ("compact", 4)),
    "eastward growth into a compacted time block": (
        [("ingest", [A1]), ("ingest", [A2]), ("compact", 4)], ("ingest", [EAST3])),
    # compaction left the "." key separator: the growth moves the objects back to "/"
    "westward growth of a compacted store": (
        [("ingest", [A1]), ("ingest", [A2]), ("compact", 4)], ("ingest", [WEST3])),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("faults")
    for src in (A1, A2, A3, A1_20M, A1_B08, WEST1, NORTH2, EAST3, WEST3):
        n = SIZE * 10 // src.res
        write_tif(out / src.name, scene_data((n, n), seed=src.seed), origin=src.origin,
                  res=float(src.res), block=16)
    return out


def _run(step: Step, url: str, folder: Path) -> None:
    kind, arg = step
    if kind == "compact":
        assert isinstance(arg, int)
        pz.compact(url, time_chunk=arg, quiet=True, workers=1)
    else:
        assert not isinstance(arg, int)
        pz.ingest([str(folder / s.name) for s in arg], url, quiet=True, workers=1,
                  chunk_size=CHUNK)


def _runs(steps: Sequence[Step]) -> list[list[Src]]:
    return [list(arg) for kind, arg in steps if kind == "ingest" and not isinstance(arg, int)]


# -- the oracle: rasterio reads of the sources, merged with numpy ------------------------------

def _canvas(x: np.ndarray, y: np.ndarray, paths: Sequence[Path]) -> np.ndarray:
    """The grid (pixel centres ``x``, ``y``) holding ``paths`` merged: first valid wins."""
    key = (x.tobytes(), y.tobytes(), tuple(paths))
    if key not in _CANVASES:
        _CANVASES[key] = _merge(x, y, paths)
    return _CANVASES[key]


_CANVASES: dict[tuple[bytes, bytes, tuple[Path, ...]], np.ndarray] = {}


def _merge(x: np.ndarray, y: np.ndarray, paths: Sequence[Path]) -> np.ndarray:
    res = float(x[1] - x[0])
    canvas = np.zeros((y.size, x.size), dtype="uint16")
    for path in paths:
        with rasterio.open(path) as src:
            data = src.read(1)
            c0 = round((src.bounds.left - (x[0] - res / 2)) / res)
            r0 = round(((y[0] + res / 2) - src.bounds.top) / res)
        assert c0 >= 0 and r0 >= 0, f"{path.name} sticks out of the grid"
        view = canvas[r0:r0 + data.shape[0], c0:c0 + data.shape[1]]
        assert view.shape == data.shape, f"{path.name} sticks out of the grid"
        take = (view == 0) & (data != 0)
        view[take] = data[take]
    return canvas


def _check_grid(group: zarr.Group, grid: str, runs: list[list[Src]], folder: Path) -> None:
    srcs = [s for run in runs for s in run if s.grid == grid]
    x, y = group["x"][:], group["y"][:]
    times = [str(np.datetime64(int(t), "s")) for t in group["time"][:]]
    dates = sorted({s.date for s in srcs})
    assert times == [str(np.datetime64(f"{d[:4]}-{d[4:6]}-{d[6:8]}T10:00:00")) for d in dates]
    bands = sorted(k for k, a in group.arrays() if a.ndim == 3)
    assert bands == sorted({s.band for s in srcs})
    for band in bands:
        arr = group[band]
        assert arr.shape == (len(dates), y.size, x.size)
        for t, date in enumerate(dates):
            # where tiles overlap the smallest tile id wins, whatever the runs
            order = sorted((s for run in runs for s in run
                            if s.grid == grid and s.band == band and s.date == date),
                           key=lambda s: s.tile)
            expect = _canvas(x, y, [folder / s.name for s in order])
            np.testing.assert_array_equal(arr[t], expect, err_msg=f"{grid} {band} {date}")


def check_committed(url: str, runs: list[list[Src]], folder: Path, *,
                    via: str = "root") -> None:
    """The committed view holds exactly ``runs``: read through the root's consolidated
    metadata (``via="root"``, the commit point) or each grid's own document (``"grid"``, as
    ``xr.open_zarr(url, group=grid)`` reads)."""
    grids = sorted({s.grid for run in runs for s in run})
    try:
        root = zarr.open_group(url, mode="r", use_consolidated=True)
        committed = root.metadata.consolidated_metadata is not None
    except (FileNotFoundError, ValueError):
        committed = False
    if not committed:
        assert not grids, "nothing is committed"
        return
    if via == "root":
        assert sorted(root.attrs.get("parcelzarr", {}).get("grids", [])) == grids
    for grid in grids:
        if via == "root":
            group = root[grid]
        else:
            group = zarr.open_group(url, path=grid, mode="r", use_consolidated=True)
        assert isinstance(group, zarr.Group)
        _check_grid(group, grid, runs, folder)


def _state(url: str, states: dict[str, list[list[Src]]], folder: Path, via: str) -> str:
    """Which of ``states`` the committed view (``via``) holds; fails if none."""
    for name, runs in states.items():
        try:
            check_committed(url, runs, folder, via=via)
        except AssertionError:
            continue
        return name
    check_committed(url, list(states.values())[-1], folder, via=via)  # shows the difference
    raise AssertionError("unreachable")


_CHUNK_KEY = re.compile(r"^(?P<array>.+)/c(?P<sep>[./])(?P<coords>\d+(?:[./]\d+)*)$")


def orphans(url: str) -> list[str]:
    """Objects the committed metadata does not address (and leftover journals)."""
    root = zarr.open_group(url, mode="r", use_consolidated=True)
    assert root.metadata.consolidated_metadata is not None
    flat = root.metadata.consolidated_metadata.flattened_metadata
    allowed = {"zarr.json", "parcelzarr-manifest.json", "parcelzarr-writer.lock"}
    allowed |= {f"{p}/zarr.json" for p in flat}
    out = []
    for path in sorted(Path(url).rglob("*")):
        if path.is_dir():
            continue
        key = path.relative_to(url).as_posix()
        if key in allowed:
            continue
        m = _CHUNK_KEY.match(key)
        meta = flat.get(m["array"]) if m else None
        if m is None or meta is None or not hasattr(meta, "shape"):
            out.append(key)
            continue
        doc = meta.to_dict()
        sep = doc["chunk_key_encoding"]["configuration"]["separator"]
        chunks = doc["chunk_grid"]["configuration"]["chunk_shape"]
        coords = [int(c) for c in re.split(r"[./]", m["coords"])]
        extent = [-(-s // c) for s, c in zip(meta.shape, chunks, strict=True)]
        if m["sep"] != sep or len(coords) != len(extent) or any(
                c >= n for c, n in zip(coords, extent, strict=True)):
            out.append(key)
    return out


def _check_final(url: str, runs: list[list[Src]], folder: Path) -> None:
    check_committed(url, runs, folder)
    check_committed(url, runs, folder, via="grid")
    assert orphans(url) == []
    manifest = json.loads((Path(url) / "parcelzarr-manifest.json").read_text())
    recorded = {v["uri"] for v in manifest["sources"].values()}
    assert recorded == {str(folder / s.name) for run in runs for s in run}


# -- the matrix --------------------------------------------------------------------------------

def _crash_at(n: int | None, step: Step, url: str, folder: Path) -> FaultPlan:
    plan = FaultPlan(crash_at=n)
    with crashing_stores(plan):
        if n is None:
            _run(step, url, folder)
        else:
            with pytest.raises(SimulatedCrash):
                _run(step, url, folder)
    return plan


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_crash_at_every_write_boundary(scenario: str, folder: Path, tmp_path: Path) -> None:
    setup, step = SCENARIOS[scenario]
    base = str(tmp_path / "base.zarr")
    for s in setup:
        _run(s, base, folder)
    before = _runs(setup)
    after = _runs([*setup, step])
    check_committed(base, before, folder)

    dry = str(tmp_path / "dry.zarr")
    _copy(base, dry)
    boundaries = _crash_at(None, step, dry, folder).count
    _check_final(dry, after, folder)
    assert boundaries > 3
    seen: dict[str, int] = {"before": 0, "after": 0}
    for n in range(1, boundaries + 1):
        url = str(tmp_path / f"crash{n}.zarr")
        _copy(base, url)
        plan = _crash_at(n, step, url, folder)
        assert plan.crashed and plan.count == n
        # A reader at the moment of the crash sees exactly the old store or exactly the new
        # one; a grid's own document may lag the root (it is written just after it).
        states = {"before": before, "after": after}
        at_root = _state(url, states, folder, "root")
        seen[at_root] += 1
        if at_root == "before":
            assert _state(url, states, folder, "grid") == "before"
        else:
            _state(url, states, folder, "grid")
        _run(step, url, folder)  # the same command again completes the work
        _check_final(url, after, folder)
        shutil.rmtree(url)
    # crashes land on both sides of the commit (compaction keeps the pixels: one state)
    assert seen["before"] and (seen["after"] or before == after), seen


def _copy(src: str, dst: str) -> None:
    if Path(src).exists():
        shutil.copytree(src, dst)
