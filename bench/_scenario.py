"""Build the benchmark scenario: synthetic county and tile (cached), COGs, Azurite, ingest.

Local files are generated once and cached under ``bench/.cache`` (the demo generator's own
sidecar cache for the scenes, a timestamp check for the COG conversions). Azurite is fresh in
every run, so uploading the COGs and ingesting the parcelzarr stores happen every run, directly
against Azurite (not through the latency proxy: setup is not measured). The time-series store
is then compacted along time (``pz.compact``, default ``time_chunk``), the product's workflow
for a season: its 12 dates become one object per spatial chunk and band.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.shutil
import shapely

import parcelzarr as pz
from parcelzarr.demo import BANDS_10M, demo_data, generate_dates, season_dates
from parcelzarr.testing import Azurite

from ._config import BenchConfig

__all__ = ["CRS", "LocalData", "Scenario", "build_local_data", "deploy"]

logger = logging.getLogger(__name__)

CRS = "EPSG:32616"
COG_CONTAINER = "cogs"
STORE_CONTAINER = "stores"
_COG_OPTIONS: Mapping[str, str | int] = {
    "COMPRESS": "DEFLATE", "PREDICTOR": 2, "BLOCKSIZE": 512, "OVERVIEWS": "NONE",
    "NUM_THREADS": "ALL_CPUS", "BIGTIFF": "IF_SAFER",
}  # fmt: skip


@dataclass(frozen=True)
class LocalData:
    """Generated files of one configuration (all cached).

    ``cogs`` maps band to the single-date COG; ``ts_cogs`` maps date to band to COG.
    ``parcels_file`` / ``ts_parcels_file`` are GeoParquet in the scene CRS with ``parcel_id``.
    """

    parcels_file: Path
    ts_parcels_file: Path
    cogs: dict[str, Path]
    ts_cogs: dict[str, dict[str, Path]]
    ts_bounds: tuple[float, float, float, float]
    n_parcels: int
    n_ts_parcels: int


@dataclass(frozen=True)
class Scenario:
    """Where everything is once deployed; JSON-serialisable so workers get it as a file.

    Blob names are ``container/path``; GDAL reads them as ``/vsiaz/{name}``.
    """

    mode: str
    size: int
    ts_size: int
    ts_bounds: tuple[float, float, float, float]
    bands: tuple[str, ...]
    parcels_file: str
    ts_parcels_file: str
    blobs: dict[str, str]
    ts_blobs: dict[str, dict[str, str]]
    store_url: str
    ts_store_url: str
    n_parcels: int
    n_ts_parcels: int
    cog_bytes: int
    setup_seconds: dict[str, float]
    #: band -> the same single-date COG on local disk (exactextract-local reads it)
    cog_files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """The scenario as JSON."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Scenario:
        """Inverse of :meth:`to_json`."""
        raw: dict[str, Any] = json.loads(text)
        raw["ts_bounds"] = tuple(raw["ts_bounds"])
        raw["bands"] = tuple(raw["bands"])
        return cls(**raw)


def _to_cog(src: Path, out_dir: Path) -> Path:
    """Convert a tiled GeoTIFF to a COG (DEFLATE, predictor 2, 512² blocks); cached."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / src.name
    if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
        return dst
    tmp = dst.with_name(dst.name + ".partial")
    with rasterio.Env(GDAL_CACHEMAX=256):
        rasterio.shutil.copy(src, tmp, driver="COG", **_COG_OPTIONS)
    os.replace(tmp, dst)
    return dst


def _ts_box(parcels: gpd.GeoDataFrame, ts_size: int) -> tuple[float, float]:
    """Top-left corner (multiple of 60 m) of the ``ts_size``² sub-area centred on the parcels."""
    xmin, ymin, xmax, ymax = parcels.total_bounds
    half = ts_size * 10.0 / 2
    x0 = round(((xmin + xmax) / 2 - half) / 60.0) * 60.0
    y0 = round(((ymin + ymax) / 2 + half) / 60.0) * 60.0
    return x0, y0


def build_local_data(cfg: BenchConfig, cache: Path) -> LocalData:
    """Generate (or reuse) parcels, the single-date tile, the time series, and their COGs."""
    t0 = time.perf_counter()
    data_dir = cache / "data"
    parcels_src, scene = demo_data(data_dir, size=cfg.size, n_parcels=cfg.n_parcels,
                                   seed=cfg.seed)
    parcels = gpd.read_parquet(parcels_src).to_crs(CRS)[["parcel_id", "crop", "geometry"]]
    cogs = {p.name.split("_")[2]: _to_cog(p, cache / f"cogs-{cfg.size}-{cfg.seed}")
            for p in scene}
    x0, y0 = _ts_box(parcels, cfg.ts_size)
    ts_dir = data_dir / f"ts-{cfg.size}-{cfg.ts_size}-{cfg.seed}"
    series = generate_dates(ts_dir, parcels, dates=season_dates(cfg.n_dates), size=cfg.ts_size,
                            origin=(x0, y0), seed=cfg.seed)
    ts_cogs = {
        d: {p.name.split("_")[2]: _to_cog(p, cache / f"ts-cogs-{cfg.size}-{cfg.ts_size}")
            for p in paths}
        for d, paths in series.items()
    }
    extent = cfg.ts_size * 10.0
    ts_bounds = (x0, y0 - extent, x0 + extent, y0)
    inner = shapely.box(*ts_bounds).buffer(-10.0)
    ts_parcels = parcels[parcels.within(inner)]
    work = cache / f"work-{cfg.mode}"
    work.mkdir(parents=True, exist_ok=True)
    parcels_file, ts_parcels_file = work / "parcels.parquet", work / "ts_parcels.parquet"
    parcels.to_parquet(parcels_file)
    ts_parcels.to_parquet(ts_parcels_file)
    logger.info("local data ready in %.1f s (%d parcels, %d in the time-series area)",
                time.perf_counter() - t0, len(parcels), len(ts_parcels))
    return LocalData(parcels_file, ts_parcels_file, cogs, ts_cogs, ts_bounds,
                     len(parcels), len(ts_parcels))


def _upload(az: Azurite, files: Mapping[str, Path]) -> int:
    """Upload ``{blob path: local file}`` into the COG container; returns bytes uploaded."""
    from azure.storage.blob import BlobServiceClient

    total = 0
    with BlobServiceClient.from_connection_string(az.connection_string) as client:
        container = client.get_container_client(COG_CONTAINER)
        for name, path in files.items():
            with path.open("rb") as f:
                container.upload_blob(name, f, overwrite=True, max_concurrency=4)
            total += path.stat().st_size
    return total


def deploy(cfg: BenchConfig, data: LocalData, az: Azurite) -> Scenario:
    """Upload the COGs to Azurite, ingest both stores (default ingest settings) and compact
    the time-series store along time (``pz.compact`` with its default ``time_chunk``).

    The ingest reads the same COG files from local disk (identical bytes to the uploaded
    blobs) so that it does not download them again; only the store goes to Azurite.
    """
    az.create_container(COG_CONTAINER, exist_ok=True)
    az.create_container(STORE_CONTAINER, exist_ok=True)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    files = {p.name: p for p in data.cogs.values()}
    ts_files = {f"ts/{p.name}": p for bands in data.ts_cogs.values() for p in bands.values()}
    cog_bytes = _upload(az, files)
    _upload(az, ts_files)
    seconds["upload"] = time.perf_counter() - t0
    opts = az.storage_options()
    layout = {k: v for k, v in (("chunk_size", cfg.chunk_size),
                                ("inner_chunk", cfg.inner_chunk)) if v is not None}
    store_url = f"az://{STORE_CONTAINER}/county.zarr"
    ts_store_url = f"az://{STORE_CONTAINER}/timeseries.zarr"
    t0 = time.perf_counter()
    report = pz.ingest([str(p) for p in data.cogs.values()], store_url, storage_options=opts,
                       quiet=True, **layout)
    seconds["ingest"] = time.perf_counter() - t0
    logger.info("ingest: %s", report)
    t0 = time.perf_counter()
    ts_report = pz.ingest([str(p) for b in data.ts_cogs.values() for p in b.values()],
                          ts_store_url, storage_options=opts, **layout, quiet=True)
    seconds["ingest_timeseries"] = time.perf_counter() - t0
    logger.info("ingest (time series): %s", ts_report)
    t0 = time.perf_counter()
    compacted = pz.compact(ts_store_url, storage_options=opts, quiet=True)
    seconds["compact_timeseries"] = time.perf_counter() - t0
    logger.info("compact (time series): %s", compacted)
    return Scenario(
        mode=cfg.mode, size=cfg.size, ts_size=cfg.ts_size, ts_bounds=data.ts_bounds,
        bands=tuple(BANDS_10M),
        parcels_file=str(data.parcels_file), ts_parcels_file=str(data.ts_parcels_file),
        blobs={b: f"{COG_CONTAINER}/{p.name}" for b, p in data.cogs.items()},
        ts_blobs={d: {b: f"{COG_CONTAINER}/ts/{p.name}" for b, p in bands.items()}
                  for d, bands in data.ts_cogs.items()},
        store_url=store_url, ts_store_url=ts_store_url,
        n_parcels=data.n_parcels, n_ts_parcels=data.n_ts_parcels, cog_bytes=cog_bytes,
        setup_seconds=seconds, cog_files={b: str(p) for b, p in data.cogs.items()},
    )


def dates_of(blobs: Mapping[str, Any]) -> Sequence[str]:
    """Dates of a time-series blob mapping, sorted."""
    return sorted(blobs)


def as_datetime64(date: str) -> np.datetime64:
    """``20240410T165849`` as ``datetime64[D]`` (the day; stores keep the acquisition time)."""
    return np.datetime64(f"{date[:4]}-{date[4:6]}-{date[6:8]}", "D")
