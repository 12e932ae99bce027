"""Benchmark of the query engine: a county's zonal statistics from Azurite through a latency proxy.

For each parcel count (10,000 and 100,000 by default), transport (adlfs, obstore) and added
latency per request (0 and 20 ms), a fresh child process opens the store and runs one
``zonal_stats`` of 4 bands (count, mean, std, min, max, median) over every parcel, and reports
parcels/s, bytes and requests per parcel, peak RSS, and the ratio of bytes read to the
compressed size of the chunks that cover the parcels.

Usage::

    .venv/bin/python bench/query.py                       # full run, Markdown table on stdout
    .venv/bin/python bench/query.py --parcels 10000 --delays 20 --transports obstore

The scene is the ``parcelzarr demo`` county (5490² px, 4 bands; cached in --data-dir); the
100,000-parcel set covers the whole scene with smaller parcels. Azurite and the proxy come from
``parcelzarr.testing`` (``make install`` puts Azurite in node_modules/).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

STATS = "count,mean,std,min,max,median"
CONTAINER = "bench-query"
STORE = f"az://{CONTAINER}/county.zarr"


def _parcels(data_dir: Path, size: int, n: int) -> Path:
    """The demo county's parcels (n == 10,297 style) or ``n`` parcels over the whole scene."""
    import geopandas as gpd

    from parcelzarr.demo import generate_parcels, parcels_bounds_for_area, scene_bounds

    path = data_dir / f"bench-parcels-{n}-{size}.parquet"
    if not path.exists():
        b = scene_bounds(size=size)
        area = 0.8 * (b[2] - b[0]) * (b[3] - b[1]) / 1e6
        if n <= 20_000:
            area = min(area, 1050.0)  # a county: DeWitt, Illinois, ~1,050 km²
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        gdf = generate_parcels(parcels_bounds_for_area(cx, cy, area), n_parcels=n, seed=1)
        gpd.GeoDataFrame(gdf).to_parquet(path)
    return path


def _covering_bytes(url: str, options: dict[str, Any], parcels: Path) -> tuple[int, int]:
    """(compressed bytes, objects) of the chunks that cover the parcels, all bands."""
    from parcelzarr.query._parcels import load_parcels
    from parcelzarr.query._plan import plan_chunks
    from zarr.core.sync import sync

    import parcelzarr as pz

    store = pz.open_store(url, storage_options=options | {"transport": "adlfs"})
    pset = load_parcels(str(parcels))
    total = objects = 0
    for name, info in store.grids.items():
        plan = plan_chunks(pset.to_crs(info.spec.crs), info.spec)
        for band in info.bands:
            arr = store._array(name, band)
            prefix = f"{name}/{band}/"

            async def sizes(arr: Any = arr, prefix: str = prefix, plan: Any = plan) -> list[int]:
                import asyncio

                async def size(key: str) -> int:
                    try:
                        return int(await store._handle.store.getsize(key))
                    except FileNotFoundError:  # never written (fill value): not read either
                        return 0

                keys = [prefix + arr.metadata.encode_chunk_key((0, int(cy), int(cx)))
                        for cy, cx in plan.chunks]
                return list(await asyncio.gather(*(size(k) for k in keys)))

            got = sync(sizes())
            total += sum(got)
            objects += sum(1 for g in got if g)
    store.close()
    return total, objects


def request_overhead(url: str, options: dict[str, Any], transport: str, n: int = 200
                     ) -> dict[str, float]:
    """Per-chunk request cost of a transport: ``n`` chunk GETs one at a time (ms each), and
    the same GETs 64 in flight (requests/s)."""
    import asyncio

    from parcelzarr.stores import open_store_handle
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    handle = open_store_handle(url, options | {"transport": transport}, read_only=True)
    store = handle.store

    async def keys() -> list[str]:
        out = []
        async for k in store.list_prefix("utm16n/10m/B04/c/"):
            out.append(k)
            if len(out) >= n:
                break
        return out

    names = sync(keys())
    proto = default_buffer_prototype()

    async def serial() -> None:
        for k in names:
            await store.get(k, proto)

    async def concurrent() -> None:
        sem = asyncio.Semaphore(64)

        async def one(k: str) -> None:
            async with sem:
                await store.get(k, proto)

        await asyncio.gather(*(one(k) for k in names))

    sync(serial())  # warm connections
    t0 = time.perf_counter()
    sync(serial())
    t1 = time.perf_counter()
    sync(concurrent())
    t2 = time.perf_counter()
    handle.close()
    return {"ms_per_request_serial": 1000 * (t1 - t0) / len(names),
            "requests_per_s_64_in_flight": len(names) / (t2 - t1)}


def gdal_baseline(az: Any, proxy: Any, scene: list[Path], parcels: Path, n: int,
                  delay: float) -> dict[str, Any]:
    """Per-parcel GDAL ``/vsiaz/`` windowed reads of the source GeoTIFFs (4 bands): each parcel
    opens each band and reads its window, as the per-parcel systems we replace do. The files
    are uploaded under a fresh prefix per run so GDAL starts cold; within the run GDAL's own
    caches (headers, blocks) are kept, which favours GDAL."""
    import geopandas as gpd
    import rasterio
    from azure.storage.blob import BlobServiceClient
    from rasterio.windows import from_bounds

    with BlobServiceClient.from_connection_string(az.connection_string) as client:
        for p in scene:
            with open(p, "rb") as f:
                client.get_blob_client(CONTAINER, f"cogs{delay:g}/{p.name}").upload_blob(
                    f, overwrite=True)
    gdf = gpd.read_parquet(parcels).to_crs("EPSG:32616").iloc[:n]
    env = {"AZURE_STORAGE_CONNECTION_STRING":
           az.storage_options(proxy.endpoint)["connection_string"],
           "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
           "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif"}
    proxy.delay_ms = delay
    before = proxy.snapshot()
    t0 = time.perf_counter()
    with rasterio.Env(**env):
        for geom in gdf.geometry:
            for p in scene:
                with rasterio.open(f"/vsiaz/{CONTAINER}/cogs{delay:g}/{p.name}") as ds:
                    ds.read(1, window=from_bounds(*geom.bounds, ds.transform))
    seconds = time.perf_counter() - t0
    used = proxy.snapshot()
    return {"parcels": len(gdf), "delay_ms": delay, "seconds": seconds,
            "parcels_per_s": len(gdf) / seconds,
            "requests": used.requests - before.requests,
            "bytes_read": used.bytes_out - before.bytes_out}


def child(args: argparse.Namespace) -> None:
    """One measurement in a fresh process; prints a JSON line."""
    import geopandas as gpd

    import parcelzarr as pz

    opts = json.loads(args.options) | {"transport": args.transport}
    parcels = gpd.read_parquet(args.parcels_file)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store = pz.open_store(args.url, storage_options=opts)
    t0 = time.perf_counter()
    df = store.zonal_stats(parcels, stats=STATS, bands=["B02", "B03", "B04", "B08"])
    seconds = time.perf_counter() - t0
    rep = store.last_report
    assert rep is not None
    store.close()
    print(json.dumps({
        "parcels": len(parcels), "rows": len(df), "seconds": seconds,
        "parcels_per_s": len(parcels) / seconds, "requests": rep.requests,
        "bytes_read": rep.bytes_read, "chunks": rep.chunks, "retries": rep.retries,
        "rss_before_mb": rss0 / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--parcels", default="10000,100000")
    ap.add_argument("--delays", default="0,20", help="ms added per request by the proxy")
    ap.add_argument("--transports", default="adlfs,obstore")
    ap.add_argument("--size", type=int, default=5490)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/parcelzarr-bench-query"))
    ap.add_argument("--json", type=Path, help="also write the measurements here")
    ap.add_argument("--gdal-parcels", type=int, default=300,
                    help="parcels for the per-parcel GDAL /vsiaz/ baseline (0: skip)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--options", help=argparse.SUPPRESS)
    ap.add_argument("--transport", help=argparse.SUPPRESS)
    ap.add_argument("--parcels-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    import parcelzarr as pz
    from parcelzarr.demo import demo_data
    from parcelzarr.testing import Azurite, LatencyProxy

    args.data_dir.mkdir(parents=True, exist_ok=True)
    _, scene = demo_data(args.data_dir, size=args.size, n_parcels=10_297)
    counts = [int(v) for v in args.parcels.split(",")]
    files = {n: _parcels(args.data_dir, args.size, n) for n in counts}
    rows = []
    with Azurite() as az, LatencyProxy(az.blob_endpoint) as proxy:
        az.create_container(CONTAINER)
        t0 = time.perf_counter()
        pz.ingest([str(p) for p in scene], STORE, storage_options=az.storage_options(),
                  quiet=True)
        print(f"ingest: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        via_proxy = az.storage_options(proxy.endpoint)
        for n in counts:
            cover, objects = _covering_bytes(STORE, az.storage_options(), files[n])
            for transport in args.transports.split(","):
                for delay in (float(v) for v in args.delays.split(",")):
                    proxy.delay_ms = delay
                    proxy.reset_counters()
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", "--url", STORE,
                         "--options", json.dumps(via_proxy), "--transport", transport,
                         "--parcels-file", str(files[n])],
                        check=True, capture_output=True, text=True,
                        env=os.environ | {"PYTHONWARNINGS": "ignore"},
                    )
                    m = json.loads(out.stdout.strip().splitlines()[-1])
                    m |= {"transport": transport, "delay_ms": delay,
                          "covering_bytes": cover, "covering_objects": objects,
                          "proxy_requests": proxy.snapshot().requests}
                    rows.append(m)
                    print(json.dumps(m), file=sys.stderr)
        overhead = []
        for transport in args.transports.split(","):
            for delay in (float(v) for v in args.delays.split(",")):
                proxy.delay_ms = delay
                o = request_overhead(STORE, via_proxy, transport)
                overhead.append(o | {"transport": transport, "delay_ms": delay})
                print(json.dumps(overhead[-1]), file=sys.stderr)
        gdal = [gdal_baseline(az, proxy, [Path(p) for p in scene], files[counts[0]],
                              args.gdal_parcels, d)
                for d in (float(v) for v in args.delays.split(",")) if args.gdal_parcels]
        for g in gdal:
            print(json.dumps({"gdal": g}), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"engine": rows, "gdal_vsiaz": gdal,
                                         "request_overhead": overhead}, indent=1))
    print("| parcels | transport | delay | parcels/s | s | bytes/parcel | requests/parcel "
          "| bytes read / covering chunks | peak RSS MB |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for m in rows:
        print(f"| {m['parcels']:,} | {m['transport']} | {m['delay_ms']:g} ms "
              f"| {m['parcels_per_s']:,.0f} | {m['seconds']:.2f} "
              f"| {m['bytes_read'] / m['parcels']:,.0f} | {m['requests'] / m['parcels']:.3f} "
              f"| {m['bytes_read'] / m['covering_bytes']:.2f} | {m['peak_rss_mb']:,.0f} |")
    print("\n| transport | delay | ms per chunk GET, one at a time | chunk GETs/s, 64 in flight |")
    print("|---|---:|---:|---:|")
    for o in overhead:
        print(f"| {o['transport']} | {o['delay_ms']:g} ms | {o['ms_per_request_serial']:.1f} "
              f"| {o['requests_per_s_64_in_flight']:,.0f} |")
    for g in gdal:
        best = max((m["parcels_per_s"] for m in rows
                    if m["delay_ms"] == g["delay_ms"] and m["parcels"] == counts[0]), default=0)
        print(f"\nGDAL /vsiaz/ per-parcel reads, {g['parcels']} parcels x 4 bands at "
              f"{g['delay_ms']:g} ms: {g['parcels_per_s']:,.0f} parcels/s, "
              f"{g['bytes_read'] / g['parcels']:,.0f} bytes/parcel, "
              f"{g['requests'] / g['parcels']:.1f} requests/parcel; engine (best transport) "
              f"{best / g['parcels_per_s']:,.0f}x faster")


if __name__ == "__main__":
    main()
