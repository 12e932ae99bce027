"""Ecosystem conventions: GeoParquet 1.1 with a bbox covering column, fiboa parcel ids, and
``parcelzarr stats --output wide|xarray`` as the Python API takes them; values checked
against rasterstats on the source GeoTIFF (../shared/data/rasterstats)."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
import xarray as xr
import xvec  # noqa: F401  (registers the .xvec accessor)
from click.testing import CliRunner
from rasterstats import zonal_stats as rs_zonal_stats

import parcelzarr as pz
from parcelzarr.cli import main

from ._rasters import SHARED_DATA

RS = SHARED_DATA / "rasterstats"
pytestmark = pytest.mark.skipif(not RS.exists(), reason="shared real data not available")
SLOPE = RS / "slope.tif"
IDS = ["field-a", "field-b"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = str(tmp_path_factory.mktemp("conv") / "slope.zarr")
    pz.ingest(str(SLOPE), url, band="slope", time="2020-01-01", quiet=True, chunk_size=32)
    return url


def _polygons() -> gpd.GeoDataFrame:
    with rasterio.open(SLOPE) as ds:
        crs = ds.crs
    return gpd.read_file(RS / "polygons.shp").set_crs(crs, allow_override=True)


@pytest.fixture(scope="module")
def fiboa_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rasterstats' polygons as fiboa 0.2 GeoParquet: ``id`` and ``fiboa_version`` columns."""
    gdf = _polygons()[["geometry"]].assign(id=IDS, fiboa_version="0.2.0",
                                           area=lambda d: d.area / 1e4)
    path = tmp_path_factory.mktemp("conv") / "fields.parquet"
    gdf.to_parquet(path)
    return path


def _rasterstats(stats: list[str]) -> list[dict[str, float]]:
    return rs_zonal_stats(_polygons().geometry, str(SLOPE), stats=stats)


def test_cli_wide_geoparquet_with_bbox_covering_and_fiboa_ids(store: str, fiboa_file: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "wide.parquet"
    res = CliRunner().invoke(main, ["stats", store, str(fiboa_file), "--out", str(out),
                                    "--stats", "count,mean,stdev", "--output", "wide",
                                    "--geometry", "--quiet"])
    assert res.exit_code == 0, res.output
    geo = json.loads(pq.read_schema(out).metadata[b"geo"])
    assert geo["version"] == "1.1.0"
    assert geo["columns"]["geometry"]["covering"]["bbox"] == {
        "xmin": ["bbox", "xmin"], "ymin": ["bbox", "ymin"],
        "xmax": ["bbox", "xmax"], "ymax": ["bbox", "ymax"]}
    table = pq.read_table(out)
    bbox = table.column("bbox").combine_chunks()
    assert isinstance(bbox, pa.StructArray)
    geoms = shapely.from_wkb(table.column("geometry").to_pylist())
    np.testing.assert_array_equal(
        np.stack([bbox.field(k).to_numpy() for k in ("xmin", "ymin", "xmax", "ymax")], axis=1),
        shapely.bounds(geoms))
    df = gpd.read_parquet(out)
    assert list(df.columns[:5]) == ["id", "time", "slope_count", "slope_mean", "slope_stdev"]
    assert list(df["id"]) == IDS
    theirs = _rasterstats(["count", "mean", "std"])
    assert list(df["slope_count"]) == [t["count"] for t in theirs]
    np.testing.assert_allclose(df["slope_mean"], [t["mean"] for t in theirs], rtol=1e-6)
    np.testing.assert_allclose(df["slope_stdev"], [t["std"] for t in theirs], rtol=1e-6)


def test_fiboa_metadata_alone_gives_the_id_column(store: str, tmp_path: Path) -> None:
    """A fiboa file whose version is in the Parquet metadata (key ``fiboa``), not a column."""
    gdf = _polygons()[["geometry"]].assign(id=IDS)
    path = tmp_path / "fields.parquet"
    gdf.to_parquet(path)
    table = pq.read_table(path)
    meta = dict(table.schema.metadata) | {b"fiboa": json.dumps(
        {"fiboa_version": "0.2.0", "fiboa_extensions": []}).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path)
    df = pz.open_store(store).zonal_stats(str(path), stats=["count"])
    assert df.columns[0] == "id"
    assert list(df["id"]) == IDS
    # without the metadata an `id` column is just a column: ids come from the index
    gdf.to_parquet(path)
    assert pz.open_store(store).zonal_stats(str(path), stats=["count"]).columns[0] == "parcel_id"


def test_cli_writes_the_vector_cube(store: str, fiboa_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "cube.nc"
    res = CliRunner().invoke(main, ["stats", store, str(fiboa_file), "--out", str(out),
                                    "--stats", "mean,max", "--output", "xarray", "--quiet"])
    assert res.exit_code == 0, res.output
    with xr.open_dataset(out) as ds:
        cube = ds.load().xvec.decode_cf()
    assert cube.xvec.geom_coords_indexed.xindexes["geometry"].crs == _polygons().crs
    assert list(cube["id"].to_numpy()) == IDS
    theirs = _rasterstats(["mean", "max"])
    np.testing.assert_allclose(cube["mean"].sel(band="slope").squeeze("time"),
                               [t["mean"] for t in theirs], rtol=1e-6)
    np.testing.assert_allclose(cube["max"].sel(band="slope").squeeze("time"),
                               [t["max"] for t in theirs], rtol=1e-6)
    bad = CliRunner().invoke(main, ["stats", store, str(fiboa_file), "--out",
                                    str(tmp_path / "c.parquet"), "--output", "xarray"])
    assert bad.exit_code != 0
    assert ".zarr, .nc" in bad.output


def test_cli_min_coverage_frac_equals_exactextract(store: str, tmp_path: Path) -> None:
    from exactextract import exact_extract
    from exactextract.raster import RasterioRasterSource

    parcels = tmp_path / "polygons.gpkg"
    _polygons().to_file(parcels)
    out = tmp_path / "s.csv"
    res = CliRunner().invoke(main, ["stats", store, str(parcels), "--out", str(out),
                                    "--stats", "count,mean", "--coverage",
                                    "--min-coverage-frac", "0.75", "--quiet"])
    assert res.exit_code == 0, res.output
    ours = pd.read_csv(out)
    with rasterio.open(SLOPE) as ds:
        theirs = exact_extract(RasterioRasterSource(ds), _polygons(),
                               ["count(min_coverage_frac=0.75)", "mean(min_coverage_frac=0.75)"],
                               output="pandas")
    np.testing.assert_allclose(ours["count"], theirs["count"], rtol=1e-6)
    np.testing.assert_allclose(ours["mean"], theirs["mean"], rtol=1e-6)


def test_cli_takes_crs_and_concurrency_as_the_python_api(store: str, tmp_path: Path) -> None:
    """A shapefile without .prj needs --crs (Python crs=); --concurrency 1 (one request in
    flight) gives the same statistics; both equal rasterstats."""
    import shutil

    for ext in (".shp", ".shx", ".dbf"):  # no .prj: the parcels declare no CRS
        shutil.copy(RS / f"polygons{ext}", tmp_path / f"noprj{ext}")
    parcels = tmp_path / "noprj.shp"
    out = tmp_path / "s.csv"
    with rasterio.open(SLOPE) as ds:
        crs = ds.crs.to_string()
    bare = CliRunner().invoke(main, ["stats", store, str(parcels), "--out", str(out),
                                     "--stats", "count,mean", "--quiet"])
    assert bare.exit_code == 2 and "no CRS" in bare.output
    res = CliRunner().invoke(main, ["stats", store, str(parcels), "--out", str(out),
                                    "--stats", "count,mean", "--crs", crs,
                                    "--concurrency", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    theirs = _rasterstats(["count", "mean"])
    assert list(df["count"]) == [t["count"] for t in theirs]
    np.testing.assert_allclose(df["mean"], [t["mean"] for t in theirs], rtol=1e-6)
    python = pz.open_store(store).zonal_stats(str(parcels), stats=["count", "mean"], crs=crs,
                                              concurrency=1)
    np.testing.assert_allclose(df["mean"], python["mean"], rtol=0)
    bad = CliRunner().invoke(main, ["stats", store, str(parcels), "--out", str(out),
                                    "--concurrency", "0", "--crs", crs])
    assert bad.exit_code == 2 and "--concurrency" in bad.output
