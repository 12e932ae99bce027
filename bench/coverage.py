"""Coverage weights vs the centre rule vs exactextract, on the same local data.

    .venv/bin/python bench/coverage.py [--size 4096] [--parcels 6000] [--repeats 3]

Data: the ``parcelzarr.demo`` synthetic county (4 bands, 10 m uint16, ``--size``² px) as the
benchmark's COGs (DEFLATE, 512² blocks) on local disk, ingested into a local store (default
ingest settings); all cached under ``bench/.cache``. Each approach computes count, mean and
std of the 4 bands for every parcel:

- ``parcelzarr-centre``: ``zonal_stats`` with the pixel-centre rule;
- ``parcelzarr-coverage``: ``zonal_stats(weights="coverage")``;
- ``exactextract``: ``exact_extract(cogs, parcels, ["count", "mean", "stdev"],
  strategy="raster-sequential")`` over the local COGs (coverage-weighted);
- ``floor`` / ``floor-coverage``: :mod:`bench._floor` on the same store (fetch the covering
  chunks, decode, label once per strip, ``np.bincount``), each rule.

The coverage-weighted results are checked against exactextract's before any timing is
printed (exactextract keeps coverage fractions as float32, hence rtol 1e-5). Each approach runs
``--repeats`` times, alternating, and the fastest run counts (the machine is shared), with the
least process CPU time (all threads; exactextract runs on one, parcelzarr on
``PARCELZARR_WORKERS``). Prints a Markdown table and the ratios of the issue's goals.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

logger = logging.getLogger("bench.coverage")

BANDS = ("B02", "B03", "B04", "B08")


def prepare(size: int, n_parcels: int, cache: Path) -> tuple[Any, dict[str, Path], str]:
    """Parcels (in the scene CRS), COGs per band and the local store URL (all cached)."""
    import geopandas as gpd

    import parcelzarr as pz
    from bench._scenario import CRS, _to_cog
    from parcelzarr.demo import demo_data

    parcels_file, scene = demo_data(cache / "data", size=size, n_parcels=n_parcels)
    parcels = gpd.read_parquet(parcels_file).to_crs(CRS)[["parcel_id", "geometry"]]
    cogs = {p.name.split("_")[2]: _to_cog(p, cache / f"cogs-{size}-0") for p in scene}
    url = str(cache / f"coverage-{size}.zarr")
    pz.ingest([str(cogs[b]) for b in BANDS], url, quiet=True)  # idempotent
    return parcels.reset_index(drop=True), cogs, url


def _pz(url: str, parcels: Any, coverage: bool) -> pd.DataFrame:
    import parcelzarr as pz

    store = pz.open_store(url)
    return store.zonal_stats(parcels, bands=list(BANDS), stats=("count", "mean", "std"),
                             weights="coverage" if coverage else None, id_column="parcel_id",
                             quiet=True)


def _floor(url: str, parcels: Any, coverage: bool) -> pd.DataFrame:
    import parcelzarr as pz
    from bench._floor import floor_stats

    return floor_stats(pz.open_store(url), parcels, bands=list(BANDS), coverage=coverage,
                       all_dates=False)


def _exactextract(cogs: dict[str, Path], parcels: Any) -> pd.DataFrame:
    from exactextract import exact_extract

    return exact_extract([str(cogs[b]) for b in BANDS], parcels, ["count", "mean", "stdev"],
                         strategy="raster-sequential", include_cols=["parcel_id"],
                         output="pandas")


def check(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    """Coverage-weighted parcelzarr == exactextract (rtol 1e-5: their fractions are float32)."""
    theirs = theirs.set_index("parcel_id")
    for band in BANDS:
        mine = ours[ours["band"] == band].set_index("parcel_id").loc[theirs.index]
        for ours_name, their_name in (("count", "count"), ("mean", "mean"), ("std", "stdev")):
            col = next(c for c in theirs.columns  # columns are <file stem>_<op>
                       if f"_{band}_" in c and c.endswith(f"_{their_name}"))
            np.testing.assert_allclose(mine[ours_name].to_numpy(float),
                                       theirs[col].to_numpy(float), rtol=1e-5, atol=1e-6,
                                       equal_nan=True, err_msg=f"{band} {ours_name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--parcels", type=int, default=6000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path(__file__).parent / ".cache")
    ap.add_argument("--profile", choices=["centre", "coverage", "exactextract", "floor"],
                    help="run this approach once under pyinstrument and print the profile")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("parcelzarr").setLevel(logging.WARNING)
    parcels, cogs, url = prepare(args.size, args.parcels, args.cache)
    runs: dict[str, Callable[[], pd.DataFrame]] = {
        "parcelzarr-centre": lambda: _pz(url, parcels, False),
        "parcelzarr-coverage": lambda: _pz(url, parcels, True),
        "exactextract": lambda: _exactextract(cogs, parcels),
        "floor": lambda: _floor(url, parcels, False),
        "floor-coverage": lambda: _floor(url, parcels, True),
    }
    if args.profile:
        from pyinstrument import Profiler

        name = {"centre": "parcelzarr-centre", "coverage": "parcelzarr-coverage"}.get(
            args.profile, args.profile)
        runs[name]()  # warm up
        with Profiler(interval=0.002) as prof:
            runs[name]()
        print(prof.output_text(unicode=True, color=False, show_all=False))
        return
    check(runs["parcelzarr-coverage"](), runs["exactextract"]())
    logger.info("coverage-weighted results equal exactextract's (%d parcels)", len(parcels))
    from bench._stats import compare

    for name, ref, weighted in (("floor", "parcelzarr-centre", False),
                                ("floor-coverage", "parcelzarr-coverage", True)):
        agreement = compare(runs[name](), runs[ref]().drop(columns="time"), weighted=weighted)
        if not agreement.ok:
            raise SystemExit(f"{name} disagrees with {ref}: {agreement.message}")
        logger.info("%s agrees with %s: %s", name, ref, agreement.message)
    best: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, run in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            best[name] = min(best.get(name, np.inf), dt)
            cpu[name] = min(cpu.get(name, np.inf), dc)
            logger.info("%s: %.2f s (CPU %.2f s)", name, dt, dc)
    n = len(parcels)
    load = os.getloadavg()[0]
    print(f"\n{n:,} parcels, 4 bands, {args.size}² px, best of {args.repeats} "
          f"(load average {load:.1f} on {os.cpu_count()} cores at the end)\n")
    print("| approach | wall s | parcels/s | CPU s (all threads) |\n|---|---:|---:|---:|")
    for name, s in best.items():
        print(f"| {name} | {s:.2f} | {n / s:,.0f} | {cpu[name]:.2f} |")
    cov, ctr, ee = best["parcelzarr-coverage"], best["parcelzarr-centre"], best["exactextract"]
    print(f"\n- coverage vs exactextract: {ee / cov:.2f}× faster (goal ≥ 2×); CPU "
          f"{cpu['exactextract'] / cpu['parcelzarr-coverage']:.2f}× less")
    print(f"- coverage / centre time: {cov / ctr:.2f} (goal ≤ 1.5)")
    print(f"- centre / floor time: {ctr / best['floor']:.2f} (goal ≤ 1.5)")
    print(f"- coverage / floor-coverage time: {cov / best['floor-coverage']:.2f} (goal ≤ 1.5)")


if __name__ == "__main__":
    main()
