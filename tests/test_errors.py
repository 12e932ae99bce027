"""Bad input gets a clear error that names the problem, and writes nothing."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

import parcelzarr as pz
from parcelzarr.errors import (
    BandNotFoundError,
    GeometryError,
    InvalidSourceError,
    SourceNotFoundError,
)

from ._rasters import make_parcels, make_scene, write_tif


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> pz.ParcelStore:
    root = tmp_path_factory.mktemp("err")
    scene = make_scene(root / "scene", shape=(200, 220))
    pz.ingest([str(p) for p in scene], str(root / "s.zarr"), quiet=True)
    return pz.open_store(str(root / "s.zarr"))


def test_source_path_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match="matches no file"):
        pz.ingest(str(tmp_path / "nope" / "T16TCK_20240615T165849_B04_10m.tif"),
                  str(tmp_path / "s.zarr"))
    with pytest.raises(SourceNotFoundError, match="matches no file"):
        pz.ingest(str(tmp_path / "*.tif"), str(tmp_path / "s.zarr"))
    assert not (tmp_path / "s.zarr" / "zarr.json").exists()


def test_source_is_not_a_geotiff(tmp_path: Path) -> None:
    bad = tmp_path / "T16TCK_20240615T165849_B04_10m.tif"
    bad.write_text("this is not an image")
    with pytest.raises(InvalidSourceError, match="not a readable GeoTIFF"):
        pz.ingest(str(bad), str(tmp_path / "s.zarr"))


def test_source_without_crs(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "T16TCK_20240615T165849_B04_10m.tif",
                     np.ones((20, 20), "uint16"), crs=None)  # type: ignore[arg-type]
    with pytest.raises(InvalidSourceError, match="not georeferenced"):
        pz.ingest(str(path), str(tmp_path / "s.zarr"))


def test_source_band_unknown_without_flag(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "landcover.tif", np.ones((20, 20), "uint8"))
    with pytest.raises(InvalidSourceError, match="--band NAME"):
        pz.ingest(str(path), str(tmp_path / "s.zarr"))
    with pytest.raises(InvalidSourceError, match="--time"):
        pz.ingest(str(path), str(tmp_path / "s.zarr"), band="lc")
    report = pz.ingest(str(path), str(tmp_path / "s.zarr"), band="lc", time="2021-01-01")
    assert report.sources_written == 1


def test_unknown_band(store: pz.ParcelStore) -> None:
    parcels = make_parcels(shape=(200, 220), n=3)
    with pytest.raises(BandNotFoundError, match=r"B99.*B02"):
        store.zonal_stats(parcels, bands=["B99"])
    with pytest.raises(BandNotFoundError, match="unknown index"):
        store.zonal_stats(parcels, indices=["nbr2x"])


def test_unknown_statistic(store: pz.ParcelStore) -> None:
    with pytest.raises(ValueError, match="unknown statistic 'avg'"):
        store.zonal_stats(make_parcels(shape=(200, 220), n=3), stats=["avg"])


def test_parcels_without_crs(store: pz.ParcelStore, tmp_path: Path) -> None:
    gdf = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)])
    with pytest.raises(GeometryError, match="no CRS"):
        store.zonal_stats(gdf)
    path = tmp_path / "nocrs.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", '
                    '"properties": {}, "geometry": {"type": "Point", "coordinates": [1, 2]}}]}')
    with pytest.raises(GeometryError, match="not polygons"):
        store.zonal_stats(str(path))


def test_parcels_file_missing_or_bad(store: pz.ParcelStore, tmp_path: Path) -> None:
    with pytest.raises(GeometryError, match="does not exist"):
        store.zonal_stats(str(tmp_path / "missing.gpkg"))
    junk = tmp_path / "junk.gpkg"
    junk.write_bytes(b"\x00junk")
    with pytest.raises(GeometryError, match="cannot read parcels"):
        store.zonal_stats(str(junk))


def test_id_column_problems(store: pz.ParcelStore) -> None:
    parcels = make_parcels(shape=(200, 220), n=3)
    with pytest.raises(GeometryError, match="id column 'fid'"):
        store.zonal_stats(parcels, id_column="fid")
    dup = parcels.assign(field="same")
    with pytest.raises(GeometryError, match="not unique"):
        store.zonal_stats(dup, id_column="field")


def test_read_outside_coverage(store: pz.ParcelStore) -> None:
    with pytest.raises(GeometryError, match="outside the store's coverage"):
        store.read(shapely.box(10, 10, 10.01, 10.01), crs="EPSG:4326")


def test_unknown_crs(store: pz.ParcelStore) -> None:
    from parcelzarr.errors import UnknownCRSError

    with pytest.raises(UnknownCRSError):
        store.zonal_stats(shapely.box(0, 0, 1, 1), crs="EPSG:999999")
