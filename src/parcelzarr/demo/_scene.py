"""Synthetic Sentinel-2 L2A 10 m scenes painted from parcels, written as GeoTIFFs.

Each parcel's crop class gets a seasonal spectrum (soil/canopy mix driven by a double-logistic
phenology curve), varied per parcel (planting date, vigour, soil brightness) and per pixel
(within-field texture, sensor noise). Pixels outside parcels are roads inside the parcel area
and a grass/forest texture elsewhere. A diagonal swath edge and a few missing rows are nodata.
DN follow processing baseline 04.00: ``DN = reflectance * 10000 + 1000``, uint16, nodata 0.

Rendering (:func:`render_strip`) is pure numpy; :func:`generate_scene` rasterizes the parcels and
writes the GeoTIFFs strip by strip, so memory stays small even for a full 10980² tile.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window

from parcelzarr._sentinel2 import BANDS_10M, BOA_ADD_OFFSET, QUANTIFICATION_VALUE
from parcelzarr.errors import GeometryError

from ._parcels import CropClass

__all__ = [
    "BANDS_10M",
    "SceneSpec",
    "band_levels",
    "generate_dates",
    "generate_scene",
    "nodata_mask",
    "render_strip",
    "scene_bounds",
    "season_dates",
]

logger = logging.getLogger(__name__)

PIXEL_SIZE = 10.0
BLOCK = 512  # GeoTIFF tile size, and the strip height used for writing
_GENERATOR_VERSION = 1  # bump when the pixels change, so cached scenes are regenerated
_SIDECAR = "scene.json"
_GDAL_CACHE_MB = 128
_TILE_RE = re.compile(r"T\d{2}[C-X][A-Z]{2}")
_DATE_RE = re.compile(r"\d{8}T\d{6}")

# Reflectance of bands B02, B03, B04, B08 per CropClass (row index = class code; row 0 unused).
# "soil" is the surface without green vegetation, "canopy" full green cover.
_SOIL = np.array(
    [
        [0.0, 0.0, 0.0, 0.0],
        [0.070, 0.095, 0.120, 0.190],  # corn: dark moist mollisol
        [0.070, 0.095, 0.120, 0.190],  # soybean
        [0.080, 0.110, 0.140, 0.240],  # winter wheat: stubble / senesced
        [0.060, 0.090, 0.110, 0.220],  # grassland: dry grass
        [0.050, 0.070, 0.080, 0.170],  # forest: leaf-off
        [0.090, 0.120, 0.155, 0.220],  # fallow: bright bare soil
        [0.090, 0.100, 0.110, 0.150],  # built: roofs, asphalt
        [0.040, 0.050, 0.030, 0.015],  # water
    ]
)
_CANOPY = np.array(
    [
        [0.0, 0.0, 0.0, 0.0],
        [0.025, 0.060, 0.030, 0.450],
        [0.030, 0.065, 0.035, 0.470],
        [0.030, 0.060, 0.035, 0.380],
        [0.035, 0.070, 0.045, 0.340],
        [0.020, 0.045, 0.025, 0.330],
        [0.035, 0.070, 0.045, 0.320],
        [0.030, 0.060, 0.040, 0.330],  # lawns and street trees
        [0.040, 0.050, 0.030, 0.015],
    ]
)
# Green-cover curve per class: f_min, f_max, start/end of season (day of year), rise/fall days.
_PHENOLOGY = np.array(
    [
        [0.00, 0.00, 180, 270, 10, 10],
        [0.00, 0.95, 158, 262, 8, 10],  # corn: planted early May, canopy closes early July
        [0.00, 0.95, 178, 258, 7, 8],  # soybean: later
        [0.05, 0.85, 95, 168, 10, 6],  # winter wheat: green in spring, harvested late June
        [0.30, 0.85, 110, 285, 12, 15],  # grassland
        [0.00, 0.95, 118, 292, 6, 10],  # forest: leaf-on
        [0.02, 0.15, 150, 250, 15, 15],  # fallow: a few weeds
        [0.15, 0.35, 115, 290, 10, 15],  # built
        [0.00, 0.00, 180, 270, 10, 10],  # water
    ]
)
_ROAD = np.array([0.100, 0.110, 0.120, 0.160])
_HAZE = np.array([0.008, 0.005, 0.003, 0.001])  # max additive haze per date
_BAND_INDEX = {b: i for i, b in enumerate(BANDS_10M)}


@dataclass(frozen=True)
class SceneSpec:
    """What one synthetic scene is: grid, naming and randomness. Hashable, JSON-able."""

    size: int
    tile: str
    date: str
    origin: tuple[float, float]
    bands: tuple[str, ...]
    seed: int
    crs: str

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int | np.integer):
            raise TypeError(f"size must be an int, got {type(self.size).__name__}")
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        if not _TILE_RE.fullmatch(self.tile):
            raise ValueError(f"tile must look like 'T16TCK', got {self.tile!r}")
        if not _DATE_RE.fullmatch(self.date):
            raise ValueError(f"date must look like '20240615T165849', got {self.date!r}")
        dt.datetime.strptime(self.date, "%Y%m%dT%H%M%S")  # raises ValueError when impossible
        unknown = [b for b in self.bands if b not in _BAND_INDEX]
        if unknown or not self.bands or len(set(self.bands)) != len(self.bands):
            raise ValueError(
                f"bands must be distinct 10 m bands from {BANDS_10M}, got {self.bands!r}"
            )
        if any(not math.isclose(v / 60.0, round(v / 60.0)) for v in self.origin):
            raise ValueError(f"origin must be a multiple of 60 m (Sentinel-2 grid): {self.origin}")

    @property
    def transform(self) -> Affine:
        """Affine transform of the 10 m grid (top-left corner at ``origin``)."""
        return Affine(PIXEL_SIZE, 0.0, self.origin[0], 0.0, -PIXEL_SIZE, self.origin[1])

    def strip_transform(self, row0: int) -> Affine:
        """Affine transform of the strip of rows starting at ``row0``."""
        x0, y0 = self.origin
        return Affine(PIXEL_SIZE, 0.0, x0, 0.0, -PIXEL_SIZE, y0 - row0 * PIXEL_SIZE)

    @property
    def day_of_year(self) -> int:
        """Day of year of ``date``, which drives the phenology."""
        return dt.datetime.strptime(self.date, "%Y%m%dT%H%M%S").timetuple().tm_yday

    def file_name(self, band: str) -> str:
        """Sentinel-2 style name, e.g. ``T16TCK_20240615T165849_B04_10m.tif``."""
        return f"{self.tile}_{self.date}_{band}_10m.tif"

    @property
    def key(self) -> str:
        """Sidecar key of this scene: ``{tile}_{date}``."""
        return f"{self.tile}_{self.date}"

    def seed_sequence(self, *words: int) -> np.random.SeedSequence:
        """Seed for a random stream of this scene (date-dependent) and ``words``."""
        return np.random.SeedSequence([self.seed, int(self.date[:8]), *words])


def scene_bounds(
    *, size: int = 5490, origin: tuple[float, float] = (300000.0, 4500000.0)
) -> tuple[float, float, float, float]:
    """``(xmin, ymin, xmax, ymax)`` of a ``size``² scene of 10 m pixels with top-left ``origin``.

    Examples
    --------
    >>> scene_bounds(size=100, origin=(300000.0, 4500000.0))
    (300000.0, 4499000.0, 301000.0, 4500000.0)
    """
    x0, y0 = float(origin[0]), float(origin[1])
    return (x0, y0 - size * PIXEL_SIZE, x0 + size * PIXEL_SIZE, y0)


# --- pure computation -----------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _green_cover(classes: np.ndarray, doy: float, shift: np.ndarray | float = 0.0) -> np.ndarray:
    """Fraction of green canopy for each class on day ``doy`` (phenology shifted by days)."""
    fmin, fmax, sos, eos, k_up, k_down = _PHENOLOGY[classes].T
    rise = _sigmoid((doy - sos - shift) / k_up)
    fall = _sigmoid((doy - eos - shift) / k_down)
    return fmin + (fmax - fmin) * np.clip(rise - fall, 0.0, 1.0)


def _to_dn(reflectance: np.ndarray) -> np.ndarray:
    return reflectance * QUANTIFICATION_VALUE - BOA_ADD_OFFSET  # baseline 04.00


def band_levels(crops: np.ndarray, spec: SceneSpec) -> np.ndarray:
    """Mean DN of every parcel in every band on the scene's date.

    Per-parcel traits (phenology shift, vigour, soil brightness, band gains) depend on the seed
    only, so a parcel keeps its character across dates; the date sets the season and haze.

    Parameters
    ----------
    crops
        Crop class (1..8) per parcel, in label order (label ``i + 1`` is ``crops[i]``).
    spec
        The scene.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(len(crops) + 1, len(spec.bands))``; row 0 (background) is unused.
    """
    crops = np.asarray(crops, dtype=np.int64)
    if crops.size and (crops.min() < 1 or crops.max() > len(CropClass)):
        raise ValueError(f"crop classes must be in 1..{len(CropClass)}")
    n = len(crops)
    traits = np.random.default_rng(np.random.SeedSequence([spec.seed, 7001]))
    shift = traits.normal(0.0, 7.0, n)  # days
    vigour = traits.uniform(0.85, 1.05, n)
    soil_gain = traits.normal(1.0, 0.08, n)
    band_gain = traits.normal(1.0, 0.02, (n, len(BANDS_10M)))

    cover = np.clip(_green_cover(crops, spec.day_of_year, shift) * vigour, 0.0, 1.0)
    refl = (
        _SOIL[crops] * soil_gain[:, None] * (1.0 - cover[:, None]) + _CANOPY[crops] * cover[:, None]
    ) * band_gain
    haze = np.random.default_rng(spec.seed_sequence(7002)).uniform() * _HAZE
    idx = [_BAND_INDEX[b] for b in spec.bands]
    levels = np.zeros((n + 1, len(idx)), dtype=np.float32)
    levels[1:] = _to_dn(refl + haze)[:, idx]
    return levels


def _background_levels(spec: SceneSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DN of roads, open grassland and forest on the scene's date, each shape ``(bands,)``."""
    idx = [_BAND_INDEX[b] for b in spec.bands]
    doy = spec.day_of_year
    out = []
    for cls in (CropClass.GRASSLAND, CropClass.FOREST):
        f = float(_green_cover(np.array([cls]), doy)[0])
        out.append(_to_dn(_SOIL[cls] * (1 - f) + _CANOPY[cls] * f)[idx].astype(np.float32))
    return _to_dn(_ROAD)[idx].astype(np.float32), out[0], out[1]


def nodata_mask(row0: int, nrows: int, size: int) -> np.ndarray:
    """Nodata pixels of rows ``row0 .. row0 + nrows`` of a ``size``² scene.

    A slanted swath edge cuts off the top-right corner (~8 % of the tile, from 45 % of the
    width on the first row to the right edge at 30 % of the height), and three rows at 71 % of
    the height are missing, as after a lost packet.
    """
    rows = np.arange(row0, row0 + nrows, dtype=np.float64)[:, None]
    cols = np.arange(size, dtype=np.float64)[None, :] + 0.5
    edge = 0.45 * size + (0.55 / 0.30) * (rows + 0.5)
    mask = cols > edge
    lost = int(0.71 * size)
    mask[(rows[:, 0] >= lost) & (rows[:, 0] < lost + 3)] = True
    return mask


def _noise_grid(spec: SceneSpec, cell: int, word: int) -> np.ndarray:
    """Random values on a coarse grid of ``cell``-pixel spacing covering the scene."""
    n = spec.size // cell + 2
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, word]))
    return rng.uniform(-1.0, 1.0, (n, n)).astype(np.float32)


def _upsample(grid: np.ndarray, cell: int, row0: int, nrows: int, ncols: int) -> np.ndarray:
    """Bilinear interpolation of ``grid`` (one value per ``cell`` px) onto a strip of pixels."""
    r = (np.arange(row0, row0 + nrows, dtype=np.float32) + 0.5) / cell
    c = (np.arange(ncols, dtype=np.float32) + 0.5) / cell
    r0, c0 = r.astype(np.int64), c.astype(np.int64)
    fr, fc = (r - r0)[:, None], (c - c0)[None, :]
    rows = grid[r0] * (1 - fr) + grid[r0 + 1] * fr  # (nrows, ncells)
    return rows[:, c0] * (1 - fc) + rows[:, c0 + 1] * fc


def _texture(spec: SceneSpec, row0: int, nrows: int) -> np.ndarray:
    """Smooth land texture in about [-1, 1] (two octaves: 480 m and 120 m), date-independent."""
    coarse = _upsample(_noise_grid(spec, 48, 7101), 48, row0, nrows, spec.size)
    fine = _upsample(_noise_grid(spec, 12, 7102), 12, row0, nrows, spec.size)
    return 0.7 * coarse + 0.3 * fine


def render_strip(
    labels: np.ndarray,
    row0: int,
    spec: SceneSpec,
    levels: np.ndarray,
    *,
    parcel_area: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Pixel values of one strip of rows for every band of the scene.

    Parameters
    ----------
    labels
        int32 ``(nrows, size)``: parcel label (row of ``levels``) per pixel, 0 outside parcels.
    row0
        First row of the strip in the scene.
    spec
        The scene (bands, size, seed, date).
    levels
        Output of :func:`band_levels`.
    parcel_area
        ``(row_min, row_max, col_min, col_max)`` pixel box of the parcels: unlabelled pixels in
        it are roads, outside it natural grass/forest texture. ``None``: all natural.

    Returns
    -------
    numpy.ndarray
        uint16 ``(len(spec.bands), nrows, size)``; 0 exactly on :func:`nodata_mask`, >= 1 elsewhere.
    """
    nrows, ncols = labels.shape
    tex = _texture(spec, row0, nrows)
    background = labels == 0
    road = np.zeros_like(background)
    if parcel_area is not None:
        r_lo, r_hi, c_lo, c_hi = parcel_area
        lo, hi = max(r_lo - row0, 0), min(r_hi - row0, nrows)
        if hi > lo:
            road[lo:hi, max(c_lo, 0) : max(c_hi, 0)] = True
        road &= background
    forest_w = np.clip(0.5 + 0.9 * tex, 0.0, 1.0)
    nodata = nodata_mask(row0, nrows, ncols)
    road_dn, grass_dn, forest_dn = _background_levels(spec)
    out = np.empty((len(spec.bands), nrows, ncols), dtype=np.uint16)
    for b in range(len(spec.bands)):
        band_id = _BAND_INDEX[spec.bands[b]]  # same pixels whichever bands are requested
        rng = np.random.default_rng(spec.seed_sequence(7201, row0, band_id))
        value = np.ascontiguousarray(levels[:, b])[labels]
        value *= 1.0 + 0.03 * tex  # within-field variation (soil moisture, yield)
        natural = grass_dn[b] + (forest_dn[b] - grass_dn[b]) * forest_w
        value = np.where(background, np.where(road, np.float32(road_dn[b]), natural), value)
        noise = rng.standard_normal((nrows, ncols), dtype=np.float32)
        value += noise * (12.0 + 0.02 * value)
        np.clip(value, 1.0, 65535.0, out=value)
        band = np.rint(value).astype(np.uint16)
        band[nodata] = 0
        out[b] = band
    return out


# --- I/O ------------------------------------------------------------------------------------


def _parcel_fingerprint(parcels: gpd.GeoDataFrame) -> str:
    """Hash of parcel bounds and crop classes (cheap; enough to tell parcel sets apart).

    Bounds are rounded to 1 cm so that parcels saved in another CRS (e.g. GeoParquet in
    EPSG:4326) and reprojected back still hit the cache.
    """
    h = hashlib.sha256()
    bounds = np.round(shapely.bounds(parcels.geometry.values), 2) + 0.0  # + 0.0: no -0.0
    h.update(np.ascontiguousarray(bounds).tobytes())
    h.update(np.ascontiguousarray(parcels["crop"].to_numpy(dtype=np.int64)).tobytes())
    return h.hexdigest()


def _cache_record(spec: SceneSpec, parcels: gpd.GeoDataFrame) -> dict[str, object]:
    record: dict[str, object] = asdict(spec)
    record["origin"] = list(spec.origin)
    record["bands"] = list(spec.bands)
    record["n_parcels"] = len(parcels)
    record["parcels_sha256"] = _parcel_fingerprint(parcels)
    record["generator_version"] = _GENERATOR_VERSION
    return record


def _read_sidecar(out_dir: Path) -> dict[str, dict[str, object]]:
    path = out_dir / _SIDECAR
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        logger.warning("ignoring unreadable %s", path)
        return {}
    scenes = data.get("scenes", {}) if isinstance(data, dict) else {}
    return scenes if isinstance(scenes, dict) else {}


def _write_sidecar(out_dir: Path, key: str, record: dict[str, object]) -> None:
    scenes = _read_sidecar(out_dir)
    scenes[key] = record
    tmp = out_dir / (_SIDECAR + ".partial")
    tmp.write_text(json.dumps({"scenes": scenes}, indent=1, sort_keys=True))
    os.replace(tmp, out_dir / _SIDECAR)


def _prepare_parcels(parcels: gpd.GeoDataFrame, crs: str) -> gpd.GeoDataFrame:
    """Check the parcels and reproject them to the scene CRS."""
    if not isinstance(parcels, gpd.GeoDataFrame):
        raise TypeError(f"parcels must be a GeoDataFrame, got {type(parcels).__name__}")
    if parcels.crs is None:
        raise GeometryError("parcels have no CRS; set one (e.g. gdf.set_crs('EPSG:32616'))")
    if "crop" not in parcels.columns:
        raise GeometryError("parcels need a 'crop' column of class codes 1..8")
    return parcels if parcels.crs == crs else parcels.to_crs(crs)


def generate_scene(
    out_dir: Path,
    parcels: gpd.GeoDataFrame,
    *,
    size: int = 5490,
    tile: str = "T16TCK",
    date: str = "20240615T165849",
    origin: tuple[float, float] = (300000.0, 4500000.0),
    bands: Sequence[str] = BANDS_10M,
    seed: int = 0,
    crs: str = "EPSG:32616",
    overwrite: bool = False,
) -> list[Path]:
    """Write one synthetic Sentinel-2 L2A 10 m scene, one GeoTIFF per band.

    Files are named ``{tile}_{date}_{band}_10m.tif``: uint16, nodata 0, ``crs``, 10 m pixels
    with the top-left corner at ``origin``, ``size``² px, tiled 512², DEFLATE with predictor 2.
    Rows are rendered and written in 512-row strips, all bands at once (one rasterization per
    strip), so memory stays ~100 MB even at ``size=10980``.

    If every file exists and ``{out_dir}/scene.json`` records the same parameters (including a
    hash of the parcels), nothing is written (logged as cached). ``overwrite=True`` regenerates.
    Files are written under a temporary name and renamed when complete.

    Parameters
    ----------
    out_dir
        Output directory (created if missing).
    parcels
        Parcels with a ``crop`` column (:class:`~parcelzarr.demo.CropClass` codes), any CRS.
    size, tile, date, origin, bands, seed, crs
        The scene; see :class:`SceneSpec`. ``date`` sets the season of the pixel values.
    overwrite
        Regenerate even when cached.

    Returns
    -------
    list of pathlib.Path
        One path per band, in ``bands`` order.

    Examples
    --------
    >>> from parcelzarr.demo import generate_parcels
    >>> bounds = scene_bounds(size=256)
    >>> parcels = generate_parcels(bounds, n_parcels=60)
    >>> paths = generate_scene(tmp_dir, parcels, size=256)  # doctest: +SKIP
    """
    spec = SceneSpec(
        size=size,
        tile=tile,
        date=date,
        origin=(float(origin[0]), float(origin[1])),
        bands=tuple(bands),
        seed=seed,
        crs=crs,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parcels = _prepare_parcels(parcels, crs)
    paths = [out_dir / spec.file_name(b) for b in spec.bands]
    record = _cache_record(spec, parcels)
    cached = all(p.exists() for p in paths) and _read_sidecar(out_dir).get(spec.key) == record
    if cached and not overwrite:
        logger.info("scene %s cached in %s", spec.key, out_dir)
        return paths
    _write_scene(spec, parcels, paths)
    _write_sidecar(out_dir, spec.key, record)
    return paths


def generate_dates(
    out_dir: Path,
    parcels: gpd.GeoDataFrame,
    *,
    dates: Sequence[str] | None = None,
    size: int = 5490,
    tile: str = "T16TCK",
    origin: tuple[float, float] = (300000.0, 4500000.0),
    bands: Sequence[str] = BANDS_10M,
    seed: int = 0,
    crs: str = "EPSG:32616",
    overwrite: bool = False,
) -> dict[str, list[Path]]:
    """Write a time series of scenes (same parcels, one scene per date) into ``out_dir``.

    ``dates`` defaults to :func:`season_dates` (12 dates, April to October 2024), so values
    follow the growing season (NDVI of corn and soybean rises in summer and falls at harvest).
    Each date is cached independently, as in :func:`generate_scene`.

    Returns
    -------
    dict
        ``{date: [path per band]}``, in date order.
    """
    dates = season_dates() if dates is None else list(dates)
    return {
        d: generate_scene(
            out_dir,
            parcels,
            size=size,
            tile=tile,
            date=d,
            origin=origin,
            bands=bands,
            seed=seed,
            crs=crs,
            overwrite=overwrite,
        )
        for d in dates
    }


def season_dates(n: int = 12, *, year: int = 2024, clock: str = "165849") -> list[str]:
    """``n`` acquisition dates spread evenly from 10 April to 15 October of ``year``.

    Examples
    --------
    >>> season_dates(3)
    ['20240410T165849', '20240713T165849', '20241015T165849']
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    start = dt.date(year, 4, 10)
    span = (dt.date(year, 10, 15) - start).days
    days = [round(i * span / (n - 1)) if n > 1 else 0 for i in range(n)]
    return [(start + dt.timedelta(days=d)).strftime("%Y%m%d") + "T" + clock for d in days]


def _pixel_rows(bounds: np.ndarray, spec: SceneSpec) -> tuple[np.ndarray, np.ndarray]:
    """First and last+1 pixel row touched by each parcel's bounding box."""
    y_top = spec.origin[1]
    r_lo = np.floor((y_top - bounds[:, 3]) / PIXEL_SIZE).astype(np.int64)
    r_hi = np.ceil((y_top - bounds[:, 1]) / PIXEL_SIZE).astype(np.int64)
    return r_lo, r_hi


def _write_scene(spec: SceneSpec, parcels: gpd.GeoDataFrame, paths: list[Path]) -> None:
    """Rasterize and render the scene strip by strip into ``paths`` (temporary names first)."""
    t0 = time.perf_counter()
    geoms = parcels.geometry.values
    bounds = shapely.bounds(geoms)
    levels = band_levels(parcels["crop"].to_numpy(), spec)
    r_lo, r_hi = _pixel_rows(bounds, spec)
    labels_all = np.arange(1, len(parcels) + 1, dtype=np.int32)
    parcel_area = None
    if len(parcels):
        xmin, ymin, xmax, ymax = shapely.total_bounds(geoms)
        col = (np.array([xmin, xmax]) - spec.origin[0]) / PIXEL_SIZE
        row = (spec.origin[1] - np.array([ymax, ymin])) / PIXEL_SIZE
        parcel_area = (math.floor(row[0]), math.ceil(row[1]), math.floor(col[0]), math.ceil(col[1]))

    profile = {
        "driver": "GTiff",
        "width": spec.size,
        "height": spec.size,
        "count": 1,
        "dtype": "uint16",
        "nodata": 0,
        "crs": spec.crs,
        "transform": spec.transform,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
        "predictor": 2,
        "num_threads": "ALL_CPUS",
    }
    partial = [p.with_name(p.name + ".partial") for p in paths]
    with contextlib.ExitStack() as stack:
        # A small block cache: strips are written whole block rows, nothing is read back.
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_MB))
        dsts = [stack.enter_context(rasterio.open(p, "w", **profile)) for p in partial]
        for dst, band in zip(dsts, spec.bands, strict=True):
            dst.set_band_description(1, band)
            dst.update_tags(
                1,
                BAND=band,
                BOA_ADD_OFFSET=BOA_ADD_OFFSET,
                QUANTIFICATION_VALUE=QUANTIFICATION_VALUE,
            )
            dst.update_tags(TILE=spec.tile, DATE=spec.date, SYNTHETIC="parcelzarr.demo")
        for row0 in range(0, spec.size, BLOCK):
            nrows = min(BLOCK, spec.size - row0)
            sel = (r_hi > row0) & (r_lo < row0 + nrows)
            if sel.any():
                labels = rasterio.features.rasterize(
                    zip(geoms[sel], labels_all[sel], strict=True),
                    out_shape=(nrows, spec.size),
                    transform=spec.strip_transform(row0),
                    fill=0,
                    dtype="int32",
                )
            else:
                labels = np.zeros((nrows, spec.size), dtype=np.int32)
            pixels = render_strip(labels, row0, spec, levels, parcel_area=parcel_area)
            window = Window(0, row0, spec.size, nrows)
            for dst, band in zip(dsts, pixels, strict=True):
                dst.write(band, 1, window=window)
    for tmp, final in zip(partial, paths, strict=True):
        os.replace(tmp, final)
    logger.info(
        "wrote scene %s (%d², %d bands, %d parcels) in %.1f s",
        spec.key,
        spec.size,
        len(spec.bands),
        len(parcels),
        time.perf_counter() - t0,
    )
