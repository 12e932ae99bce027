"""Order invariance of ingest (issue 8): the same tiles, layers and dates ingested in any
order, split across runs in any way, give the same committed store, pixel for pixel and layer
by layer.

Oracle: the mosaic computed here in numpy from the source arrays with the overlap rule —
where sources of one band and date overlap, the valid (non-nodata, non-NaN) pixel of the
source whose tile id (or, without one, file name) sorts first wins; a pixel no source of
that band and date covers is invalid, whatever the layer's dtype or nodata. Within one run
this is docs/ingest.md's rule (sources ordered by date, tile, URI); issue 8 asks that it hold
whatever the runs. The store is read as users read it: ``store.to_xarray()`` (validity: not
NaN after decoding), raw values through ``xr.open_zarr(..., mask_and_scale=False)``, and
``zonal_stats`` over the whole mosaic.

Layers cover nodata and no nodata, integer and float, NaN nodata and categorical codes that
include 0; Sentinel-2 named files (band and date from the name, several in one run) and named
layers (``band=``/``time=``, one layer and date per run) share the dates.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import shapely
import xarray as xr
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import parcelzarr as pz

from ._rasters import CRS, write_tif

X0, Y0, RES = 300_000.0, 4_500_000.0, 10.0
CHUNK = 16


@dataclass(frozen=True)
class LayerSpec:
    """A layer of the scenario: Sentinel-2 named (``s2``) or a named layer."""

    dtype: str
    nodata: float | None
    s2: bool = False
    classes: int = 0  # categorical codes 0..classes-1 (0 included)


LAYERS = {
    "B04": LayerSpec("uint16", 0, s2=True),
    "SCL": LayerSpec("uint8", None, s2=True, classes=12),
    "clm": LayerSpec("uint8", None, classes=3),
    "fapar": LayerSpec("float32", float("nan")),
    "dem": LayerSpec("float32", None),
    "elev": LayerSpec("int16", -32768),
}
#: Sentinel-2 acquisition stamps (after baseline 04.00: no DN shift) and the same as dates.
DATES = {"20240615T165849": "2024-06-15T16:58:49", "20240625T165851": "2024-06-25T16:58:51"}
TILE_IDS = ("T16TCK", "T16TDK", "T16TEK")


@dataclass(frozen=True)
class Tile:
    """A tile footprint in pixels from (X0, Y0); its id is its priority."""

    id: str
    row: int
    col: int
    height: int
    width: int


@dataclass(frozen=True)
class Source:
    layer: str
    stamp: str
    tile: Tile
    seed: int

    @property
    def file_name(self) -> str:
        if LAYERS[self.layer].s2:
            return f"{self.tile.id}_{self.stamp}_{self.layer}_10m.tif"
        # Named layers: the file name is the tile id, so it starts with the tile's id.
        return f"{self.tile.id}_{self.layer}_{self.stamp}.tif"

    def data(self) -> np.ndarray:
        """Values differ between sources (overlaps disagree); nodata holes where declared,
        exact zeros where a zero is a value."""
        spec = LAYERS[self.layer]
        rng = np.random.default_rng(self.seed)
        shape = (self.tile.height, self.tile.width)
        if spec.classes:
            out = rng.integers(0, spec.classes, size=shape)
        elif np.dtype(spec.dtype).kind == "f":
            out = rng.normal(0.3, 0.4, size=shape)
            out[rng.random(shape) < 0.1] = 0.0
        elif spec.dtype == "int16":
            out = rng.integers(-500, 3000, size=shape)
            out[rng.random(shape) < 0.1] = 0
        else:
            out = rng.integers(1, 10_000, size=shape)
        out = out.astype(spec.dtype)
        if spec.nodata is not None:
            holes = rng.random(shape) < 0.15
            r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
            holes[r : r + 4, c : c + 5] = True  # a block of nodata: the next tile fills it
            out[holes] = spec.nodata
        return out


@dataclass(frozen=True)
class Scenario:
    """Sources, the order they are ingested in and where a new run starts."""

    sources: tuple[Source, ...]
    order: tuple[int, ...]
    cuts: tuple[bool, ...]  # cuts[i]: a new run starts before order[i + 1]

    def runs(self) -> list[list[Source]]:
        """Ingest calls: the drawn runs, each split into one call for its Sentinel-2 files
        and one per (layer, date) of its named layers (band=/time= name one of each)."""
        segments: list[list[Source]] = [[]]
        for k, i in enumerate(self.order):
            if k and self.cuts[k - 1]:
                segments.append([])
            segments[-1].append(self.sources[i])
        calls: list[list[Source]] = []
        for seg in segments:
            groups: dict[tuple[str, str] | None, list[Source]] = {}
            for s in seg:
                key = None if LAYERS[s.layer].s2 else (s.layer, s.stamp)
                groups.setdefault(key, []).append(s)
            calls.extend(groups.values())
        return calls

    def one_run(self) -> Scenario:
        return Scenario(self.sources, tuple(range(len(self.sources))),
                        (False,) * (len(self.sources) - 1))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n_tiles = draw(st.integers(2, 3))
    tiles = [Tile(TILE_IDS[i], draw(st.integers(0, 20)), draw(st.integers(0, 20)),
                  draw(st.integers(6, 26)), draw(st.integers(6, 26))) for i in range(n_tiles)]
    layers = draw(st.lists(st.sampled_from(sorted(LAYERS)), min_size=1, max_size=3,
                           unique=True))
    stamps = draw(st.lists(st.sampled_from(sorted(DATES)), min_size=1, max_size=2,
                           unique=True))
    combos = [(la, d, t) for la in layers for d in stamps for t in tiles]
    keep = draw(st.lists(st.booleans(), min_size=len(combos), max_size=len(combos)))
    chosen = [c for c, k in zip(combos, keep, strict=True) if k] or combos[:2]
    seed = draw(st.integers(0, 2**20))
    sources = tuple(Source(la, d, t, seed + i) for i, (la, d, t) in enumerate(chosen))
    order = tuple(draw(st.permutations(range(len(sources)))))
    cuts = tuple(draw(st.lists(st.booleans(), min_size=len(sources) - 1,
                               max_size=len(sources) - 1)))
    return Scenario(sources, order, cuts)


def _write_sources(folder: Path, scenario: Scenario) -> dict[Source, Path]:
    paths = {}
    for s in scenario.sources:
        spec = LAYERS[s.layer]
        paths[s] = write_tif(folder / s.file_name, s.data(),
                             origin=(X0 + s.tile.col * RES, Y0 - s.tile.row * RES), res=RES,
                             crs=CRS, nodata=spec.nodata, block=16)
    return paths


def _ingest(url: str, scenario: Scenario, paths: dict[Source, Path]) -> pz.ParcelStore:
    for call in scenario.runs():
        files = [str(paths[s]) for s in call]
        if LAYERS[call[0].layer].s2:
            pz.ingest(files, url, chunk_size=CHUNK, quiet=True)
        else:
            pz.ingest(files, url, band=call[0].layer, time=DATES[call[0].stamp],
                      chunk_size=CHUNK, quiet=True)
    return pz.open_store(url)


def _valid(a: np.ndarray, nodata: float | None) -> np.ndarray:
    ok = ~np.isnan(a) if a.dtype.kind == "f" else np.ones(a.shape, bool)
    if nodata is not None and not np.isnan(nodata):
        ok &= a != nodata
    return ok


def _mosaic(scenario: Scenario, layer: str, stamp: str, rows: np.ndarray, cols: np.ndarray,
            ) -> tuple[np.ndarray, np.ndarray]:
    """Expected (value, valid) on grid pixels ``rows`` x ``cols`` (pixel indices from X0/Y0)."""
    value = np.zeros((rows.size, cols.size), dtype=np.float64)
    valid = np.zeros((rows.size, cols.size), dtype=bool)
    mine = sorted((s for s in scenario.sources if (s.layer, s.stamp) == (layer, stamp)),
                  key=lambda s: s.tile.id)  # the overlap rule: smallest tile id first
    for s in mine:
        data = s.data()
        ok = _valid(data, LAYERS[layer].nodata)
        r = rows[:, None] - s.tile.row
        c = cols[None, :] - s.tile.col
        inside = (r >= 0) & (r < s.tile.height) & (c >= 0) & (c < s.tile.width)
        rr, cc = np.clip(r, 0, s.tile.height - 1), np.clip(c, 0, s.tile.width - 1)
        take = inside & ok[rr, cc] & ~valid
        value[take] = data[rr, cc][take]
        valid |= take
    return value, valid


def _check_store(store: pz.ParcelStore, url: str, scenario: Scenario, label: str) -> None:
    assert len(store.grids) == 1, f"{label}: grids {list(store.grids)}"
    grid = next(iter(store.grids))
    view = store.to_xarray()
    raw = xr.open_zarr(url, group=grid, mask_and_scale=False, consolidated=True)
    layers = sorted({s.layer for s in scenario.sources})
    stamps = sorted({s.stamp for s in scenario.sources})
    assert sorted(store.bands) == layers, label
    assert sorted(np.asarray(view.time.values).astype("datetime64[s]").tolist()) == sorted(
        np.datetime64(DATES[d], "s").tolist() for d in stamps), label
    cols = np.round((view.x.values - X0) / RES - 0.5).astype(int)
    rows = np.round((Y0 - view.y.values) / RES - 0.5).astype(int)
    top, left = min(s.tile.row for s in scenario.sources), min(s.tile.col for s in
                                                               scenario.sources)
    bottom = max(s.tile.row + s.tile.height for s in scenario.sources)
    right = max(s.tile.col + s.tile.width for s in scenario.sources)
    assert rows.min() <= top and rows.max() >= bottom - 1, f"{label}: grid misses rows"
    assert cols.min() <= left and cols.max() >= right - 1, f"{label}: grid misses columns"
    problems = []
    for layer in layers:
        for stamp in stamps:
            when = np.datetime64(DATES[stamp], "ns")
            expected, ok = _mosaic(scenario, layer, stamp, rows, cols)
            seen = view[layer].sel(time=when).values
            got_ok = ~np.isnan(seen) if seen.dtype.kind == "f" else np.ones(seen.shape, bool)
            got = raw[layer].sel(time=when).values.astype(np.float64)
            wrong_valid = got_ok != ok
            wrong_value = ok & got_ok & (got != expected)
            if wrong_valid.any() or wrong_value.any():
                r, c = np.argwhere(wrong_valid | wrong_value)[0]
                problems.append(
                    f"{layer} @ {stamp}: {int(wrong_valid.sum())} px valid/invalid wrong "
                    f"({int((got_ok & ~ok).sum())} invalid read as data, "
                    f"{int((~got_ok & ok).sum())} data read as invalid), "
                    f"{int(wrong_value.sum())} px wrong value; first at grid pixel "
                    f"({rows[r]}, {cols[c]}): store {got[r, c]:g} valid={bool(got_ok[r, c])}"
                    f", expected {expected[r, c]:g} valid={bool(ok[r, c])}")
    assert not problems, f"{label}: " + "; ".join(problems)
    # The query engine reads the same store: a parcel over the whole mosaic.
    box = shapely.box(X0 + left * RES, Y0 - bottom * RES, X0 + right * RES, Y0 - top * RES)
    df = store.zonal_stats(box, crs=CRS, stats=["count", "sum", "min", "max", "nodata"])
    area_px = (bottom - top) * (right - left)
    for layer in layers:
        for stamp in stamps:
            rsel = rows[(rows >= top) & (rows < bottom)]
            csel = cols[(cols >= left) & (cols < right)]
            expected, ok = _mosaic(scenario, layer, stamp, rsel, csel)
            row = df[(df["band"] == layer) & (df["time"] == np.datetime64(DATES[stamp]))]
            if not any(s.layer == layer and s.stamp == stamp for s in scenario.sources):
                # a layer is reported on the dates it was ingested on, not on every date
                assert len(row) == 0, f"{label}: {layer} @ {stamp}: rows without a source"
                continue
            assert len(row) == 1, f"{label}: {layer} @ {stamp}: {len(row)} rows"
            got = row.iloc[0]
            v = expected[ok]
            assert (got["count"], got["nodata"]) == (ok.sum(), area_px - ok.sum()), (
                f"{label}: zonal_stats {layer} @ {stamp}: count/nodata {got['count']}/"
                f"{got['nodata']}, expected {ok.sum()}/{area_px - ok.sum()}")
            if v.size:
                assert got["sum"] == pytest.approx(v.sum(), rel=1e-9, abs=1e-6), label
                assert (got["min"], got["max"]) == (v.min(), v.max()), label


def _signature(store: pz.ParcelStore, url: str) -> dict[str, object]:
    """What must not depend on the order: grid, coordinates, per band dtype, fill value and
    attributes (by date label, not by position on the time axis)."""
    grid = next(iter(store.grids))
    raw = xr.open_zarr(url, group=grid, mask_and_scale=False, consolidated=True)
    sig: dict[str, object] = {"grid": grid, "x": raw.x.values.tolist(),
                              "y": raw.y.values.tolist(),
                              "times": sorted(raw.time.values.tolist())}
    for b in sorted(store.bands):
        sig[b] = repr((str(raw[b].dtype), sorted(raw[b].attrs.items()),
                       raw[b].encoding.get("fill_value")))  # repr: NaN fill values compare
    return sig


def _run(scenario: Scenario) -> None:
    with tempfile.TemporaryDirectory(prefix="pz-order-") as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        paths = _write_sources(root / "src", scenario)
        drawn = _ingest(str(root / "drawn.zarr"), scenario, paths)
        _check_store(drawn, str(root / "drawn.zarr"), scenario,
                     f"runs {[[s.file_name for s in c] for c in scenario.runs()]}")
        single = scenario.one_run()
        ref = _ingest(str(root / "one.zarr"), single, paths)
        _check_store(ref, str(root / "one.zarr"), single, "canonical runs")
        assert _signature(drawn, str(root / "drawn.zarr")) == _signature(
            ref, str(root / "one.zarr"))


_A = Tile("T16TCK", 0, 0, 20, 24)
_B = Tile("T16TDK", 8, 10, 22, 20)  # overlaps A; B's id sorts after A's


@settings(max_examples=20, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenario=scenarios())
# The tile that sorts last is ingested first, in a run of its own, then the other.
@example(scenario=Scenario((Source("B04", "20240615T165849", _A, 1),
                            Source("B04", "20240615T165849", _B, 2)), (1, 0), (True,)))
# A layer without nodata (codes include 0) after a layer with nodata at the same date.
@example(scenario=Scenario((Source("B04", "20240615T165849", _A, 3),
                            Source("clm", "20240615T165849", _A, 4)), (0, 1), (True,)))
# Float without nodata and NaN-nodata layers over two overlapping tiles, reversed runs.
@example(scenario=Scenario((Source("dem", "20240625T165851", _A, 5),
                            Source("dem", "20240625T165851", _B, 6),
                            Source("fapar", "20240625T165851", _A, 7),
                            Source("fapar", "20240625T165851", _B, 8)),
                           (3, 1, 2, 0), (True, True, True)))
def test_any_order_and_split_gives_the_same_store(scenario: Scenario) -> None:
    _run(scenario)


def test_time_axis_is_in_date_order_whatever_the_ingest_order(tmp_path: Path) -> None:
    """Ingesting a later date first gives the same store as the other way round: a time axis
    in date order (xarray cannot slice a non-monotonic time index by date)."""
    tile = Tile("T16TCK", 0, 0, 20, 20)
    late, early = (Source("B04", stamp, tile, k) for k, stamp in enumerate(sorted(DATES)[::-1]))
    paths = _write_sources(tmp_path, Scenario((late, early), (0, 1), (True,)))
    url = str(tmp_path / "store.zarr")
    store = _ingest(url, Scenario((late, early), (0, 1), (True,)), paths)
    times = store.to_xarray().time.values
    assert (np.diff(times.astype("int64")) > 0).all(), times
    first = np.datetime64(DATES[early.stamp], "D").astype(str)
    assert store.to_xarray().sel(time=slice(first, first)).time.size == 1
