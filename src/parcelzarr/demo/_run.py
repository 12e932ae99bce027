"""``parcelzarr demo``: generate a county, ingest it, run a batch zonal_stats, summarise."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd

from parcelzarr import _config
from parcelzarr._ingest import IngestReport, ingest
from parcelzarr.query import QueryReport, open_store

from ._parcels import generate_parcels, parcels_bounds_for_area
from ._scene import generate_scene, scene_bounds

__all__ = ["DemoReport", "demo_data", "run_demo"]

logger = logging.getLogger(__name__)

DEWITT_KM2 = 1_050.0
DEWITT_PARCELS = 10_297


@dataclass(frozen=True)
class DemoReport:
    """What the demo did and measured."""

    parcels: int
    parcels_file: Path
    scene: tuple[Path, ...]
    ingest: IngestReport
    query: QueryReport
    out: Path
    tile_bytes: int

    def summary(self) -> str:
        q = self.query
        per_parcel = q.bytes_read / max(1, q.parcels)
        old = self.tile_bytes * q.parcels
        return "\n".join([
            f"parcels:      {q.parcels:,} ({self.parcels_file})",
            f"ingest:       {self.ingest}",
            f"zonal_stats:  {q.seconds:.2f} s, {q.parcels_per_s:,.0f} parcels/s "
            f"({q.rows:,} rows -> {self.out})",
            f"bytes read:   {q.bytes_read / 1e6:,.1f} MB ({per_parcel / 1e3:,.1f} kB per parcel)"
            f" in {q.requests:,} requests",
            f"whole-tile download per parcel would read {old / 1e9:,.1f} GB "
            f"({self.tile_bytes / 1e6:,.0f} MB per parcel): "
            f"{old / max(1, q.bytes_read):,.0f}x more",
        ])


def demo_data(
    data_dir: Path, *, size: int, n_parcels: int, seed: int = 0
) -> tuple[Path, list[Path]]:
    """Generate (or reuse) the demo parcels (GeoParquet, EPSG:4326) and the 4-band scene."""
    data_dir.mkdir(parents=True, exist_ok=True)
    bounds = scene_bounds(size=size)
    area = min(DEWITT_KM2, 0.8 * (bounds[2] - bounds[0]) * (bounds[3] - bounds[1]) / 1e6)
    cx, cy = (bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2
    parcels_file = data_dir / f"parcels-{n_parcels}-{size}-{seed}.parquet"
    if parcels_file.exists():
        parcels = gpd.read_parquet(parcels_file).to_crs("EPSG:32616")
    else:
        parcels = generate_parcels(parcels_bounds_for_area(cx, cy, area), n_parcels=n_parcels,
                                   seed=seed)
        tmp = parcels_file.with_suffix(".tmp")
        parcels.to_crs("EPSG:4326").to_parquet(tmp)
        tmp.replace(parcels_file)
    scene = generate_scene(data_dir / f"scene-{size}-{seed}", parcels, size=size, seed=seed)
    return parcels_file, scene


def run_demo(
    store: str | Path | None = None,
    *,
    size: int = 5490,
    n_parcels: int = DEWITT_PARCELS,
    seed: int = 0,
    data_dir: Path | None = None,
    out: Path | None = None,
    quiet: bool = False,
) -> DemoReport:
    """Generate a synthetic county, ingest it into ``store`` and compute per-parcel statistics.

    Generated data is cached in ``data_dir`` (default ``$PARCELZARR_CACHE_DIR/demo``); the
    store defaults to ``demo.zarr`` there too (never the current or the source tree) and the
    statistics to ``<store>-stats.parquet`` beside it. The ingest is idempotent, so a second
    run only re-runs the query.
    """
    data_dir = data_dir or _config.cache_dir() / "demo"
    store = store if store is not None else data_dir / "demo.zarr"
    t0 = time.perf_counter()
    parcels_file, scene = demo_data(data_dir, size=size, n_parcels=n_parcels, seed=seed)
    logger.info("demo data ready in %.1f s: %s", time.perf_counter() - t0, data_dir)
    ing = ingest(scene, str(store), quiet=quiet)
    st = open_store(str(store))
    parcels = gpd.read_parquet(parcels_file)
    df = st.zonal_stats(parcels, id_column="parcel_id", bands=["B02", "B03", "B04", "B08"],
                        indices=["ndvi"], stats=("count", "mean", "std", "min", "max"),
                        quiet=quiet)
    assert st.last_report is not None
    out = out or Path(str(store).rstrip("/")).with_suffix("").parent / (
        Path(str(store)).stem + "-stats.parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out)
    return DemoReport(
        parcels=len(parcels), parcels_file=parcels_file, scene=tuple(scene), ingest=ing,
        query=st.last_report, out=out, tile_bytes=sum(p.stat().st_size for p in scene),
    )
