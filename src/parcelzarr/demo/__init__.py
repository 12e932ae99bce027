"""Synthetic demo data: county-like parcels and Sentinel-2 style scenes painted from them.

Used by ``parcelzarr demo``, the tests and the benchmark. Everything is deterministic for a seed.

>>> from parcelzarr.demo import generate_parcels, generate_scene, scene_bounds
>>> parcels = generate_parcels(scene_bounds(size=1000), n_parcels=1000)  # doctest: +SKIP
>>> paths = generate_scene("data/demo", parcels, size=1000)  # doctest: +SKIP
"""

from ._parcels import CropClass, generate_parcels, parcels_bounds_for_area
from ._run import DemoReport, demo_data, run_demo
from ._scene import (
    BANDS_10M,
    generate_dates,
    generate_scene,
    scene_bounds,
    season_dates,
)
from ._season import season_store

__all__ = [
    "BANDS_10M",
    "CropClass",
    "DemoReport",
    "demo_data",
    "generate_dates",
    "generate_parcels",
    "generate_scene",
    "parcels_bounds_for_area",
    "run_demo",
    "scene_bounds",
    "season_dates",
    "season_store",
]
