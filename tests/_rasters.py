"""Small GeoTIFFs and parcels made in code for the tests (no data files in the repository)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.transform import from_origin

#: Real rasters and parcels shared beside the repository (never copied into it).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

CRS = "EPSG:32616"
ORIGIN = (300_020.0, 4_500_040.0)  # on the 10 m grid, deliberately not on the 2560 m lattice
BANDS = ("B02", "B03", "B04", "B08")


def write_tif(path: Path, data: np.ndarray, *, origin: tuple[float, float] = ORIGIN,
              res: float = 10.0, crs: str = CRS, nodata: float | None = 0,
              block: int = 256) -> Path:
    """Write one single-band tiled DEFLATE GeoTIFF."""
    height, width = data.shape
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": data.dtype,
        "crs": crs, "transform": from_origin(origin[0], origin[1], res, res), "nodata": nodata,
        "tiled": True, "blockxsize": block, "blockysize": block, "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data, 1)
    return path


def scene_data(shape: tuple[int, int], seed: int) -> np.ndarray:
    """uint16 field-like pattern with noise and a nodata (0) margin and corner wedge."""
    rng = np.random.default_rng(seed)
    h, w = shape
    fields = rng.integers(500, 6000, size=(h // 37 + 1, w // 41 + 1))
    data = np.repeat(np.repeat(fields, 37, axis=0), 41, axis=1)[:h, :w]
    data = (data + rng.integers(0, 400, size=shape)).astype("uint16")
    data[:, :7] = 0  # nodata margin
    yy, xx = np.mgrid[:h, :w]
    data[(yy + xx) < min(h, w) // 5] = 0  # swath-edge wedge
    return data


def make_scene(folder: Path, *, shape: tuple[int, int] = (650, 700), date: str =
               "20240615T165849", tile: str = "T16TCK", bands: Sequence[str] = BANDS,
               origin: tuple[float, float] = ORIGIN, seed: int = 0) -> list[Path]:
    """Sentinel-2 named band files of one tile and date."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_tif(folder / f"{tile}_{date}_{band}_10m.tif", scene_data(shape, seed + i),
                  origin=origin)
        for i, band in enumerate(bands)
    ]


def make_parcels(shape: tuple[int, int] = (650, 700), origin: tuple[float, float] = ORIGIN,
                 n: int = 60, seed: int = 3) -> gpd.GeoDataFrame:
    """Parcels over the scene: polygons, holes, multipolygons, sub-pixel, slivers, edge-crossing,
    overlapping and outside ones, in the scene CRS."""
    rng = np.random.default_rng(seed)
    x0, y0 = origin
    w, h = shape[1] * 10.0, shape[0] * 10.0
    geoms: list[shapely.Geometry] = []
    for _ in range(n):
        cx, cy = x0 + rng.uniform(0, w), y0 - rng.uniform(0, h)
        r = rng.uniform(20, 400)
        k = rng.integers(5, 9)
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = r * rng.uniform(0.6, 1.0, k)
        geoms.append(shapely.Polygon(np.c_[cx + rad * np.cos(ang), cy + rad * np.sin(ang)]))
    big = shapely.box(x0 + 1003, y0 - 2507, x0 + 1811, y0 - 1693)
    geoms.append(big.difference(shapely.box(x0 + 1203, y0 - 2207, x0 + 1411, y0 - 1993)))  # hole
    geoms.append(shapely.MultiPolygon([shapely.box(x0 + 3001, y0 - 3001, x0 + 3333, y0 - 2777),
                                       shapely.box(x0 + 3501, y0 - 3001, x0 + 3777, y0 - 2801)]))
    geoms.append(shapely.box(x0 + 4001, y0 - 4001, x0 + 4004, y0 - 3998))  # sub-pixel, no centre
    geoms.append(shapely.box(x0 + 4012, y0 - 4018, x0 + 4018, y0 - 4012))  # sub-pixel w/ centre
    geoms.append(shapely.box(x0 + 2003, y0 - 5003, x0 + 2011, y0 - 4203))  # 8 m sliver
    geoms.append(shapely.box(x0 + w - 200, y0 - 800, x0 + w + 300, y0 - 500))  # crosses east edge
    geoms.append(shapely.box(x0 + 10003, y0 + 5000, x0 + 10400, y0 + 5400))  # outside
    geoms.append(shapely.box(x0 + 1500, y0 - 2400, x0 + 1900, y0 - 2100))  # overlaps the holed one
    geoms.append(shapely.Polygon())  # empty
    return gpd.GeoDataFrame({"field": [f"f{i:03d}" for i in range(len(geoms))]},
                            geometry=geoms, crs=CRS)
