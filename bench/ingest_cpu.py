"""CPU seconds per MB of ingest, for bench/RESULTS.md.

    .venv/bin/python bench/ingest_cpu.py [--size 4096] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import parcelzarr as pz
from parcelzarr.demo import generate_parcels, generate_scene, scene_bounds


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pz-cpu-"))
    try:
        parcels = generate_parcels(scene_bounds(size=args.size), n_parcels=2000)
        band = generate_scene(work / "scene", parcels, size=args.size, bands=("B04",))[0]
        pz.ingest([str(band)], str(work / "warm.zarr"), quiet=True)  # warm caches
        for w in args.workers:
            url = work / f"w{w}.zarr"
            c0, t0 = _cpu(), time.perf_counter()
            rep = pz.ingest([str(band)], str(url), workers=w, quiet=True)
            wall, cpu = time.perf_counter() - t0, _cpu() - c0
            print(f"workers={w}: {rep.mb_per_s:.1f} MB/s raw, wall {wall:.2f} s, cpu {cpu:.2f} s,"
                  f" {cpu / wall:.2f} cores busy, {rep.raw_bytes / 1e6 / cpu:.0f} MB/CPU-s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
