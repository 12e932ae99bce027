"""Ingest layout benchmark: chunk and shard shapes vs bytes/requests per parcel, blob count,
ingest MB/s, and a parcel's season before/after compaction.

    .venv/bin/python bench/layout.py [--size 2048] [--parcels 1500] [--out bench/layout.json]

Data come from ``parcelzarr.demo`` (a synthetic county scene, one 10 m band). Stores are local
directories; requests are counted by the store's I/O counters (one GET per object read), so
the request figures are what Azure would serve too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import parcelzarr as pz
from parcelzarr.demo import generate_parcels, generate_scene, scene_bounds

LAYOUTS = [  # (label, chunk_size = object edge, inner_chunk or None)
    ("chunks 128", 128, None),
    ("chunks 256", 256, None),
    ("chunks 512", 512, None),
    ("shards 1024 / 128", 1024, 128),
    ("shards 2048 / 256", 2048, 256),
]


def _objects(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def measure_layout(scene: list[Path], parcels, work: Path, label: str, chunk: int,
                   inner: int | None, sample: int) -> dict:
    url = work / f"{label.replace(' ', '').replace('/', '_')}.zarr"
    shutil.rmtree(url, ignore_errors=True)
    band = next(p for p in scene if "_B04_" in p.name)
    result: dict = {"layout": label, "chunk": chunk, "inner_chunk": inner}
    for workers in (1, 2):
        shutil.rmtree(url, ignore_errors=True)
        rep = pz.ingest([str(band)], str(url), chunk_size=chunk, inner_chunk=inner,
                        workers=workers, quiet=True)
        result[f"ingest_MBps_{workers}w"] = round(rep.mb_per_s, 1)
    n, nbytes = _objects(url / "utm16n" / "10m" / "B04")
    result["objects_per_band_date"] = n - 1  # minus zarr.json
    result["stored_MB"] = round(nbytes / 1e6, 2)
    store = pz.open_store(str(url))
    counters = store._handle.counters
    reqs, byts = [], []
    for geom in parcels.geometry.iloc[:sample]:
        before = counters.snapshot()
        store.read(geom, bands=["B04"], crs=parcels.crs)
        after = counters.snapshot()
        reqs.append(after.get_requests - before.get_requests)
        byts.append(after.bytes_read - before.bytes_read)
    result["requests_per_parcel"] = round(float(np.mean(reqs)), 2)
    result["kB_per_parcel"] = round(float(np.mean(byts)) / 1e3, 1)
    t0 = time.perf_counter()
    store.zonal_stats(parcels, bands=["B04"], stats=("count", "mean"))
    rep = store.last_report
    result["batch_s"] = round(time.perf_counter() - t0, 2)
    result["batch_requests"] = rep.requests if rep else None
    result["batch_MB"] = round(rep.bytes_read / 1e6, 2) if rep else None
    return result


def measure_season(parcels, work: Path, size: int, dates: int, sample: int) -> dict:
    """A parcel's season (``dates`` dates, one band) before and after compaction."""
    url = work / "season.zarr"
    shutil.rmtree(url, ignore_errors=True)
    files = []
    for d in range(dates):
        day = (np.datetime64("2024-04-01") + np.timedelta64(7 * d, "D")).astype(str)
        files += generate_scene(work / f"season-{d}", parcels, size=size, bands=("B04",),
                                date=day.replace("-", "") + "T165849", seed=d)
    pz.ingest([str(p) for p in files], str(url), chunk_size=256, quiet=True)
    import shapely

    inside = parcels[parcels.within(shapely.box(*scene_bounds(size=size)))]
    parcels = inside[inside.area > 2000]
    out: dict = {"dates": dates, "size": size}
    for phase in ("before", "after"):
        if phase == "after":
            rep = pz.compact(str(url), quiet=True)
            out["compact_s"] = round(rep.seconds, 2)
            out["objects"] = [rep.objects_before, rep.objects_after]
        store = pz.open_store(str(url))
        counters = store._handle.counters
        before = counters.snapshot()
        for geom in parcels.geometry.iloc[:sample]:
            store.read(geom, bands=["B04"], crs=parcels.crs)
        after = counters.snapshot()
        out[f"requests_per_parcel_{phase}"] = round(
            (after.get_requests - before.get_requests) / sample, 2)
        out[f"kB_per_parcel_{phase}"] = round(
            (after.bytes_read - before.bytes_read) / sample / 1e3, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--parcels", type=int, default=1500)
    ap.add_argument("--sample", type=int, default=200)
    ap.add_argument("--dates", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("bench/layout.json"))
    args = ap.parse_args()
    os.environ.setdefault("PARCELZARR_WORKERS", "2")
    work = Path(tempfile.mkdtemp(prefix="pz-layout-"))
    try:
        parcels = generate_parcels(scene_bounds(size=args.size), n_parcels=args.parcels)
        scene = generate_scene(work / "scene", parcels, size=args.size, bands=("B04",))
        results = [measure_layout(scene, parcels, work, *lay, sample=args.sample)
                   for lay in LAYOUTS]
        scale = (10980 / args.size) ** 2
        for r in results:
            r["objects_per_full_tile_band_date"] = round(r["objects_per_band_date"] * scale)
        season = measure_season(parcels, work, min(args.size, 1024), args.dates, args.sample)
        doc = {"size": args.size, "parcels": args.parcels, "sample": args.sample,
               "cores": os.cpu_count(), "layouts": results, "season": season}
        args.out.write_text(json.dumps(doc, indent=1))
        print(json.dumps(doc, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
