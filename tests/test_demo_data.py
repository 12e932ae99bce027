"""Synthetic demo data: parcel geometry invariants and GeoTIFF scene properties."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely

from parcelzarr.demo import (
    CropClass,
    generate_dates,
    generate_parcels,
    generate_scene,
    parcels_bounds_for_area,
    scene_bounds,
    season_dates,
)
from parcelzarr.demo._scene import nodata_mask
from parcelzarr.errors import GeometryError

CENTRE = (355_000.0, 4_445_000.0)
SIZE = 600  # px: 6 km square, 36 km²; 360 parcels is county density (~10 ha)
ORIGIN = (300_000.0, 4_500_000.0)
DATE = "20240615T165849"


@pytest.fixture(scope="module")
def county() -> gpd.GeoDataFrame:
    """1,000 parcels at DeWitt County density (~10 ha per parcel)."""
    return generate_parcels(parcels_bounds_for_area(*CENTRE, 100.0), n_parcels=1000, seed=3)


@pytest.fixture(scope="module")
def scene_parcels() -> gpd.GeoDataFrame:
    return generate_parcels(scene_bounds(size=SIZE, origin=ORIGIN), n_parcels=360, seed=1)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory, scene_parcels: gpd.GeoDataFrame) -> list[Path]:
    out = tmp_path_factory.mktemp("scene")
    return generate_scene(out, scene_parcels, size=SIZE, origin=ORIGIN, date=DATE, seed=5)


def _read(paths: list[Path]) -> dict[str, np.ndarray]:
    out = {}
    for p in paths:
        with rasterio.open(p) as src:
            out[src.descriptions[0]] = src.read(1).astype(np.float64)
    return out


# --- parcels --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 19, 150, 1000, 2500])
def test_exact_parcel_count_and_ids(n: int) -> None:
    gdf = generate_parcels(parcels_bounds_for_area(*CENTRE, n / 10), n_parcels=n)
    assert len(gdf) == n
    assert gdf["parcel_id"].tolist() == list(range(1, n + 1))
    assert gdf["crop"].between(1, 8).all()
    assert shapely.is_valid(gdf.geometry.values).all()


def test_columns_crs_and_bounds(county: gpd.GeoDataFrame) -> None:
    assert list(county.columns) == ["parcel_id", "crop", "geometry"]
    assert county.crs.to_epsg() == 32616
    assert county["parcel_id"].is_unique
    assert set(np.unique(county["crop"])) <= {int(c) for c in CropClass}
    box = shapely.box(*parcels_bounds_for_area(*CENTRE, 100.0))
    assert shapely.within(county.geometry.values, box).all()
    assert set(county.geom_type) == {"Polygon", "MultiPolygon"}


def test_no_overlaps(county: gpd.GeoDataFrame) -> None:
    geoms = county.geometry.values
    assert shapely.is_valid(geoms).all()
    union = shapely.union_all(geoms).area
    assert county.area.sum() == pytest.approx(union, rel=1e-9)
    # Gaps (roads) exist but are small: parcels cover most of the area.
    assert 0.85 < union / shapely.box(*county.total_bounds).area < 1.0


def test_special_cases_present(county: gpd.GeoDataFrame) -> None:
    geoms = county.geometry.values
    area = county.area.to_numpy()
    holes = shapely.get_num_interior_rings(geoms) > 0
    multis = shapely.get_type_id(geoms) == shapely.GeometryType.MULTIPOLYGON
    assert 0.02 <= holes.mean() <= 0.04
    assert 0.02 <= multis.mean() <= 0.04
    assert ((area < 100) & (area > 10)).sum() >= 3  # sub-pixel parcels
    assert ((area >= 500) & (area <= 10_000)).sum() >= 50  # small lots, 0.05–1 ha
    # Slivers: 8 m wide, much longer than wide.
    rect = shapely.oriented_envelope(geoms)
    corners = shapely.get_coordinates(rect).reshape(-1, 5, 2)
    sides = np.linalg.norm(np.diff(corners[:, :3], axis=1), axis=2)
    widths = sides.min(axis=1)
    slivers = (widths > 7.0) & (widths < 9.0) & (area > 150 * 8)
    assert slivers.sum() >= 5


def test_size_distribution(county: gpd.GeoDataFrame) -> None:
    ha = county.area.to_numpy() / 1e4
    assert 1.0 <= np.median(ha) <= 60.0
    assert ((ha >= 1) & (ha <= 60)).mean() > 0.6
    assert ha.max() > 60  # long tail
    assert ha.max() < 300


def test_edges_not_pixel_aligned(county: gpd.GeoDataFrame) -> None:
    xy = shapely.get_coordinates(county.geometry.values)
    on_grid = np.isclose(np.mod(xy, 10.0), 0.0, atol=0.01) | np.isclose(np.mod(xy, 10.0), 10.0)
    assert on_grid.mean() < 0.01


def test_deterministic_for_seed() -> None:
    bounds = parcels_bounds_for_area(*CENTRE, 30.0)
    a = generate_parcels(bounds, n_parcels=300, seed=11)
    b = generate_parcels(bounds, n_parcels=300, seed=11)
    c = generate_parcels(bounds, n_parcels=300, seed=12)
    assert shapely.equals_exact(a.geometry.values, b.geometry.values, tolerance=0).all()
    assert (a["crop"].to_numpy() == b["crop"].to_numpy()).all()
    assert not np.allclose(a.total_bounds, c.total_bounds) or not np.allclose(
        a.area.to_numpy(), c.area.to_numpy()
    )


def test_bounds_for_area() -> None:
    xmin, ymin, xmax, ymax = parcels_bounds_for_area(1000.0, 2000.0, 1050.0)
    assert (xmax - xmin) * (ymax - ymin) == pytest.approx(1050e6)
    assert ((xmin + xmax) / 2, (ymin + ymax) / 2) == pytest.approx((1000.0, 2000.0))
    with pytest.raises(ValueError, match="area_km2"):
        parcels_bounds_for_area(0.0, 0.0, 0.0)


def test_invalid_parcel_arguments() -> None:
    with pytest.raises(ValueError, match="n_parcels"):
        generate_parcels((0, 0, 1000, 1000), n_parcels=0)
    with pytest.raises(TypeError, match="n_parcels"):
        generate_parcels((0, 0, 1000, 1000), n_parcels=10.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bounds"):
        generate_parcels((0, 0, -10, 1000), n_parcels=10)


# --- scene ----------------------------------------------------------------------------------


def test_scene_files_and_profile(scene: list[Path]) -> None:
    assert [p.name for p in scene] == [
        f"T16TCK_{DATE}_{b}_10m.tif" for b in ("B02", "B03", "B04", "B08")
    ]
    for path in scene:
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32616
            assert src.transform == rasterio.Affine(10.0, 0.0, ORIGIN[0], 0.0, -10.0, ORIGIN[1])
            assert (src.width, src.height, src.count) == (SIZE, SIZE, 1)
            assert src.dtypes[0] == "uint16"
            assert src.nodata == 0
            assert src.block_shapes == [(512, 512)]
            assert src.profile["tiled"]
            assert src.compression == rasterio.enums.Compression.deflate
            assert src.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == "2"


def test_nodata_region(scene: list[Path]) -> None:
    mask = nodata_mask(0, SIZE, SIZE)
    assert 0.05 <= mask.mean() <= 0.12
    assert mask[0, -1]  # swath edge in the top-right corner
    assert not mask[-1, 0]
    assert mask.all(axis=1).sum() == 3  # three lost rows
    for band, values in _read(scene).items():
        assert (values[mask] == 0).all(), band
        assert (values[~mask] >= 1).all(), band


def test_values_follow_crop_class(scene: list[Path], scene_parcels: gpd.GeoDataFrame) -> None:
    v = _read(scene)
    with rasterio.open(scene[0]) as src:
        crop = rasterio.features.rasterize(
            zip(scene_parcels.geometry, scene_parcels["crop"], strict=True),
            out_shape=(SIZE, SIZE),
            transform=src.transform,
            dtype="uint8",
        )
    valid = v["B04"] > 0
    nir, red = v["B08"] - 1000, v["B04"] - 1000
    ndvi = (nir - red) / (nir + red)

    def mean(values: np.ndarray, cls: CropClass) -> float:
        sel = (crop == cls) & valid
        assert sel.sum() > 100, cls
        return float(values[sel].mean())

    assert mean(ndvi, CropClass.CORN) > 0.6
    assert mean(ndvi, CropClass.FALLOW) < 0.35
    assert mean(ndvi, CropClass.CORN) > mean(ndvi, CropClass.FALLOW) + 0.3
    assert mean(v["B08"], CropClass.CORN) > 4000
    assert mean(v["B04"], CropClass.CORN) < 1800
    assert mean(v["B04"], CropClass.FALLOW) > 2000
    assert mean(ndvi, CropClass.GRASSLAND) > mean(ndvi, CropClass.BUILT)
    # Parcels differ from each other within a class, and pixels within a parcel vary.
    assert v["B08"][(crop == CropClass.CORN) & valid].std() > 50


def test_scene_is_deterministic(
    tmp_path: Path, scene: list[Path], scene_parcels: gpd.GeoDataFrame
) -> None:
    again = generate_scene(tmp_path, scene_parcels, size=SIZE, origin=ORIGIN, date=DATE, seed=5)
    a, b = _read(scene), _read(again)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    only_nir = generate_scene(
        tmp_path / "nir", scene_parcels, size=SIZE, origin=ORIGIN, date=DATE, seed=5, bands=["B08"]
    )
    assert np.array_equal(_read(only_nir)["B08"], a["B08"])


def test_cache_and_overwrite(tmp_path: Path, scene_parcels: gpd.GeoDataFrame) -> None:
    def make(parcels: gpd.GeoDataFrame, *, seed: int = 0, overwrite: bool = False) -> list[Path]:
        return generate_scene(
            tmp_path,
            parcels,
            size=256,
            origin=ORIGIN,
            bands=("B04", "B08"),
            seed=seed,
            overwrite=overwrite,
        )

    def mtimes() -> list[int]:
        return [p.stat().st_mtime_ns for p in paths]

    paths = make(scene_parcels)
    sidecar = json.loads((tmp_path / "scene.json").read_text())
    assert sidecar["scenes"][f"T16TCK_{DATE}"]["n_parcels"] == len(scene_parcels)
    before = mtimes()

    assert make(scene_parcels) == paths  # cached: nothing rewritten
    assert mtimes() == before
    make(scene_parcels.to_crs("EPSG:4326"))  # a CRS round trip is the same parcels
    assert mtimes() == before

    make(scene_parcels, overwrite=True)
    after = mtimes()
    assert all(a > b for a, b in zip(after, before, strict=True))

    # Different parcels or seed invalidate the cache.
    make(scene_parcels.iloc[:-1])
    again = mtimes()
    assert all(a > b for a, b in zip(again, after, strict=True))
    make(scene_parcels.iloc[:-1], seed=9)
    assert all(a > b for a, b in zip(mtimes(), again, strict=True))


def test_time_series_follows_season(tmp_path: Path, scene_parcels: gpd.GeoDataFrame) -> None:
    dates = season_dates()
    assert len(dates) == 12
    assert dates[0].startswith("202404")
    assert dates[-1].startswith("202410")
    chosen = [dates[0], dates[5]]  # April (bare fields), July (full canopy)
    series = generate_dates(
        tmp_path, scene_parcels, dates=chosen, size=256, origin=ORIGIN, bands=("B04", "B08")
    )
    assert list(series) == chosen
    with rasterio.open(series[chosen[0]][0]) as src:
        crop = rasterio.features.rasterize(
            zip(scene_parcels.geometry, scene_parcels["crop"], strict=True),
            out_shape=(256, 256),
            transform=src.transform,
            dtype="uint8",
        )
    ndvi = {}
    for date, paths in series.items():
        assert [p.name for p in paths] == [
            f"T16TCK_{date}_B04_10m.tif",
            f"T16TCK_{date}_B08_10m.tif",
        ]
        v = _read(paths)
        sel = (crop == CropClass.CORN) & (v["B04"] > 0)
        red, nir = v["B04"][sel] - 1000, v["B08"][sel] - 1000
        ndvi[date] = float(((nir - red) / (nir + red)).mean())
    assert ndvi[chosen[1]] > ndvi[chosen[0]] + 0.3
    scenes = json.loads((tmp_path / "scene.json").read_text())["scenes"]
    assert set(scenes) == {f"T16TCK_{d}" for d in chosen}


def test_scene_reprojects_parcels(tmp_path: Path, scene_parcels: gpd.GeoDataFrame) -> None:
    paths = generate_scene(
        tmp_path, scene_parcels.to_crs("EPSG:4326"), size=128, origin=ORIGIN, bands=("B08",)
    )
    with rasterio.open(paths[0]) as src:
        assert src.crs.to_epsg() == 32616


def test_scene_rejects_bad_input(tmp_path: Path, scene_parcels: gpd.GeoDataFrame) -> None:
    with pytest.raises(ValueError, match="multiple of 60"):
        generate_scene(tmp_path, scene_parcels, size=64, origin=(300_010.0, 4_500_000.0))
    with pytest.raises(ValueError, match="bands"):
        generate_scene(tmp_path, scene_parcels, size=64, bands=("B05",))
    with pytest.raises(ValueError, match="date"):
        generate_scene(tmp_path, scene_parcels, size=64, date="2024-06-15")
    with pytest.raises(GeometryError, match="crop"):
        generate_scene(tmp_path, scene_parcels.drop(columns="crop"), size=64)
    with pytest.raises(GeometryError, match="CRS"):
        generate_scene(tmp_path, scene_parcels.set_crs(None, allow_override=True), size=64)
