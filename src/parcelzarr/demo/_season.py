"""A small synthetic county with a season of dates, for the analysis notebook and its test."""

from __future__ import annotations

import logging
from pathlib import Path

from parcelzarr import _config
from parcelzarr._ingest import ingest

from ._parcels import generate_parcels
from ._scene import generate_dates, scene_bounds, season_dates

__all__ = ["season_store"]

logger = logging.getLogger(__name__)


def season_store(
    store: str | Path = "stores/season.zarr",
    *,
    size: int = 384,
    n_parcels: int = 200,
    n_dates: int = 10,
    seed: int = 0,
    data_dir: Path | None = None,
) -> Path:
    """Make (or reuse) a store of a small synthetic county over one growing season.

    ``n_parcels`` parcels on a ``size``² px scene (10 m pixels), bands B04 and B08 on
    ``n_dates`` dates from April to October 2024 (crops green up and are harvested), ingested
    into ``store``. Scenes and parcels are cached in ``data_dir`` (default
    ``$PARCELZARR_CACHE_DIR/season``); ingest is idempotent, so a second call is quick.

    Returns
    -------
    Path
        The parcels file (GeoParquet, EPSG:4326; columns ``parcel_id``, ``crop``, ``geometry``).

    Examples
    --------
    >>> parcels = season_store("stores/season.zarr")  # doctest: +SKIP
    """
    data_dir = data_dir or _config.cache_dir() / "season"
    data_dir.mkdir(parents=True, exist_ok=True)
    parcels_file = data_dir / f"parcels-{n_parcels}-{size}-{seed}.parquet"
    b = scene_bounds(size=size)
    inset = 0.05 * (b[2] - b[0])
    parcels = generate_parcels((b[0] + inset, b[1] + inset, b[2] - inset, b[3] - inset),
                               n_parcels=n_parcels, seed=seed)
    if not parcels_file.exists():
        tmp = parcels_file.with_suffix(".tmp")
        parcels.to_crs("EPSG:4326").to_parquet(tmp)
        tmp.replace(parcels_file)
    scenes = generate_dates(data_dir / f"scenes-{size}-{seed}", parcels,
                            dates=season_dates(n_dates), size=size, bands=("B04", "B08"),
                            seed=seed)
    ingest([str(p) for paths in scenes.values() for p in paths], str(store), quiet=True)
    logger.info("season store %s: %d parcels, %d dates", store, n_parcels, n_dates)
    return parcels_file
