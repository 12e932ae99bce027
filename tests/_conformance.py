"""Conformance of ``zonal_stats`` with rasterstats and exactextract on every real raster.

The registry below lists every raster of ``../shared/data`` (every band; the 68-date stacks
sampled) and every parcel set that overlaps it; :func:`cases` crosses them with the pixel
rules. :func:`evaluate` compares parcelzarr's answer with the peers' (or with an independent
numpy oracle where a peer is known to be wrong) and returns one :class:`Row` per statistic,
holding the largest difference. ``tests/_conformance_report.py`` turns the rows into
``docs/conformance.md``.

The rasters of one dataset go into **one store**, one ingest run per file, all at one date
(the 68-date stacks at their own dates, the first of which is that date): each layer after
the first lands in a grid that already holds other layers of its date, as a user's store
does. Oracles read the source GeoTIFFs; parcelzarr reads only its store.

Known conventions and peer defects are compared in rows of their own, each with a note
saying why (never with a looser tolerance):

* rasterstats on a raster without nodata fills cells beyond the raster with 0 and counts
  them (its issue #105): parcels crossing such a raster's edge are compared with a numpy
  oracle on the source instead (rasterstats' window and burn, cells beyond the raster
  excluded).
* rasterstats' ``nodata`` compares with ``==``: on NaN-nodata rasters it never counts NaN
  (compared with its ``nan`` statistic); on rasters with a dataset mask it does not count
  masked cells (compared with numpy).
* exactextract does not read GDAL dataset masks: on such rasters it reads a copy of the
  band whose masked cells are NaN nodata.
* exactextract truncates the quantiles of integer rasters towards zero (compared with its
  weighted quantile on its own per-cell values and coverage, untruncated), and sums no
  cell to 0 where we give NaN.
* exactextract's coverage fractions of some parcels whose edges lie on cell edges of a
  non-square grid add up to whole cells more than the parcel's area: those parcels are
  compared with exact coverage (shapely areas of cell ∩ parcel).
* Coverage slivers: parcels drawn on pixel edges (eo-learn's CLM_VECTOR, vectorised from the
  raster) have vertices within 1 ulp of the grid lines (9.3e-10 m at 5.08e6 m); each tool
  computes grid lines in its own arithmetic (exactextract, shapely on the GeoTIFF's lines,
  parcelzarr on its store grid, whose origin is shifted by whole pixels), so the cells such
  a parcel only touches get a coverage of ~1 ulp / cell size (9.3e-11) in one tool and 0 in
  another. parcelzarr snaps fractions within ``SNAP`` (1e-10) of 0 or 1 (docs/query.md);
  parcels where exactextract reports such slivers are compared with exactextract's own
  per-cell values and coverage, snapped the same way (the exact-coverage oracle is snapped
  too).
* GDAL's all-touched burn of a parcel whose edges run through cell corners depends on the
  window (docs/query.md): those parcels are compared with exact geometry (every cell the
  parcel overlaps with positive area), or where ours differs from it, with rasterio's burn
  chunk by chunk at the lattice phase that gives our cell count and nodata.
* Invalid parcel geometries: parcelzarr repairs them with ``make_valid``; the peers get the
  same repaired geometry.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
import shapely

from ._oracles import (
    ATOL,
    EE_STATS,
    QUANTILE_Q,
    QUANTILES,
    RS_STATS,
    RTOL,
    SNAP,
    EECells,
    cell_area_m2,
    classes_burned,
    classes_exactextract,
    exact_cells,
    exact_coverage_stats,
    exact_touched_stats,
    exactextract_cells,
    exactextract_coverage_consistent,
    exactextract_snapped_stats,
    exactextract_stats,
    has_slivers,
    lattice_burn_stats,
    numpy_stats,
    raster_info,
    rasterstats_classes,
    rasterstats_frame,
    rasterstats_run,
    touched_is_degenerate,
    weighted_quantile,
)
from ._rasters import SHARED_DATA

CLASS_STATS = ("count", "fraction", "area_m2")
RULES = ("centre", "all_touched", "coverage")
CLASS_RULES = ("categorical centre", "categorical all_touched", "categorical coverage")

_TIMESTAMPS = "eo-learn-slovenia/timestamps.json"


# -- registry ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RasterSpec:
    """One raster file of the shared data and how it is ingested.

    Attributes
    ----------
    path:
        Relative to the shared data folder.
    layer:
        ``band=`` given to ingest (multi-band files get ``{layer}_{i}`` or their band
        descriptions; with ``stacked`` band ``i`` is date ``i`` of this one layer).
    store:
        Rasters with the same store key are ingested into one store (in file-name order).
    time:
        ``time=`` of a single-date file.
    stacked:
        Bands are dates (``times=`` from ``eo-learn-slovenia/timestamps.json``).
    sample:
        1-based file bands checked (None: all).
    categorical:
        Class codes: also compared with the categorical rules.
    """

    path: str
    layer: str
    store: str
    time: str
    stacked: bool = False
    sample: tuple[int, ...] | None = None
    categorical: bool = False

    @property
    def dataset(self) -> str:
        return self.path.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ParcelSpec:
    """One parcel (polygon) file of the shared data.

    ``crs`` overrides a declared CRS that is wrong: the rasterstats GeoJSON files (GeoJSON
    means WGS 84) and ``multipolygons.prj`` hold ``slope.tif`` coordinates.
    """

    path: str
    crs: str | None = None
    layer: str | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def _eo_times() -> list[str]:
    return list(json.loads((SHARED_DATA / _TIMESTAMPS).read_text()))


#: Sampled dates of the 68-date stacks: the first (the dataset's date), the second
#: acquisition of 2015-12-08 (two that day) and the last.
STACK_SAMPLE = (1, 9, 68)
_SLOPE_CRS = "rasterstats/slope.tif"

RASTERS: tuple[RasterSpec, ...] = (
    RasterSpec("rasterstats/all_nodata.tif", "all_nodata", "rasterstats", "2020-01-01"),
    RasterSpec("rasterstats/dataset_mask.tif", "dataset_mask", "rasterstats", "2020-01-01"),
    RasterSpec("rasterstats/slope.tif", "slope", "rasterstats", "2020-01-01"),
    # Its pixels are 9.2e-8 m taller than slope.tif's (3.6e-9 relative) and its origin 3.7e-6 m
    # away: ingest refuses it into that grid ("not on the pixel grid ... resample it"), so it
    # has a store of its own. Rightly: admitted (corners within 4.3e-7 px), its pixels moved
    # by up to 1.1e-5 m changed coverage areas by 5.7e-6 (polygons_partial_overlap parcel 7)
    # and a pixel-edge parcel's all_touched cells (polygons_no_overlap parcel 8: 10, not 12).
    RasterSpec("rasterstats/slope_classes.tif", "slope_classes", "rasterstats-classes",
               "2020-01-01", categorical=True),
    RasterSpec("rasterstats/slope_nodata.tif", "slope_nodata", "rasterstats", "2020-01-01"),
    RasterSpec("rsgislib-aber/sen2_20210527_aber_cls.tif", "cls", "aber", "2021-05-27",
               categorical=True),
    RasterSpec("rsgislib-aber/sen2_20210527_aber_rebuilt.tif", "S2", "aber", "2021-05-27"),
    RasterSpec("eo-learn-slovenia/CLM_68dates.tif", "CLM", "eo-learn", "2015-07-11T10:00:08",
               stacked=True, sample=STACK_SAMPLE, categorical=True),
    RasterSpec("eo-learn-slovenia/DEM.tif", "DEM", "eo-learn", "2015-07-11T10:00:08"),
    RasterSpec("eo-learn-slovenia/LULC_mask.tif", "LULC_mask", "eo-learn",
               "2015-07-11T10:00:08", categorical=True),
    RasterSpec("eo-learn-slovenia/NDVI_68dates.tif", "NDVI", "eo-learn",
               "2015-07-11T10:00:08", stacked=True, sample=STACK_SAMPLE),
    RasterSpec("terra-lux/elev.tif", "elev", "terra-lux", "2024-08-24"),
    RasterSpec("terra-lux/sent2_L2A_2024-08-24.tif", "S2", "terra-lux", "2024-08-24"),
    RasterSpec("sao-miguel/clc2018_v2020_20u1.tif", "clc", "sao-miguel", "2018-01-01",
               categorical=True),
    RasterSpec("sao-miguel/eu_dem_v11.tif", "dem", "sao-miguel", "2018-01-01"),
    RasterSpec("sao-miguel/gpw_v411_2020_count_2020.tif", "pop_count", "sao-miguel",
               "2018-01-01"),
    RasterSpec("sao-miguel/gpw_v411_2020_density_2020.tif", "pop_density", "sao-miguel",
               "2018-01-01"),
    RasterSpec("sao-miguel/gpw_v411_2020_land_area_2020.tif", "land_area", "sao-miguel",
               "2018-01-01"),
)

PARCEL_SETS: tuple[ParcelSpec, ...] = (
    ParcelSpec("rasterstats/polygons.shp"),
    ParcelSpec("rasterstats/multipolygons.shp", crs=_SLOPE_CRS),
    ParcelSpec("rasterstats/polygons_partial_overlap.shp"),
    ParcelSpec("rasterstats/polygons_no_overlap.shp"),
    ParcelSpec("rasterstats/feature.geojson", crs=_SLOPE_CRS),
    ParcelSpec("rasterstats/featurecollection.geojson", crs=_SLOPE_CRS),
    ParcelSpec("rasterstats/geometry.geojson", crs=_SLOPE_CRS),
    ParcelSpec("rsgislib-aber/sen2_20210527_aber_polygons.geojson"),
    ParcelSpec("rsgislib-aber/aber_osgb_multi_polys.geojson"),
    ParcelSpec("rsgislib-aber/aber_osgb_single_poly.geojson"),
    ParcelSpec("rsgislib-aber/aber_osgb_single_poly_hole.geojson"),
    ParcelSpec("rsgislib-aber/aber_osgb_region_of_interest.geojson"),
    ParcelSpec("eo-learn-slovenia/LULC.gpkg"),
    ParcelSpec("eo-learn-slovenia/CLM_VECTOR.gpkg"),
    ParcelSpec("eo-learn-slovenia/bbox.geojson"),
    ParcelSpec("terra-lux/lux.shp"),
    ParcelSpec("sao-miguel/concelhos.gpkg"),
)

#: Vector files that hold no parcels (points, lines): not part of the suite.
NOT_PARCELS = {
    "rasterstats/points.shp": "points",
    "rasterstats/points_noproj.shp": "points without a CRS",
    "rasterstats/multipoints.shp": "points",
    "rasterstats/lines.shp": "lines",
    "rasterstats/multilines.shp": "lines",
    "rsgislib-aber/sen2_20210527_aber_pt_samples.geojson": "points",
}

#: Parcels per set compared at most (the first ones, in file order).
MAX_PARCELS = 120
#: Object edge per store: several chunks per raster (parcels cross chunk edges), the default
#: 256 on the larger rasters (and the lattice padding it brings).
CHUNK = {"rasterstats": 32, "rasterstats-classes": 32, "eo-learn": 32, "terra-lux": 32,
         "aber": 256, "sao-miguel": 256}
VECTOR_SUFFIXES = (".shp", ".gpkg", ".geojson", ".parquet", ".zip")


def raster(path: str) -> RasterSpec:
    return next(r for r in RASTERS if r.path == path)


def parcel_set(path: str) -> ParcelSpec:
    return next(p for p in PARCEL_SETS if p.path == path)


# -- reading -------------------------------------------------------------------------------
def vector_layers(path: Path) -> list[str | None]:
    """Readable layers of a vector file (``None``: the default one)."""
    if path.suffix == ".parquet":
        return [None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GDAL's notes on duplicate fields and M geometries
        return [str(name) for name, _ in pyogrio.list_layers(_vsi(path))]


def _vsi(path: Path) -> str:
    """The path GDAL opens: a zipped File Geodatabase is read inside its zip."""
    if path.suffix == ".zip":
        import zipfile

        with zipfile.ZipFile(path) as zf:
            gdbs = sorted({n.split(".gdb/")[0] + ".gdb" for n in zf.namelist() if ".gdb/" in n})
        if gdbs and not path.name.endswith(".gdb.zip"):
            return f"/vsizip/{path}/{gdbs[0]}"
    return str(path)


def read_vectors(path: Path, layer: str | None = None) -> gpd.GeoDataFrame:
    """Any vector file of the shared data (GeoParquet, zipped GDB/shapefile, GPKG layers)."""
    if path.suffix == ".parquet":
        return gpd.read_parquet(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GDAL's notes on duplicate fields and M geometries
        return gpd.read_file(_vsi(path), layer=layer)


@cache
def parcels(spec_path: str) -> gpd.GeoDataFrame:
    """A registered parcel set: geometry only, its CRS fixed, index 0..n-1, capped."""
    spec = parcel_set(spec_path)
    gdf = read_vectors(SHARED_DATA / spec.path, spec.layer)[["geometry"]]
    if spec.crs is not None:
        with rasterio.open(SHARED_DATA / spec.crs) as ds:
            gdf = gdf.set_crs(ds.crs, allow_override=True)
    return gdf.iloc[:MAX_PARCELS].reset_index(drop=True)


def store_band(spec: RasterSpec, index: int) -> tuple[str, str]:
    """(band name in the store, date) of file band ``index``, as docs/ingest.md says:
    a single band keeps ``layer``; multi-band files are named from their band descriptions,
    ``{layer}_{i}`` for generic ones; stacked files are dates of one layer."""
    info = raster_info(spec.path)
    if spec.stacked:
        return spec.layer, _eo_times()[index - 1]
    if info.count == 1:
        return spec.layer, spec.time
    desc = info.descriptions[index - 1]
    generic = desc is None or re.fullmatch(r"(?i)band[ _]?\d+", desc.strip() or "b1")
    return (f"{spec.layer}_{index}" if generic else desc.strip()), spec.time


def bands_of(spec: RasterSpec) -> tuple[int, ...]:
    return spec.sample or tuple(range(1, raster_info(spec.path).count + 1))


@cache
def in_raster_crs(spec_path: str, raster_path: str) -> gpd.GeoSeries:
    """The parcels as the peers get them: in the raster's CRS, invalid ones repaired as
    parcelzarr repairs them (``make_valid``, polygonal part)."""
    gs = parcels(spec_path).geometry.to_crs(raster_info(raster_path).crs)
    return gpd.GeoSeries([_repaired(g) for g in gs], crs=gs.crs)


def _repaired(geom: shapely.Geometry) -> shapely.Geometry:
    if geom is None or geom.is_empty or geom.is_valid:
        return geom
    fixed = shapely.make_valid(geom)
    polys = [g for g in shapely.get_parts(fixed) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(polys) if polys else shapely.Polygon()


@cache
def n_invalid(spec_path: str) -> int:
    return int((~parcels(spec_path).geometry.is_valid).sum())


# -- cases ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One comparison: a band of a raster, a parcel set and a pixel rule."""

    raster: RasterSpec
    band: int
    parcels: str
    rule: str

    @property
    def id(self) -> str:
        return f"{self.raster.path}[{self.band}]-{Path(self.parcels).name}-{self.rule}"

    @property
    def band_label(self) -> str:
        name, when = store_band(self.raster, self.band)
        return f"{name} @ {when}" if self.raster.stacked else name


def cases() -> list[Case]:
    """Every registered raster band x every parcel set of its dataset x every rule.

    Parcel sets are those of the raster's dataset folder (test_conformance checks that no
    other set overlaps any raster, and that every registered set overlaps its rasters).
    """
    out = []
    for r in RASTERS:
        rules = RULES + (CLASS_RULES if r.categorical else ())
        for p in PARCEL_SETS:
            if p.path.split("/", 1)[0] != r.dataset:
                continue
            for b in bands_of(r):
                out.extend(Case(r, b, p.path, rule) for rule in rules)
    return out


@lru_cache(maxsize=64)
def _rasterstats_cached(raster_path: str, band: int, parcels_path: str,
                        all_touched: bool) -> tuple[dict[Any, Any], ...]:
    return tuple(rasterstats_run(raster_path, band, in_raster_crs(parcels_path, raster_path),
                                 all_touched=all_touched,
                                 categorical=raster(raster_path).categorical))


# -- comparison ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """The largest difference of one statistic over the parcels of one case and oracle."""

    case: Case
    stat: str
    oracle: str
    max_abs: float
    max_rel: float
    n: int
    ok: bool
    note: str = ""
    worst: str = ""  # "parcel i: ours x vs oracle y" of the largest violation

    @property
    def key(self) -> tuple[str, ...]:
        c = self.case
        return (c.raster.dataset, c.raster.name, c.band_label, c.parcels, c.rule, self.stat,
                self.oracle)


def compare(case: Case, stat: str, oracle: str, ours: np.ndarray, theirs: np.ndarray,
            ids: np.ndarray, note: str = "") -> Row:
    """Differences over parcels; NaN equals NaN only."""
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    if a.size == 0:
        return Row(case, stat, oracle, 0.0, 0.0, 0, True, note)
    both_nan = np.isnan(a) & np.isnan(b)
    one_nan = np.isnan(a) ^ np.isnan(b)
    diff = np.where(both_nan, 0.0, np.where(one_nan, np.inf, np.abs(a - b)))
    scale = np.abs(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / scale)
    bad = diff > ATOL + RTOL * np.where(np.isnan(scale), 0.0, scale)
    worst = ""
    if bad.any():
        k = int(np.argmax(np.where(bad, diff, -1.0)))
        worst = f"parcel {ids[k]}: ours {a[k]:.10g} vs {oracle} {b[k]:.10g}"
    return Row(case, stat, oracle, float(diff.max()), float(np.nanmax(rel)), int(a.size),
               not bool(bad.any()), note, worst)


#: Notes of the convention rows (the table's "note" column).
NOTE_105 = ("rasterstats #105: on a raster without nodata it counts cells beyond the raster "
            "as 0; these edge-crossing parcels are compared with a numpy oracle (rasterstats' "
            "window and burn, cells beyond the raster excluded)")
NOTE_NAN = ("NaN nodata: rasterstats' nodata compares with == and never counts NaN; compared "
            "with its nan statistic")
NOTE_TRUNC = ("exactextract truncates quantiles of integer rasters towards zero: compared "
              "with its weighted quantile on its own per-cell values and coverage (its values "
              "and coverage ops), untruncated (truncating ours instead would turn float noise "
              "such as 4.999999999998 against 5 into a whole unit)")
NOTE_MASK = ("dataset mask: rasterstats' nodata counts cells equal to the nodata value only, "
             "not masked cells; compared with numpy (masked cells and cells beyond the raster "
             "are nodata)")
NOTE_EE_MASK = ("dataset mask: exactextract does not read GDAL dataset masks (it takes masked "
                "cells for data); compared with exactextract on a copy of the band whose "
                "masked cells (rasterio's read_masks) are NaN nodata")
NOTE_SUM0 = ("parcels without valid cells: exactextract's sum over no cell is 0, ours NaN (the "
             "contract: NaN statistics when count is 0); compared as NaN = 0")
NOTE_EE_EDGE = ("exactextract's coverage fractions for these parcels do not add up to their "
                "area (edges on cell edges of a non-square grid: it over-counts whole cells); "
                "compared with exact coverage (shapely: area of cell ∩ parcel / cell area, "
                f"snapped within {SNAP:g} of 0 or 1 as documented; exactextract's weighted "
                "quantile)")
NOTE_SNAP = ("coverage slivers: exactextract gives cells that a parcel drawn on pixel edges "
             "only touches a coverage of ~1 ulp of the world coordinates (9.3e-11 = "
             "ulp(5.08e6 m) / 9.997 m, from its own grid-line arithmetic; shapely on the "
             "GeoTIFF's lines gives them 0), and they enter its min, max and quantiles; "
             f"parcelzarr snaps fractions within {SNAP:g} of 0 or 1 (docs/query.md). Compared "
             "with exactextract's own per-cell values and coverage (its values and coverage "
             "ops), snapped the same way, and its formulas")
NOTE_DEGENERATE = ("degenerate all_touched: an edge runs through cell corners or along cell "
                   "edges, so GDAL's burn depends on the window (docs/query.md); compared with "
                   "exact geometry: every cell the parcel overlaps with positive area")
NOTE_WINDOW = ("degenerate all_touched, GDAL's window: edges within float noise of cell "
               "edges or corners, where GDAL's all-touched burn takes or leaves the cells on "
               "the other side by the window it burns (triangle 8 of polygons_no_overlap: 10, "
               "11 or 12 cells), rasterstats burning the parcel's window and parcelzarr each "
               "chunk's; compared with rasterio's burn chunk by chunk (the store's chunk edge, "
               "numpy statistics) at the lattice phase that gives our cell count and nodata")
NOTE_AREA = ("area: Σ cell areas in m² (projected cell; on geographic CRSs the exact "
             "ellipsoidal cell area)")


def _invalid_note(case: Case) -> str:
    n = n_invalid(case.parcels)
    return (f"{n} invalid parcel(s) repaired with make_valid for the peers, as parcelzarr "
            "repairs them") if n else ""


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


@dataclass(frozen=True)
class _Reference:
    """An oracle's statistics (rows: every parcel, NaN where not computed) and the parcels
    compared with it."""

    oracle: str
    note: str
    parcels: np.ndarray  # bool per parcel
    table: pd.DataFrame


def _subset_table(n: int, sel: np.ndarray, compute: Any, columns: Sequence[str],
                  ) -> pd.DataFrame:
    full = pd.DataFrame(np.nan, index=np.arange(n), columns=list(columns))
    if sel.any():
        full.loc[np.flatnonzero(sel)] = compute(sel).to_numpy()
    return full


@cache
def _ee_consistent(raster_path: str, parcels_path: str) -> np.ndarray:
    return exactextract_coverage_consistent(raster_path, in_raster_crs(parcels_path,
                                                                       raster_path))


@cache
def _ee_cells(raster_path: str, band: int, parcels_path: str) -> tuple[EECells, ...]:
    return tuple(exactextract_cells(raster_path, band, in_raster_crs(parcels_path,
                                                                     raster_path)))


@cache
def _ee_untruncated(raster_path: str, band: int, parcels_path: str) -> pd.DataFrame:
    """exactextract's quantiles, untruncated, from its own per-cell values and coverage."""
    return pd.DataFrame([{q: weighted_quantile(c.values, c.coverage, QUANTILE_Q[q])
                          for q in QUANTILE_Q}
                         for c in _ee_cells(raster_path, band, parcels_path)])


@cache
def _degenerate(raster_path: str, parcels_path: str) -> np.ndarray:
    geoms = in_raster_crs(parcels_path, raster_path)
    return np.array([touched_is_degenerate(raster_path, g) for g in geoms], dtype=bool)


def _references(case: Case) -> list[_Reference]:
    """Which oracle each parcel of ``case`` is compared with, and why."""
    path, band = case.raster.path, case.band
    geoms = in_raster_crs(case.parcels, path)
    n = len(geoms)
    info = raster_info(path)
    inv = _invalid_note(case)
    if case.rule == "coverage":
        ok = _ee_consistent(path, case.parcels)
        cells = _ee_cells(path, band, case.parcels)
        sliver = np.array([has_slivers(c.coverage) for c in cells], dtype=bool)
        plain = _join(NOTE_EE_MASK, inv) if info.dataset_mask else inv
        refs = [_Reference("exactextract", plain, ok & ~sliver,
                           exactextract_stats(path, band, geoms))]
        if (ok & sliver).any():
            refs.append(_Reference("exactextract, snapped", _join(NOTE_SNAP, plain),
                                   ok & sliver, exactextract_snapped_stats(cells)))
        if (~ok).any():
            refs.append(_Reference(
                "exact coverage", _join(NOTE_EE_EDGE, inv), ~ok,
                _subset_table(n, ~ok, lambda sel: exact_coverage_stats(
                    path, band, list(geoms[sel])), list(EE_STATS))))
        return refs
    all_touched = case.rule == "all_touched"
    degenerate = _degenerate(path, case.parcels) if all_touched else np.zeros(n, bool)
    crossing = ~geoms.within(info.bounds_box).to_numpy()
    edge = crossing & ~degenerate if info.zero_filled else np.zeros(n, bool)
    peer = rasterstats_frame(_rasterstats_cached(path, band, case.parcels, all_touched))
    refs = [_Reference("rasterstats", inv, ~degenerate & ~edge, peer)]
    if edge.any():
        refs.append(_Reference("numpy", _join(NOTE_105, inv), edge, _subset_table(
            n, edge, lambda sel: numpy_stats(path, band, geoms[sel], all_touched=all_touched),
            RS_STATS)))
    if degenerate.any():
        refs.append(_Reference("exact touched", _join(NOTE_DEGENERATE, inv), degenerate,
                               _subset_table(n, degenerate, lambda sel: exact_touched_stats(
                                   path, band, list(geoms[sel])), RS_STATS)))
    return refs


def evaluate(case: Case, ours: pd.DataFrame) -> list[Row]:
    """Compare ``ours`` (parcelzarr rows of this case's band and date) with the oracles."""
    if case.rule.startswith("categorical"):
        return _evaluate_classes(case, ours)
    geoms = in_raster_crs(case.parcels, case.raster.path)
    ids = np.arange(len(geoms))
    by_id = ours.set_index("parcel_id").reindex(ids)
    stats = list(EE_STATS) if case.rule == "coverage" else list(RS_STATS)
    rows = []
    refs = _references(case)
    for ref in list(refs):
        if ref.oracle == "exact touched":
            refs.remove(ref)
            refs.extend(_window_split(case, ref, by_id))
    for ref in refs:
        for s in stats:
            rows.extend(_stat_rows(case, ref, s, by_id[s].to_numpy(float), ids))
    return [r for r in rows if r.n]


def _agree(ours: pd.DataFrame, theirs: pd.DataFrame) -> np.ndarray:
    """Per parcel: every statistic within tolerance (NaN equals NaN only)."""
    a, b = ours.to_numpy(float), theirs.to_numpy(float)
    with np.errstate(invalid="ignore"):
        close = np.abs(a - b) <= ATOL + RTOL * np.abs(b)
    return (close | (np.isnan(a) & np.isnan(b))).all(axis=1)


def _window_split(case: Case, ref: _Reference, by_id: pd.DataFrame) -> list[_Reference]:
    """Degenerate all_touched parcels: those equal to exact geometry stay with it; the others
    are compared with GDAL's burn chunk by chunk (the store's chunk edge) at the lattice phase
    that gives their cell count and nodata, since GDAL's answer depends on the window."""
    cols = list(RS_STATS)
    same = _agree(by_id[cols], ref.table[cols]) | ~ref.parcels
    out = [_Reference(ref.oracle, ref.note, ref.parcels & same, ref.table)]
    other = ref.parcels & ~same
    if other.any():
        geoms = in_raster_crs(case.parcels, case.raster.path)
        table = pd.DataFrame(np.nan, index=by_id.index, columns=cols)
        for i in np.flatnonzero(other):
            answers = pd.DataFrame(lattice_burn_stats(
                case.raster.path, case.band, geoms.iloc[i], chunk=CHUNK[case.raster.store]),
                columns=cols)
            mine = by_id.loc[[by_id.index[i]], cols]
            hits = (answers[["count", "nodata"]].to_numpy(float)
                    == mine[["count", "nodata"]].to_numpy(float)).all(axis=1)
            pick = answers[hits] if hits.any() else answers
            table.iloc[i] = pick.iloc[0].to_numpy(float)
        out.append(_Reference("GDAL, chunk by chunk", _join(NOTE_WINDOW, ref.note), other,
                              table))
    return out


def _stat_rows(case: Case, ref: _Reference, stat: str, ours: np.ndarray,
               ids: np.ndarray) -> list[Row]:
    """One statistic against one reference; conventions get rows of their own."""
    info = raster_info(case.raster.path)
    sel, theirs = ref.parcels, ref.table[stat].to_numpy(float)
    if ref.oracle == "rasterstats" and stat == "nodata" and info.nan_nodata:
        theirs = theirs + ref.table["nan"].fillna(0.0).to_numpy(float)
        return [compare(case, stat, ref.oracle, ours[sel], theirs[sel], ids[sel],
                        _join(NOTE_NAN, ref.note))]
    if ref.oracle == "rasterstats" and stat == "nodata" and info.dataset_mask:
        geoms = in_raster_crs(case.parcels, case.raster.path)
        theirs = numpy_stats(case.raster.path, case.band, geoms,
                             all_touched=case.rule == "all_touched")["nodata"].to_numpy(float)
        return [compare(case, stat, "numpy", ours[sel], theirs[sel], ids[sel],
                        _join(NOTE_MASK, ref.note))]
    if ref.oracle == "exactextract" and stat in QUANTILES and info.integer:
        theirs = _ee_untruncated(case.raster.path, case.band, case.parcels)[stat]
        return [compare(case, stat, ref.oracle, ours[sel], theirs.to_numpy(float)[sel],
                        ids[sel], _join(NOTE_TRUNC, ref.note))]
    if ref.oracle == "exactextract" and stat == "sum":
        empty = sel & (ref.table["count"].to_numpy(float) == 0)
        rest = sel & ~empty
        return [compare(case, stat, ref.oracle, ours[rest], theirs[rest], ids[rest], ref.note),
                compare(case, stat, ref.oracle, np.nan_to_num(ours[empty], nan=0.0),
                        theirs[empty], ids[empty], _join(NOTE_SUM0, ref.note))]
    return [compare(case, stat, ref.oracle, ours[sel], theirs[sel], ids[sel], ref.note)]


def _class_table(ours: pd.DataFrame, column: str) -> dict[tuple[int, float], float]:
    return {(int(p), float(c)): float(v) for p, c, v in
            zip(ours["parcel_id"], ours["class"], ours[column], strict=True)}


def _compare_dicts(case: Case, stat: str, oracle: str, ours: dict[tuple[int, float], float],
                   theirs: dict[tuple[int, float], float], note: str) -> Row:
    """Per (parcel, class); a class one side lacks counts as 0 there."""
    keys = sorted(set(ours) | set(theirs))
    a = np.array([ours.get(k, 0.0) for k in keys])
    b = np.array([theirs.get(k, 0.0) for k in keys])
    ids = np.array([f"{k[0]} class {k[1]:g}" for k in keys], dtype=object)
    row = compare(case, stat, oracle, a, b, ids, note)
    n = len({k[0] for k in keys})
    return Row(row.case, row.stat, row.oracle, row.max_abs, row.max_rel, n, row.ok, row.note,
               row.worst)


def _fractions(counts: dict[tuple[int, float], float]) -> dict[tuple[int, float], float]:
    total: dict[int, float] = {}
    for (p, _), v in counts.items():
        total[p] = total.get(p, 0.0) + v
    return {k: v / total[k[0]] for k, v in counts.items() if total[k[0]] > 0}


def _exact_classes(raster_path: str, band: int, geoms: gpd.GeoSeries, sel: np.ndarray, *,
                   weighted: bool) -> dict[tuple[int, float], tuple[float, float]]:
    """(parcel, class) -> (cells or Σ fractions, m²) in exact geometry."""
    info = raster_info(raster_path)
    out: dict[tuple[int, float], tuple[float, float]] = {}
    for i in np.flatnonzero(sel):
        cells = exact_cells(raster_path, band, geoms.iloc[i])
        w = cells.fractions if weighted else np.ones(cells.values.size)
        area = w * cell_area_m2(info, cells.rows)
        for cls in np.unique(cells.values):
            m = cells.values == cls
            out[(int(i), float(cls))] = (float(w[m].sum()), float(area[m].sum()))
    return out


def _evaluate_classes(case: Case, ours: pd.DataFrame) -> list[Row]:
    """Class count, fraction and area per (parcel, class), each parcel against its oracle."""
    path, band = case.raster.path, case.band
    geoms = in_raster_crs(case.parcels, path)
    n = len(geoms)
    info = raster_info(path)
    inv = _invalid_note(case)
    mine = {c: _class_table(ours, c) for c in CLASS_STATS}
    # oracle name -> (parcels, counts, areas, fractions, note for count/fraction rows)
    refs: list[tuple[str, np.ndarray, dict[tuple[int, float], float],
                     dict[tuple[int, float], float], str]] = []
    area_refs: list[tuple[str, np.ndarray, dict[tuple[int, float], float], str]] = []
    if case.rule == "categorical coverage":
        ok = _ee_consistent(path, case.parcels)
        sums, fracs = classes_exactextract(path, band, geoms)
        refs.append(("exactextract", ok, {k: v[0] for k, v in sums.items()}, fracs, inv))
        area_refs.append(("exactextract", ok, {k: v[1] for k, v in sums.items()},
                          _join(NOTE_AREA, inv)))
        if (~ok).any():
            ex = _exact_classes(path, band, geoms, ~ok, weighted=True)
            counts = {k: v[0] for k, v in ex.items()}
            note = _join(NOTE_EE_EDGE, inv)
            refs.append(("exact coverage", ~ok, counts, _fractions(counts), note))
            area_refs.append(("exact coverage", ~ok, {k: v[1] for k, v in ex.items()},
                              _join(NOTE_AREA, note)))
    else:
        all_touched = case.rule == "categorical all_touched"
        degenerate = _degenerate(path, case.parcels) if all_touched else np.zeros(n, bool)
        crossing = ~geoms.within(info.bounds_box).to_numpy()
        edge = crossing & ~degenerate if info.zero_filled else np.zeros(n, bool)
        plain = ~degenerate & ~edge
        burned = classes_burned(path, band, geoms, all_touched=all_touched)
        np_count = {k: v[0] for k, v in burned.items()}
        peer = rasterstats_classes(_rasterstats_cached(path, band, case.parcels, all_touched))
        refs.append(("rasterstats", plain, peer, _fractions(peer), inv))
        area_refs.append(("numpy", ~degenerate, {k: v[1] for k, v in burned.items()},
                          _join(NOTE_AREA, inv)))
        if edge.any():
            refs.append(("numpy", edge, np_count, _fractions(np_count), _join(NOTE_105, inv)))
        if degenerate.any():
            ex = _exact_classes(path, band, geoms, degenerate, weighted=False)
            counts = {k: v[0] for k, v in ex.items()}
            note = _join(NOTE_DEGENERATE, inv)
            refs.append(("exact touched", degenerate, counts, _fractions(counts), note))
            area_refs.append(("exact touched", degenerate, {k: v[1] for k, v in ex.items()},
                              _join(NOTE_AREA, note)))

    def only(d: dict[tuple[int, float], float], sel: np.ndarray
             ) -> dict[tuple[int, float], float]:
        return {k: v for k, v in d.items() if sel[k[0]]}

    rows = []
    for oracle, sel, counts, fracs, note in refs:
        if sel.any():
            rows.append(_compare_dicts(case, "count", oracle, only(mine["count"], sel),
                                       only(counts, sel), note))
            rows.append(_compare_dicts(case, "fraction", oracle, only(mine["fraction"], sel),
                                       only(fracs, sel), note))
    for oracle, sel, areas, note in area_refs:
        if sel.any():
            rows.append(_compare_dicts(case, "area_m2", oracle, only(mine["area_m2"], sel),
                                       only(areas, sel), note))
    return rows
