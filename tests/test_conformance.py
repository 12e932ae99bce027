"""Conformance suite: parcelzarr's zonal statistics against rasterstats, exactextract and numpy
on every real raster of ``../shared/data`` (issue 8).

One test per (raster band, parcel set, rule); the cases, oracles and conventions are in
``tests/_conformance.py``. With ``--conformance-doc PATH`` (``make conformance``) the rows of
the run are written to PATH (docs/conformance.md), failing ones included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from rasterio.warp import transform_bounds

import parcelzarr as pz

from . import _conformance as cf
from . import _conformance_report as rp
from . import _oracles as oc
from ._rasters import SHARED_DATA

pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared real data not available")

CASES = cf.cases() if SHARED_DATA.exists() else []
COLLECTOR = rp.Collector()
logger = logging.getLogger(__name__)


class Stores:
    """The datasets' stores, built on first use (one ingest run per file, file-name order)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._stores: dict[str, pz.ParcelStore] = {}
        self._answers: dict[tuple[str, str, str], pd.DataFrame] = {}

    def store(self, key: str) -> pz.ParcelStore:
        if key not in self._stores:
            t0 = time.perf_counter()
            url = str(self.root / f"{key}.zarr")
            for spec in sorted((r for r in cf.RASTERS if r.store == key), key=lambda r: r.path):
                when = {"times": cf._eo_times()} if spec.stacked else {"time": spec.time}
                pz.ingest(str(cf.SHARED_DATA / spec.path), url, band=spec.layer, quiet=True,
                          chunk_size=cf.CHUNK[key], **when)
            self._stores[key] = pz.open_store(url)
            logger.info("ingest %s: %.1f s", key, time.perf_counter() - t0)
        return self._stores[key]

    def ours(self, case: cf.Case) -> pd.DataFrame:
        """parcelzarr's rows for ``case``: one query per (store, parcel set, rule) covering
        every band and sampled date of the store, sliced to the case's band and date."""
        key = (case.raster.store, case.parcels, case.rule)
        if key not in self._answers:
            self.store(case.raster.store)
            t0 = time.perf_counter()
            self._answers[key] = self._query(*key)
            logger.info("query %s: %.1f s", key, time.perf_counter() - t0)
        df = self._answers[key]
        band, when = cf.store_band(case.raster, case.band)
        times = pd.to_datetime(df["time"])
        day = pd.Timestamp(when)
        match = times == day if len(when) > 10 else times.dt.normalize() == day
        return df[(df["band"] == band) & match].reset_index(drop=True)

    def _query(self, store_key: str, parcels: str, rule: str) -> pd.DataFrame:
        categorical = rule.startswith("categorical")
        specs = [r for r in cf.RASTERS if r.store == store_key
                 and (r.categorical or not categorical)]
        pairs = {cf.store_band(r, b) for r in specs for b in cf.bands_of(r)}
        bands = sorted({b for b, _ in pairs})
        dates = sorted({t for _, t in pairs})
        kw: dict[str, object] = {}
        if rule.endswith("coverage"):
            kw["weights"] = "coverage"
        if rule.endswith("all_touched"):
            kw["all_touched"] = True
        if categorical:
            kw["categorical"] = True
        else:
            kw["stats"] = list(oc.EE_STATS) if rule == "coverage" else list(oc.RS_STATS)
        return self.store(store_key).zonal_stats(cf.parcels(parcels), bands=bands,
                                                 time=dates, **kw)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[Stores]:
    t0 = time.perf_counter()
    yield Stores(tmp_path_factory.mktemp("conformance"))
    doc = request.config.getoption("--conformance-doc")
    if doc:
        rp.write_report(COLLECTOR, Path(doc), seconds=time.perf_counter() - t0,
                        unused_sets=unused_parcel_files())


#: Cases still outside tolerance, each listed in docs/conformance.md ("Outside tolerance")
#: with its cause; open work on issue 8. Strict: a fix that makes one pass must remove it.
KNOWN_OPEN: dict[str, str] = {}


@pytest.mark.parametrize("case", [
    pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=KNOWN_OPEN[c.id]))
    if c.id in KNOWN_OPEN else c for c in CASES], ids=[c.id for c in CASES])
def test_zonal_stats_conform_to_the_peers(stores: Stores, case: cf.Case) -> None:
    try:
        rows = cf.evaluate(case, stores.ours(case))
    except Exception as exc:
        COLLECTOR.errors[case.id] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        raise
    COLLECTOR.add(rows)
    bad = [r for r in rows if not r.ok]
    assert not bad, "; ".join(
        f"{r.stat} vs {r.oracle}: max abs diff {r.max_abs:.4g} ({r.worst})" for r in bad)


# -- the registry is complete --------------------------------------------------------------
def _vector_files() -> list[str]:
    found = []
    for p in sorted(SHARED_DATA.rglob("*")):
        rel = p.relative_to(SHARED_DATA).as_posix()
        if p.is_file() and p.name.lower().endswith(cf.VECTOR_SUFFIXES):
            found.append(rel)
    return found


def _raster_box_wgs84(path: str) -> shapely.Polygon:
    info = oc.raster_info(path)
    left, bottom, right, top = info.bounds_box.bounds
    return shapely.box(*transform_bounds(info.crs, "EPSG:4326", left, bottom, right, top,
                                         densify_pts=21))


def _overlapped_rasters(path: str, layer: str | None) -> set[str]:
    """Rasters a vector layer's geometries intersect (in each raster's CRS)."""
    if path in {p.path for p in cf.PARCEL_SETS}:
        gdf = cf.parcels(path)
    else:
        gdf = cf.read_vectors(SHARED_DATA / path, layer)
    if gdf.empty or gdf.crs is None:
        return set()
    box = shapely.box(*gdf.to_crs("EPSG:4326").total_bounds)
    hits = set()
    for r in cf.RASTERS:
        if not _raster_box_wgs84(r.path).intersects(box):
            continue
        geoms = gdf.geometry.to_crs(oc.raster_info(r.path).crs)
        if geoms.intersects(oc.raster_info(r.path).bounds_box).any():
            hits.add(r.path)
    return hits


_UNUSED: list[str] = []


def unused_parcel_files() -> list[str]:
    """Polygon files (and layers) of the shared data that overlap no raster."""
    if not _UNUSED:
        for path in _vector_files():
            if path in cf.NOT_PARCELS or path in {p.path for p in cf.PARCEL_SETS}:
                continue
            layers = cf.vector_layers(SHARED_DATA / path)
            for layer in layers:
                if not _overlapped_rasters(path, layer):
                    _UNUSED.append(path if len(layers) == 1 else f"{path} (layer {layer})")
    return _UNUSED


def test_every_raster_of_the_shared_data_is_in_the_suite() -> None:
    tifs = {p.relative_to(SHARED_DATA).as_posix() for p in SHARED_DATA.rglob("*.tif")}
    assert tifs == {r.path for r in cf.RASTERS}
    for r in cf.RASTERS:
        with rasterio.open(SHARED_DATA / r.path) as ds:
            assert set(cf.bands_of(r)) <= set(range(1, ds.count + 1))
            if r.sample is None:
                assert len(cf.bands_of(r)) == ds.count  # every band


def test_every_parcel_set_that_overlaps_a_raster_is_in_the_suite() -> None:
    registered = {p.path for p in cf.PARCEL_SETS}
    for path in _vector_files():
        if path in cf.NOT_PARCELS:
            geoms = cf.read_vectors(SHARED_DATA / path).geometry
            assert not geoms.geom_type.isin(["Polygon", "MultiPolygon"]).any(), path
            continue
        for layer in cf.vector_layers(SHARED_DATA / path):
            hits = _overlapped_rasters(path, layer)
            if path in registered:
                same = {r.path for r in cf.RASTERS if r.dataset == path.split("/", 1)[0]}
                assert hits == same, f"{path} overlaps {sorted(hits)}, not {sorted(same)}"
            else:
                assert not hits, f"{path} (layer {layer}) overlaps {sorted(hits)}: register it"


def test_every_case_is_a_test() -> None:
    """Each raster band x parcel set x rule is a case (categorical rules on class rasters)."""
    per_raster: dict[str, int] = {}
    for c in CASES:
        per_raster[c.raster.path] = per_raster.get(c.raster.path, 0) + 1
    for r in cf.RASTERS:
        n_sets = sum(p.path.split("/", 1)[0] == r.dataset for p in cf.PARCEL_SETS)
        n_rules = len(cf.RULES) + (len(cf.CLASS_RULES) if r.categorical else 0)
        assert per_raster[r.path] == len(cf.bands_of(r)) * n_sets * n_rules
    assert len({c.id for c in CASES}) == len(CASES)


# -- the oracles themselves ----------------------------------------------------------------
def test_numpy_oracle_equals_rasterstats_where_rasterstats_is_right() -> None:
    """On a raster with nodata (no #105) the numpy oracle gives rasterstats' numbers."""
    src = "rasterstats/slope_nodata.tif"
    geoms = cf.in_raster_crs("rasterstats/polygons_partial_overlap.shp", src)
    for all_touched in (False, True):
        ours = oc.numpy_stats(src, 1, geoms, all_touched=all_touched)
        peer = oc.rasterstats_stats(src, 1, geoms, all_touched=all_touched)
        for s in oc.RS_STATS:
            np.testing.assert_allclose(ours[s], peer[s], rtol=1e-6, equal_nan=True, err_msg=s)


def test_numpy_oracle_excludes_cells_beyond_a_raster_without_nodata() -> None:
    """rasterstats #105 as the oracle sees it: a parcel half beyond DEM.tif (no nodata):
    5 x 10 cells on the raster, 5 x 10 beyond it."""
    src = "eo-learn-slovenia/DEM.tif"
    _, bottom, right, _ = oc.raster_info(src).bounds_box.bounds
    half_out = shapely.box(right - 50, bottom + 300, right + 50, bottom + 400)
    b = oc.burn(src, 1, half_out, all_touched=False)
    assert (b.values.size, b.nodata) == (50, 50)
    assert b.values.min() > 0  # the DEM is ~600 m: no phantom zero cells
    peer = oc.rasterstats_stats(src, 1, gpd.GeoSeries([half_out]), all_touched=False)
    assert (peer["count"][0], peer["min"][0]) == (100, 0)  # the bug the oracle avoids


def test_ellipsoidal_cell_area_equals_pyproj_geodesic_area() -> None:
    from pyproj import Geod

    info = oc.raster_info("sao-miguel/eu_dem_v11.tif")
    rows = np.array([0, 100, 191])
    ours = oc.cell_area_m2(info, rows)
    geod = Geod(ellps="WGS84")
    a, e = info.transform.a, info.transform.e
    for r, area in zip(rows, ours, strict=True):
        top = info.transform.f + r * e
        lons = np.linspace(-25.5, -25.5 + a, 50)
        ring_lon = np.r_[lons, lons[::-1]]
        ring_lat = np.r_[np.full(50, top), np.full(50, top + e)]
        ref, _ = geod.polygon_area_perimeter(ring_lon, ring_lat)
        assert area == pytest.approx(abs(ref), rel=1e-6)


def test_exact_coverage_oracle_equals_exactextract_where_exactextract_is_consistent() -> None:
    """The exact-geometry oracle (used only where exactextract is off) reproduces exactextract,
    weighted quantiles included, on real parcels it handles consistently."""
    for raster, parcels in (("eo-learn-slovenia/NDVI_68dates.tif", "eo-learn-slovenia/LULC.gpkg"),
                            ("rasterstats/slope.tif", "rasterstats/polygons.shp")):
        geoms = cf.in_raster_crs(parcels, raster)[:30]
        assert oc.exactextract_coverage_consistent(raster, geoms).all()
        ours = oc.exact_coverage_stats(raster, 9 if "NDVI" in raster else 1, list(geoms))
        peer = oc.exactextract_stats(raster, 9 if "NDVI" in raster else 1, geoms)
        for s in oc.EE_STATS:
            np.testing.assert_allclose(ours[s], peer[s], rtol=1e-6, atol=1e-9, equal_nan=True,
                                       err_msg=f"{raster} {s}")


def test_exactextract_over_counts_cell_aligned_parcels_on_a_non_square_grid() -> None:
    """The peer defect the suite routes around: two cloud polygons of CLM_VECTOR.gpkg (edges on
    cell edges, 9.995 x 9.997 m cells) get coverage fractions summing to 1 and 2 cells more
    than their area."""
    raster, parcels = "eo-learn-slovenia/NDVI_68dates.tif", "eo-learn-slovenia/CLM_VECTOR.gpkg"
    ok = oc.exactextract_coverage_consistent(raster, cf.in_raster_crs(parcels, raster))
    assert np.flatnonzero(~ok).tolist() == [24, 34]
    exact = oc.exact_coverage_stats(raster, 1, list(cf.in_raster_crs(parcels, raster)[[24, 34]]))
    assert exact["count"].round(6).tolist() == [1470.0, 6666.0]


def test_degenerate_all_touched_parcels_are_detected() -> None:
    """polygons_no_overlap.shp's last triangle runs through cell corners: GDAL's all-touched
    burn changes with the window; ordinary real parcels do not."""
    deg = [oc.touched_is_degenerate("rasterstats/slope.tif", g) for g in
           cf.in_raster_crs("rasterstats/polygons_no_overlap.shp", "rasterstats/slope.tif")]
    assert deg[8]
    lulc = cf.in_raster_crs("eo-learn-slovenia/LULC.gpkg", "eo-learn-slovenia/DEM.tif")
    assert not any(oc.touched_is_degenerate("eo-learn-slovenia/DEM.tif", g) for g in lulc[:20])


def test_a_layer_named_like_an_index_is_that_layer(tmp_path: Path) -> None:
    """eo-learn's NDVI ingested as a layer named ``ndvi`` is read as that layer (rasterstats on
    the source), not as the NDVI index of B04/B08, which the store does not hold."""
    src = "eo-learn-slovenia/NDVI_68dates.tif"
    url = str(tmp_path / "ndvi.zarr")
    pz.ingest(str(SHARED_DATA / src), url, band="ndvi", times=cf._eo_times(), quiet=True)
    parcels = "eo-learn-slovenia/LULC.gpkg"
    ours = pz.open_store(url).zonal_stats(cf.parcels(parcels), time=cf._eo_times()[0],
                                          stats=["count", "mean"])
    peer = oc.rasterstats_stats(src, 1, cf.in_raster_crs(parcels, src), all_touched=False)
    assert ours["band"].unique().tolist() == ["ndvi"]
    np.testing.assert_allclose(ours["count"], peer["count"])
    np.testing.assert_allclose(ours["mean"], peer["mean"], rtol=1e-6, equal_nan=True)


def test_report_lists_failures_and_merges_bands(tmp_path: Path) -> None:
    """The docs/conformance.md writer on two bands of one raster, one outside tolerance."""
    spec = cf.raster("rsgislib-aber/sen2_20210527_aber_rebuilt.tif")
    parcels = "rsgislib-aber/aber_osgb_single_poly.geojson"
    rows = [cf.compare(cf.Case(spec, b, parcels, "centre"), "mean", "rasterstats",
                       np.array([v]), np.array([1.0]), np.array([0]), "why")
            for b, v in ((1, 1.0), (2, 2.0))]
    rp.write_report(rp.Collector(rows), tmp_path / "c.md", seconds=1.0, unused_sets=["x.gpkg"])
    text = (tmp_path / "c.md").read_text()
    assert "**1 of 2 cases within tolerance, 1 not**" in text
    assert "| 2 bands | aber_osgb_single_poly.geojson | centre | mean | 1 | 1 | 1 | rasterstats " \
           "| ✗ 1/2 | [1](#note-1) |" in text
    assert "parcel 0: ours 2 vs rasterstats 1" in text and "`x.gpkg`" in text
