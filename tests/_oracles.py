"""Oracles for the conformance suite, on the source GeoTIFFs of ``../shared/data``.

rasterstats and exactextract as users call them; a numpy oracle (rasterstats' window and
burn, cells beyond the raster excluded: its issue #105); exact geometry (shapely areas of
cell ∩ parcel) for the parcels where GDAL's burn or exactextract's fractions are unreliable;
cell areas in m². Every function reads the source raster; none reads a parcelzarr store.
"""

from __future__ import annotations

import atexit
import math
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from affine import Affine
from exactextract import exact_extract
from parcelzarr.query._coverage import SNAP
from pyproj import CRS
from rasterio.enums import MaskFlags
from rasterio.features import rasterize
from rasterstats import zonal_stats as rs_zonal_stats
from rasterstats.io import bounds_window

from ._rasters import SHARED_DATA

RTOL = 1e-6
ATOL = 1e-6

#: Statistics compared with rasterstats (centre and all_touched rules).
RS_STATS = ("count", "sum", "mean", "min", "max", "std", "median", "percentile_10",
            "percentile_75", "range", "nodata")
#: Coverage-weighted statistics compared with exactextract: ours -> exactextract's op.
EE_STATS = {"count": "count", "sum": "sum", "mean": "mean", "std": "stdev", "min": "min",
            "max": "max", "median": "median", "percentile_25": "quantile(q=0.25)",
            "percentile_90": "quantile(q=0.9)"}
QUANTILES = ("median", "percentile_10", "percentile_25", "percentile_75", "percentile_90")
#: The quantiles of :data:`EE_STATS` as q in [0, 1].
QUANTILE_Q = {"median": 0.5, "percentile_25": 0.25, "percentile_90": 0.9}

@dataclass(frozen=True)
class RasterInfo:
    """What the oracles need to know of a raster file."""

    crs: Any
    transform: Any
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    dataset_mask: bool
    descriptions: tuple[str | None, ...]

    @property
    def bounds_box(self) -> shapely.Polygon:
        left, top = self.transform.c, self.transform.f
        right = left + self.transform.a * self.width
        bottom = top + self.transform.e * self.height
        return shapely.box(left, bottom, right, top)

    @property
    def integer(self) -> bool:
        return np.dtype(self.dtype).kind in "iu"

    @property
    def nan_nodata(self) -> bool:
        return self.nodata is not None and math.isnan(self.nodata)

    @property
    def zero_filled(self) -> bool:
        """rasterstats counts cells beyond this raster as 0 (#105): no nodata, no mask."""
        return self.nodata is None and not self.dataset_mask


@cache
def raster_info(path: str) -> RasterInfo:
    with rasterio.open(SHARED_DATA / path) as ds:
        return RasterInfo(
            ds.crs, ds.transform, ds.width, ds.height, ds.count, ds.dtypes[0], ds.nodata,
            all(MaskFlags.per_dataset in f for f in ds.mask_flag_enums),
            tuple(ds.descriptions),
        )


# -- oracles -------------------------------------------------------------------------------
def _values_stats(v: np.ndarray, nodata: int) -> dict[str, float]:
    """rasterstats' statistics (population std, numpy's linear percentiles) in float64."""
    out: dict[str, float] = {"count": float(v.size), "nodata": float(nodata)}
    if not v.size:
        return out | dict.fromkeys(RS_STATS[1:-1], np.nan)
    v = v.astype(np.float64)
    return out | {
        "sum": v.sum(), "mean": v.mean(), "min": v.min(), "max": v.max(), "std": v.std(),
        "median": float(np.median(v)), "percentile_10": float(np.percentile(v, 10)),
        "percentile_75": float(np.percentile(v, 75)), "range": v.max() - v.min(),
    }


@dataclass(frozen=True)
class Burned:
    """A parcel's cells as rasterstats picks them, read from the source with rasterio."""

    values: np.ndarray  # valid cells inside the parcel
    rows: np.ndarray  # their rows in the raster (for cell areas)
    nodata: int  # cells inside the parcel that are nodata, masked or beyond the raster


@lru_cache(maxsize=8)
def _band(raster_path: str, band: int) -> tuple[np.ndarray, np.ndarray]:
    """A whole band and where it is valid (GDAL's mask: nodata, NaN nodata, dataset mask)."""
    with rasterio.open(SHARED_DATA / raster_path) as ds:
        data = ds.read(band)
        valid = ds.read_masks(band) > 0
    if data.dtype.kind == "f":
        valid &= ~np.isnan(data)
    return data, valid


def burn(raster_path: str, band: int, geom: shapely.Geometry, *,
         all_touched: bool) -> Burned:
    """The numpy oracle: rasterstats' window (``bounds_window``) and burn
    (``features.rasterize``), but cells beyond the raster are nodata, not 0 (#105)."""
    info = raster_info(raster_path)
    empty = Burned(np.zeros(0), np.zeros(0, dtype=np.int64), 0)
    if geom is None or geom.is_empty:
        return empty
    (r0, r1), (c0, c1) = bounds_window(geom.bounds, info.transform)
    if r1 <= r0 or c1 <= c0:
        return empty
    transform = info.transform * Affine.translation(c0, r0)
    inside = rasterize([(geom, 1)], out_shape=(r1 - r0, c1 - c0), transform=transform,
                       fill=0, dtype="uint8", all_touched=all_touched).astype(bool)
    data, ok = _band(raster_path, band)
    rows = np.arange(r0, r1)[:, None] + np.zeros((1, c1 - c0), dtype=np.int64)
    cols = np.arange(c0, c1)[None, :] + np.zeros((r1 - r0, 1), dtype=np.int64)
    on_raster = (rows >= 0) & (rows < info.height) & (cols >= 0) & (cols < info.width)
    rr, cc = np.clip(rows, 0, info.height - 1), np.clip(cols, 0, info.width - 1)
    valid = on_raster & ok[rr, cc]
    take = inside & valid
    return Burned(data[rr, cc][take], rows[take], int((inside & ~valid).sum()))


def numpy_stats(raster_path: str, band: int, geoms: gpd.GeoSeries, *,
                all_touched: bool) -> pd.DataFrame:
    rows = []
    for g in geoms:
        b = burn(raster_path, band, g, all_touched=all_touched)
        rows.append(_values_stats(b.values, b.nodata))
    return pd.DataFrame(rows, columns=list(RS_STATS))


def _peer_dir() -> Path:
    global _PEER_DIR
    if _PEER_DIR is None:
        _PEER_DIR = Path(tempfile.mkdtemp(prefix="pz-conformance-"))
        atexit.register(shutil.rmtree, _PEER_DIR, ignore_errors=True)
    return _PEER_DIR


_PEER_DIR: Path | None = None


@cache
def peer_file(raster_path: str, band: int) -> tuple[str, int]:
    """(file, band) the peers read: the source itself, or for a multi-band source its band
    written alone (same pixels, georeferencing and nodata) into a temporary GeoTIFF, because
    rasterstats' boundless window reads decode every band of a pixel-interleaved file."""
    src = SHARED_DATA / raster_path
    info = raster_info(raster_path)
    if info.count == 1:
        return str(src), band
    assert not info.dataset_mask, f"{raster_path}: a dataset mask would be lost"
    out = _peer_dir() / f"{src.stem}_band{band}.tif"
    if not out.exists():
        with rasterio.open(src) as ds:
            data = ds.read(band)
            with rasterio.open(out, "w", driver="GTiff", width=ds.width, height=ds.height,
                               count=1, dtype=data.dtype, crs=ds.crs, transform=ds.transform,
                               nodata=ds.nodata) as dst:
                dst.write(data, 1)
    return str(out), 1


def _window_cells(raster_path: str, geom: shapely.Geometry, pad: int = 0,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and cell boxes of rasterstats' window around ``geom`` (+ ``pad``)."""
    info = raster_info(raster_path)
    (r0, r1), (c0, c1) = bounds_window(geom.bounds, info.transform)
    rows, cols = np.mgrid[r0 - pad:r1 + pad, c0 - pad:c1 + pad]
    t = info.transform
    x, y = t.c + cols * t.a, t.f + rows * t.e
    return rows, cols, shapely.box(x, y + t.e, x + t.a, y)


@dataclass(frozen=True)
class ExactCells:
    """The cells a parcel overlaps with positive area, in exact geometry (shapely: area of
    cell ∩ parcel / cell area): valid ones with their values, fractions and rows; the number
    of overlapped cells that are nodata or beyond the raster."""

    values: np.ndarray
    fractions: np.ndarray
    rows: np.ndarray
    invalid: int


def exact_cells(raster_path: str, band: int, geom: shapely.Geometry) -> ExactCells:
    """For parcels where GDAL's burn or exactextract's fractions are unreliable (below)."""
    info = raster_info(raster_path)
    if geom is None or geom.is_empty:
        return ExactCells(np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64), 0)
    rows, cols, boxes = _window_cells(raster_path, geom, pad=1)
    frac = shapely.area(shapely.intersection(boxes, geom)) / shapely.area(boxes)
    data, ok = _band(raster_path, band)
    on = (rows >= 0) & (rows < info.height) & (cols >= 0) & (cols < info.width)
    rr, cc = np.clip(rows, 0, info.height - 1), np.clip(cols, 0, info.width - 1)
    valid = on & ok[rr, cc]
    take = (frac > 0) & valid
    return ExactCells(data[rr, cc][take], frac[take], rows[take],
                      int(((frac > 0) & ~valid).sum()))


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """exactextract's coverage-weighted quantile: equal values merged, then the weighted
    percentile of its weighted_quantiles.cpp (positions s_i = i w_i + (n-1) C_{i-1})."""
    if values.size == 0:
        return np.nan
    x, inverse = np.unique(values.astype(np.float64), return_inverse=True)
    w = np.bincount(inverse, weights=weights)
    n = x.size
    cum = np.cumsum(w)
    s = np.arange(n) * w + (n - 1) * np.r_[0.0, cum[:-1]]
    desired = q * s[-1]
    k = int(np.searchsorted(s, desired, side="right"))
    if k >= n:
        return float(x[-1])
    if k == 0:
        return float(x[0])
    return float(x[k - 1] + (desired - s[k - 1]) * (x[k] - x[k - 1]) / (s[k] - s[k - 1]))


def weighted_stats(values: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """exactextract's coverage-weighted count, sum, mean, stdev, min, max and quantiles."""
    keep = weights > 0
    v, w = values[keep].astype(np.float64), weights[keep]
    count = float(w.sum())
    if not v.size:
        return {"count": count, **dict.fromkeys(list(EE_STATS)[1:], np.nan)}
    mean = float((w * v).sum() / count)
    return {
        "count": count, "sum": float((w * v).sum()), "mean": mean,
        "std": float(np.sqrt((w * (v - mean) ** 2).sum() / count)),
        "min": float(v.min()), "max": float(v.max()),
        "median": weighted_quantile(v, w, 0.5),
        "percentile_25": weighted_quantile(v, w, 0.25),
        "percentile_90": weighted_quantile(v, w, 0.9),
    }


def snapped(fractions: np.ndarray) -> np.ndarray:
    """Coverage fractions under parcelzarr's documented snap (docs/query.md): within
    :data:`SNAP` of 0 or 1 they are 0 or 1. World coordinates carry ~1 ulp of rounding
    (9.3e-10 m at 5e6 m: 9.3e-11 of a 10 m cell), and each tool computes grid lines in its
    own arithmetic, so a parcel drawn on pixel edges gets 1-ulp slivers in one tool and not
    in another; the snap makes them what the geometry says up to that precision."""
    f = np.asarray(fractions, dtype=np.float64)
    return np.where(f <= SNAP, 0.0, np.where(f >= 1 - SNAP, 1.0, f))


def has_slivers(fractions: np.ndarray) -> bool:
    """Whether any fraction lies within :data:`SNAP` of 0 or 1 without being 0 or 1."""
    f = np.asarray(fractions, dtype=np.float64)
    return bool((((f > 0) & (f <= SNAP)) | ((f < 1) & (f >= 1 - SNAP))).any())


def exact_coverage_stats(raster_path: str, band: int, geoms: Sequence[shapely.Geometry],
                         ) -> pd.DataFrame:
    """exactextract's statistics on exact fractions (shapely), snapped as documented."""
    rows = []
    for g in geoms:
        cells = exact_cells(raster_path, band, g)
        rows.append(weighted_stats(cells.values, snapped(cells.fractions)))
    return pd.DataFrame(rows, columns=list(EE_STATS))


@dataclass(frozen=True)
class EECells:
    """exactextract's own cells of a parcel (``values`` and ``coverage`` ops: valid cells
    only, nodata and NaN left out by exactextract)."""

    values: np.ndarray
    coverage: np.ndarray


def exactextract_cells(raster_path: str, band: int, geoms: gpd.GeoSeries) -> list[EECells]:
    df = _exact_extract(raster_path, band, geoms, ["values", "coverage"])
    out = []
    for _, row in df.iterrows():
        v = np.atleast_1d(np.asarray(row["values"], dtype=np.float64))
        c = np.atleast_1d(np.asarray(row["coverage"], dtype=np.float64))
        keep = ~np.isnan(v)
        out.append(EECells(v[keep], c[keep]))
    return out


def exactextract_snapped_stats(cells: Sequence[EECells]) -> pd.DataFrame:
    """exactextract's statistics (its formulas, :func:`weighted_stats`) on its own per-cell
    values and coverage, the coverage snapped as documented (:func:`snapped`)."""
    return pd.DataFrame([weighted_stats(c.values, snapped(c.coverage)) for c in cells],
                        columns=list(EE_STATS))


def exact_touched_stats(raster_path: str, band: int, geoms: Sequence[shapely.Geometry],
                        ) -> pd.DataFrame:
    """all_touched in exact arithmetic: every cell the parcel overlaps with positive area."""
    rows = []
    for g in geoms:
        cells = exact_cells(raster_path, band, g)
        rows.append(_values_stats(cells.values, cells.invalid))
    return pd.DataFrame(rows, columns=list(RS_STATS))


def lattice_burn_stats(raster_path: str, band: int, geom: shapely.Geometry, *,
                       chunk: int) -> list[dict[str, float]]:
    """rasterstats' statistics of GDAL's all-touched burn of ``geom`` done chunk by chunk
    (each ``chunk`` x ``chunk`` window burnt on its own, the cells unioned), for every phase
    of such a lattice against the raster: one entry per distinct answer. For a degenerate
    parcel GDAL's burn depends on the window, so each phase may answer differently."""
    info = raster_info(raster_path)
    (r0, r1), (c0, c1) = bounds_window(geom.bounds, info.transform)
    r0, r1, c0, c1 = r0 - 1, r1 + 1, c0 - 1, c1 + 1
    data, ok = _band(raster_path, band)
    out: dict[frozenset[tuple[int, int]], dict[str, float]] = {}
    for pr in range(chunk):
        for pc in range(chunk):
            cells: set[tuple[int, int]] = set()
            for wr in range(pr + chunk * ((r0 - pr) // chunk), r1, chunk):
                for wc in range(pc + chunk * ((c0 - pc) // chunk), c1, chunk):
                    t = info.transform * Affine.translation(wc, wr)
                    m = rasterize([(geom, 1)], out_shape=(chunk, chunk), transform=t,
                                  fill=0, dtype="uint8", all_touched=True)
                    rr, cc = np.nonzero(m)
                    cells.update(zip((rr + wr).tolist(), (cc + wc).tolist(), strict=True))
            key = frozenset(cells)
            if key in out:
                continue
            rows = np.array([r for r, _ in cells], dtype=np.int64)
            cols = np.array([c for _, c in cells], dtype=np.int64)
            on = (rows >= 0) & (rows < info.height) & (cols >= 0) & (cols < info.width)
            rr, cc = rows.clip(0, info.height - 1), cols.clip(0, info.width - 1)
            valid = on & ok[rr, cc]
            out[key] = _values_stats(data[rr, cc][valid], int((~valid).sum()))
    return list(out.values())


def touched_is_degenerate(raster_path: str, geom: shapely.Geometry) -> bool:
    """Whether GDAL's all-touched burn of ``geom`` depends on the window (an edge runs through
    cell corners or along cell edges): rasterstats' window vs the same grown by one cell."""
    if geom is None or geom.is_empty:
        return False
    info = raster_info(raster_path)
    (r0, r1), (c0, c1) = bounds_window(geom.bounds, info.transform)
    burns = []
    for pad in (0, 1):
        t = info.transform * Affine.translation(c0 - pad, r0 - pad)
        m = rasterize([(geom, 1)], out_shape=(r1 - r0 + 2 * pad, c1 - c0 + 2 * pad),
                      transform=t, fill=0, dtype="uint8", all_touched=True).astype(bool)
        burns.append(m)
    grown = np.zeros_like(burns[1])
    grown[1:-1, 1:-1] = burns[0]
    return bool((grown != burns[1]).any())


def exactextract_coverage_consistent(raster_path: str, geoms: gpd.GeoSeries) -> np.ndarray:
    """Per parcel: do exactextract's coverage fractions on this raster's grid add up to the
    parcel's area on the raster (Σ fractions x cell area = area(parcel ∩ raster))?"""
    from exactextract.raster import NumPyRasterSource

    info = raster_info(raster_path)
    left, bottom, right, top = info.bounds_box.bounds
    ones = NumPyRasterSource(np.ones((info.height, info.width)), left, bottom, right, top)
    gdf = gpd.GeoDataFrame(geometry=geoms.reset_index(drop=True))
    got = exact_extract(ones, gdf, ["count"], output="pandas")["count"].to_numpy(float)
    cell = abs(info.transform.a * info.transform.e)
    want = np.array([g.intersection(info.bounds_box).area / cell if g is not None else 0.0
                     for g in geoms])
    return np.abs(got - want) <= ATOL + RTOL * want


def rasterstats_run(raster_path: str, band: int, geoms: gpd.GeoSeries, *, all_touched: bool,
                    categorical: bool = False) -> list[dict[Any, Any]]:
    """rasterstats' own answer (with ``categorical``: class counts and statistics)."""
    path, b = peer_file(raster_path, band)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(rs_zonal_stats(list(geoms), path, band=b, stats=[*RS_STATS, "nan"],
                                   all_touched=all_touched, categorical=categorical))


def rasterstats_frame(res: Sequence[dict[Any, Any]]) -> pd.DataFrame:
    stats = [*RS_STATS, "nan"]
    df = pd.DataFrame([{k: d.get(k) for k in stats} for d in res], columns=stats).astype(float)
    # rasterstats leaves nodata None for a parcel without any cell; we say 0.
    df["nodata"] = df["nodata"].fillna(0.0)
    return df


def rasterstats_stats(raster_path: str, band: int, geoms: gpd.GeoSeries, *,
                      all_touched: bool) -> pd.DataFrame:
    return rasterstats_frame(rasterstats_run(raster_path, band, geoms,
                                             all_touched=all_touched))


def exactextract_stats(raster_path: str, band: int, geoms: gpd.GeoSeries) -> pd.DataFrame:
    ops = list(dict.fromkeys(EE_STATS.values()))
    df = _exact_extract(raster_path, band, geoms, ops)
    return pd.DataFrame({ours: df[_ee_column(op)].to_numpy(float)
                         for ours, op in EE_STATS.items()})


def _exact_extract(raster_path: str, band: int, geoms: gpd.GeoSeries,
                   ops: list[str]) -> pd.DataFrame:
    from exactextract.raster import RasterioRasterSource

    gdf = gpd.GeoDataFrame(geometry=geoms.reset_index(drop=True))
    path, b = exactextract_file(raster_path, band)
    with rasterio.open(path) as ds:
        return exact_extract(RasterioRasterSource(ds, band_idx=b), gdf, ops, output="pandas")


@cache
def exactextract_file(raster_path: str, band: int) -> tuple[str, int]:
    """(file, band) exactextract reads: :func:`peer_file`, except for a raster with a GDAL
    dataset mask, which exactextract does not read (it takes masked cells for data): then a
    temporary copy of the band whose masked cells (rasterio's ``read_masks``) are NaN, the
    copy's nodata."""
    info = raster_info(raster_path)
    if not info.dataset_mask:
        return peer_file(raster_path, band)
    assert np.dtype(info.dtype).kind == "f", f"{raster_path}: NaN cannot mark masked cells"
    src = SHARED_DATA / raster_path
    out = _peer_dir() / f"{src.stem}_band{band}_masked.tif"
    if not out.exists():
        with rasterio.open(src) as ds:
            data = ds.read(band).astype(np.float64)
            data[ds.read_masks(band) == 0] = np.nan
            with rasterio.open(out, "w", driver="GTiff", width=ds.width, height=ds.height,
                               count=1, dtype="float64", crs=ds.crs, transform=ds.transform,
                               nodata=np.nan) as dst:
                dst.write(data, 1)
    return str(out), 1


def _ee_column(op: str) -> str:
    """exactextract's column name of an op: ``quantile(q=0.25)`` -> ``quantile_25``."""
    m = re.fullmatch(r"quantile\(q=0\.(\d+)\)", op)
    return f"quantile_{m.group(1).ljust(2, '0')}" if m else op


def cell_area_m2(info: RasterInfo, rows: np.ndarray) -> np.ndarray:
    """Area of cells in square metres: the projected cell for projected CRSs; for
    geographic ones the exact ellipsoidal area between the cell's parallels and meridians
    (authalic-latitude formula), so cells shrink towards the poles."""
    crs = CRS.from_user_input(info.crs)
    a, e_ = info.transform.a, info.transform.e
    if crs.is_projected:
        unit = crs.axis_info[0].unit_conversion_factor
        return np.full(rows.shape, abs(a * e_) * unit * unit)
    ell = crs.ellipsoid
    major, minor = ell.semi_major_metre, ell.semi_minor_metre
    ecc = math.sqrt(1 - (minor / major) ** 2)

    def zone(lat_deg: np.ndarray) -> np.ndarray:
        s = np.sin(np.radians(lat_deg))
        return minor**2 * (s / (2 * (1 - ecc**2 * s**2))
                           + np.log((1 + ecc * s) / (1 - ecc * s)) / (4 * ecc))

    top = info.transform.f + rows * e_
    bottom = top + e_
    return np.abs(zone(top) - zone(bottom)) * math.radians(abs(a))


def classes_burned(raster_path: str, band: int, geoms: gpd.GeoSeries, *,
                   all_touched: bool) -> dict[tuple[int, float], tuple[float, float]]:
    """(parcel, class) -> (cells, m²) with the numpy oracle."""
    info = raster_info(raster_path)
    out: dict[tuple[int, float], tuple[float, float]] = {}
    for i, g in enumerate(geoms):
        b = burn(raster_path, band, g, all_touched=all_touched)
        areas = cell_area_m2(info, b.rows)
        for cls in np.unique(b.values):
            sel = b.values == cls
            out[(i, float(cls))] = (float(sel.sum()), float(areas[sel].sum()))
    return out


def rasterstats_classes(res: Sequence[dict[Any, Any]]) -> dict[tuple[int, float], float]:
    """(parcel, class) -> cells, from a ``categorical=True`` run (class keys are numbers)."""
    return {(i, float(k)): float(v) for i, d in enumerate(res) for k, v in d.items()
            if not isinstance(k, str)}


def classes_exactextract(raster_path: str, band: int, geoms: gpd.GeoSeries,
                         ) -> tuple[dict[tuple[int, float], tuple[float, float]],
                                    dict[tuple[int, float], float]]:
    """(parcel, class) -> (Σ coverage, Σ coverage x cell m²) from exactextract's per-cell
    coverage, values and cell centres; and (parcel, class) -> exactextract's ``frac``."""
    info = raster_info(raster_path)
    df = _exact_extract(raster_path, band, geoms,
                        ["coverage", "values", "center_y", "unique", "frac"])
    sums: dict[tuple[int, float], tuple[float, float]] = {}
    fracs: dict[tuple[int, float], float] = {}
    for i, row in df.iterrows():
        cov = np.asarray(row["coverage"], dtype=np.float64)
        val = np.asarray(row["values"], dtype=np.float64)
        cy = np.asarray(row["center_y"], dtype=np.float64)
        rows = np.floor((cy - info.transform.f) / info.transform.e).astype(np.int64)
        area = cov * cell_area_m2(info, rows)
        keep = ~np.isnan(val)
        if info.nodata is not None and not info.nan_nodata:
            keep &= val != info.nodata
        for cls in np.unique(val[keep]):
            sel = keep & (val == cls)
            sums[(int(i), float(cls))] = (float(cov[sel].sum()), float(area[sel].sum()))
        for cls, fr in zip(np.atleast_1d(row["unique"]), np.atleast_1d(row["frac"]),
                           strict=True):
            fracs[(int(i), float(cls))] = float(fr)
    return sums, fracs
