"""What pinning one committed version per call costs a query (docs/snapshots.md).

A synthetic scene (``--size`` px, 4 bands, ``--parcels`` parcels, ``--dates`` dates) is
ingested into a local store and into Azurite behind ``LatencyProxy`` (``--delay-ms`` per
request), then queried ``--repeat`` times with the pin (``ParcelStore.zonal_stats``) and
without it (the undecorated method): the difference is the two GETs of the root document per
call and their parsing; chunk reads are the same objects either way (no per-chunk lookup).

Usage::

    .venv/bin/python bench/snapshot_overhead.py --size 1000 --parcels 300 --repeat 10
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

BANDS = ["B04", "B08"]


def _measure(url: str, opts: dict[str, Any] | None, parcels: Any, repeat: int,
             proxy: Any = None) -> dict[str, Any]:
    from parcelzarr.query._snapshot import read_root
    from parcelzarr.query._store import ParcelStore

    import parcelzarr as pz

    store = pz.open_store(url, storage_options=opts)
    plain = ParcelStore.zonal_stats.__wrapped__  # type: ignore[attr-defined]
    kwargs = {"bands": BANDS, "stats": ["count", "mean"]}
    store.zonal_stats(parcels, **kwargs)  # warm up
    pinned, unpinned, roots = [], [], []
    for _ in range(repeat):  # interleaved: the machine's load hits both alike
        t0 = time.perf_counter()
        store.zonal_stats(parcels, **kwargs)
        t1 = time.perf_counter()
        plain(store, parcels, **kwargs)
        t2 = time.perf_counter()
        read_root(store._handle)
        t3 = time.perf_counter()
        pinned.append(t1 - t0)
        unpinned.append(t2 - t1)
        roots.append(t3 - t2)
    out = {"pinned_s": round(statistics.median(pinned), 3),
           "unpinned_s": round(statistics.median(unpinned), 3),
           "root_get_ms": round(1e3 * statistics.median(roots), 2),
           "root_doc_kB": round(len(read_root(store._handle)[0]) / 1e3, 1)}
    if proxy is not None:
        proxy.reset_counters()
        store.zonal_stats(parcels, **kwargs)
        out["requests_pinned"] = proxy.requests
        proxy.reset_counters()
        plain(store, parcels, **kwargs)
        out["requests_unpinned"] = proxy.requests
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--parcels", type=int, default=300)
    parser.add_argument("--dates", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    args = parser.parse_args()

    import parcelzarr as pz
    from parcelzarr.demo import generate_parcels, generate_scene, scene_bounds
    from parcelzarr.testing import Azurite, LatencyProxy

    with tempfile.TemporaryDirectory() as tmp:
        parcels = generate_parcels(scene_bounds(size=args.size), n_parcels=args.parcels, seed=3)
        files = [str(p) for d in range(args.dates) for p in generate_scene(
            Path(tmp) / f"s{d}", parcels, size=args.size, bands=BANDS, seed=d,
            date=f"202406{1 + 10 * d:02d}T165849")]
        local = str(Path(tmp) / "store.zarr")
        pz.ingest(files, local, quiet=True)
        print("local", _measure(local, None, parcels, args.repeat))
        with Azurite() as az, LatencyProxy(az.blob_endpoint, delay_ms=0) as proxy:
            az.create_container("bench")
            opts = az.storage_options(proxy.endpoint)
            url = "az://bench/store.zarr"
            pz.ingest(files, url, storage_options=opts, quiet=True)
            proxy.delay_ms = args.delay_ms
            print(f"azurite+{args.delay_ms:g}ms",
                  _measure(url, opts, parcels, args.repeat, proxy))


if __name__ == "__main__":
    main()
