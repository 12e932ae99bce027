"""Scale measurements (issue 13): planning 1 M / 10 M parcels, streaming, Dask on a state.

    .venv/bin/python bench/scale.py store                 # the state-sized store (cached)
    .venv/bin/python bench/scale.py plan --parcels 1000000 [--cell 316]
    .venv/bin/python bench/scale.py stream --parcels 1000000 --batch 50000 [--whole]
    .venv/bin/python bench/scale.py dask --what county|state|ingest --workers 1|2

The *state store* is a real local parcelzarr store whose single grid (EPSG:32616, 10 m, 256²
chunks) spans 400 x 600 km, an Illinois-sized extent, with pixels written only in 16 patches of
1,024² px spread over it (one band, B04, one date): the grid, its lattice and its chunk keys are
those of a state, while the disk holds 256 chunks. Parcels are generated in code: squares on a
regular lattice of ``--cell`` metres (default 316 m: 10 ha, the demo county's density), each
shrunk by 5 m a side (roads), over a square region centred in the store.

Every command prints one JSON line with its figures, ``uptime``'s load and the command, to be
copied into bench/RESULTS.md (machine: 2 shared cores; timings vary with the load).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CACHE = Path(__file__).resolve().parent / ".cache" / "scale"
CRS = "EPSG:32616"
#: The state: 400 km x 600 km (x0, y0 top-left; multiples of 60 m).
STATE = (200_040.0, 4_700_040.0, 400_000.0, 600_000.0)
PATCH = 1024  # px per patch edge
PATCHES = 4  # per side: 16 patches


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() \
        else "?"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _hwm_mb() -> float:
    """This process's peak RSS so far (VmHWM; Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return _peak_mb()


def patch_origins() -> list[tuple[float, float]]:
    """Top-left corners of the written patches: a 4 x 4 lattice over the state, the first and
    last at its corners (so the grid spans the state)."""
    x0, y0, w, h = STATE
    xs = np.linspace(x0, x0 + w - PATCH * 10, PATCHES)
    ys = np.linspace(y0, y0 - h + PATCH * 10, PATCHES)
    return [(round(x / 60) * 60.0, round(y / 60) * 60.0) for y in ys for x in xs]


def make_state_store(url: str | None = None) -> str:
    """Write the patches as GeoTIFFs and ingest them (cached)."""
    import rasterio
    from rasterio.transform import from_origin

    import parcelzarr as pz

    url = url or str(CACHE / "state.zarr")
    if Path(url).exists():
        return url
    tifs = CACHE / "patches"
    tifs.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, (x, y) in enumerate(patch_origins()):
        p = tifs / f"patch{i:02d}.tif"
        data = rng.integers(1, 10_000, size=(PATCH, PATCH), dtype=np.uint16)
        with rasterio.open(p, "w", driver="GTiff", width=PATCH, height=PATCH, count=1,
                           dtype="uint16", crs=CRS, transform=from_origin(x, y, 10, 10),
                           nodata=0, tiled=True, blockxsize=256, blockysize=256) as dst:
            dst.write(data, 1)
        paths.append(str(p))
    pz.ingest(paths, url, band="B04", time="2024-06-15", quiet=True)
    return url


def make_county_store() -> tuple[str, Path]:
    """The demo county (`parcelzarr demo`'s data: 10,297 parcels, 5490² px, 4 bands) ingested
    into a local store (cached); returns the store and the parcels file."""
    import parcelzarr as pz
    from parcelzarr.demo import demo_data

    url = CACHE / "county.zarr"
    parcels, scene = demo_data(CACHE / "county-data", size=5490, n_parcels=10_297, seed=0)
    if not url.exists():
        pz.ingest([str(p) for p in scene], str(url), quiet=True)
    return str(url), parcels


def lattice_parcels(n: int, cell: float, *, centre: tuple[float, float] | None = None,
                    box: tuple[float, float, float, float] | None = None) -> Any:
    """``n`` squares on a ``cell``-metre lattice (row-major), centred on ``centre`` or filling
    ``box`` (xmin, ymin, xmax, ymax) row by row; each shrunk by 5 m a side."""
    import geopandas as gpd
    import shapely

    if box is None:
        x0s, y0s, w, h = STATE
        cx, cy = centre or (x0s + w / 2, y0s - h / 2)
        side = int(np.ceil(np.sqrt(n)))
        box = (cx - side * cell / 2, cy - side * cell / 2, cx + side * cell / 2,
               cy + side * cell / 2)
    ncol = int((box[2] - box[0]) // cell)
    k = np.arange(n)
    xmin = box[0] + (k % ncol) * cell + 5
    ymax = box[3] - (k // ncol) * cell - 5
    geoms = shapely.box(xmin, ymax - cell + 10, xmin + cell - 10, ymax)
    return gpd.GeoDataFrame({"parcel_id": k}, geometry=geoms, crs=CRS)


def patch_parcels(cell: float = 316.0) -> Any:
    """Parcels over every written patch (the lattice of ``cell`` inside each patch)."""
    import pandas as pd

    frames = []
    per_side = int(PATCH * 10 // cell)
    for x, y in patch_origins():
        frames.append(lattice_parcels(per_side * per_side, cell,
                                      box=(x, y - PATCH * 10, x + PATCH * 10, y)))
    out = pd.concat(frames, ignore_index=True)
    out["parcel_id"] = np.arange(len(out))
    return out


def cmd_plan(args: argparse.Namespace) -> dict[str, Any]:
    import parcelzarr as pz

    url = make_state_store()
    t0 = time.perf_counter()
    parcels = lattice_parcels(args.parcels, args.cell)
    t_gen = time.perf_counter() - t0
    store = pz.open_store(url)
    t0 = time.perf_counter()
    plan = store.plan(parcels, id_column="parcel_id", bands=["B04"], stats="mean")
    wall = time.perf_counter() - t0
    return {"what": "plan", "parcels": args.parcels, "cell_m": args.cell,
            "plan_s": round(wall, 2), "generate_s": round(t_gen, 2),
            "peak_rss_mb": round(_peak_mb()), "spatial_chunks": plan.grids[0].spatial_chunks,
            "requests": plan.requests, "bytes_read": plan.bytes_read,
            "bytes_exact": plan.bytes_exact, "objects_written": plan.grids[0].objects_written,
            "estimated_query_s": round(plan.seconds, 1),
            "get_cost_usd": round(plan.get_cost_usd, 4)}


def stream_file(n: int) -> Path:
    """``n`` parcels over the patches (a lattice, cell chosen for ``n``) in random order, as
    ONE row group of a GeoParquet file, with a few register-like attributes (cached). Made
    in a child process, so a measured run's peak RSS never includes making it."""
    path = CACHE / f"stream-{n}.parquet"
    if not path.exists():
        import subprocess

        subprocess.run([sys.executable, __file__, "parcels", "--parcels", str(n)], check=True)
    return path


def cmd_parcels(args: argparse.Namespace) -> dict[str, Any]:
    import pyarrow.parquet as pq

    n = args.parcels
    per_side = int(np.ceil(np.sqrt(n / PATCHES**2)))
    parcels = patch_parcels(cell=float(np.floor(PATCH * 10 / per_side)))
    parcels = parcels.sample(n=n, random_state=0).reset_index(drop=True)
    parcels["parcel_id"] = np.arange(n)
    rng = np.random.default_rng(0)
    parcels["crop"] = rng.choice(["corn", "soybeans", "wheat", "alfalfa", "fallow"], n)
    parcels["area_ha"] = parcels.area / 1e4
    path = CACHE / f"stream-{n}.parquet"
    parcels.to_parquet(path, row_group_size=n)
    return {"what": "parcels", "parcels": n, "path": str(path),
            "row_groups": pq.ParquetFile(path).num_row_groups,
            "bytes": path.stat().st_size}


def cmd_stream(args: argparse.Namespace) -> dict[str, Any]:
    """A streamed query (or, with --whole, the same query on the whole file at once)."""
    from parcelzarr.query import stream_zonal_stats

    import parcelzarr as pz

    url = make_state_store()
    path = stream_file(args.parcels)
    out = CACHE / f"stream-out-{args.parcels}.parquet"
    kw: dict[str, Any] = {"id_column": "parcel_id", "bands": ["B04"],
                          "stats": "count,mean,median"}
    store = pz.open_store(url)
    base = _hwm_mb()
    t0 = time.perf_counter()
    if args.whole:
        df = store.zonal_stats(str(path), **kw)
        rows, batches, spill = len(df), 1, 0
    else:
        rep = stream_zonal_stats(store, path, out, batch_size=args.batch, **kw)
        rows, batches, spill = rep.rows, rep.batches, rep.spill_bytes
    wall = time.perf_counter() - t0
    return {"what": "whole" if args.whole else "stream", "parcels": args.parcels,
            "batch": None if args.whole else args.batch, "file_bytes": path.stat().st_size,
            "seconds": round(wall, 1), "rows": rows, "batches": batches,
            "spill_bytes": spill, "rss_after_open_mb": round(base),
            "peak_rss_mb": round(_hwm_mb())}


def _dask_query(url: str, parcels: Any, workers: int, bands: list[str]) -> dict[str, Any]:
    """One query on one process, then on a LocalCluster of ``workers`` processes."""
    import pandas as pd
    from distributed import Client, LocalCluster
    from parcelzarr.query._blocks import block_parts, chunk_ranges, chunk_reads, partition_parcels

    import parcelzarr as pz
    from parcelzarr import _config

    store = pz.open_store(url)
    store.zonal_stats(parcels.iloc[:100], id_column="parcel_id", bands=bands, stats="mean")
    t0 = time.perf_counter()  # (above: lazy imports and GDAL set up, as in a warm worker)
    single = store.zonal_stats(parcels, id_column="parcel_id", bands=bands, stats="mean")
    t_single = time.perf_counter() - t0
    one = store.last_report
    assert one is not None
    # the partition the Dask path will make (pure; the same call as query/_distributed.py)
    name = next(iter(store.grids))
    info = store.grids[name]
    geoms = parcels.geometry.to_numpy()
    grid_of = np.zeros(len(parcels), dtype=np.int64)
    t0 = time.perf_counter()
    parts, edges = partition_parcels(
        {name: info.spec}, {name: geoms}, grid_of,
        seconds_per_chunk={name: _config.chunk_seconds() * len(info.bands) * info.times.size},
        target_s=_config.task_seconds(), min_tasks=2 * workers)
    t_part = time.perf_counter() - t0
    r = chunk_ranges(__import__("shapely").bounds(geoms), info.spec)
    n_cols = info.spec.chunk_counts[1]
    total, distinct = chunk_reads(parts, r, n_cols)
    straddlers = np.unique(np.concatenate([t.parcels[t.straddle] for t in parts
                                           if t.straddle is not None] + [np.empty(0, int)]))
    # the blocks before straddlers were reduced by the driver: each parcel whole in the
    # block of its first chunk, reading its neighbours' chunks
    whole, _ = chunk_reads(block_parts(r, n_cols, edges[name]), r, n_cols)
    # the partition before issue 13: the spatial order cut into 2 x workers contiguous runs
    from parcelzarr.query._distributed import spatial_order
    from parcelzarr.query._parcels import load_parcels

    pset = load_parcels(parcels, id_column="parcel_id")
    old = np.array_split(spatial_order(store.catalogue, pset,
                                       np.full(len(pset), name, dtype=object)), 2 * workers)
    old_total, _ = chunk_reads([p for p in old if p.size], r, info.spec.chunk_counts[1])
    seen: list[logging.LogRecord] = []
    log = logging.getLogger("parcelzarr.query._distributed")
    log.setLevel(logging.INFO)
    log.addHandler(_ListHandler(seen))
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        # warm workers: imports are a one-off cost of a long-lived cluster, not of a query
        # the first query on fresh workers also pays lazy imports and GDAL set up: timed
        # apart (cold); the second is a long-lived cluster's (warm)
        t0 = time.perf_counter()
        store.zonal_stats(parcels, id_column="parcel_id", bands=bands, stats="mean",
                          scheduler=client)
        t_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        df = store.zonal_stats(parcels, id_column="parcel_id", bands=bands, stats="mean",
                               scheduler=client)
        t_dask = time.perf_counter() - t0
        rep = store.last_report
    assert rep is not None
    try:
        pd.testing.assert_frame_equal(df, single, check_exact=True)
        same = True
    except AssertionError:
        same = False
    return {"workers": workers, "parcels": len(parcels), "tasks": len(parts),
            "block_edge_chunks": edges[name], "partition_s": round(t_part, 3),
            "single_process_s": round(t_single, 2), "dask_cold_s": round(t_cold, 2),
            "dask_s": round(t_dask, 2),
            "speedup_vs_single": round(t_single / t_dask, 2),
            "requests_single": one.requests, "requests_dask": rep.requests,
            "bytes_single": one.bytes_read, "bytes_dask": rep.bytes_read,
            "bytes_read_twice_frac": round(rep.bytes_read / max(1, one.bytes_read) - 1, 4),
            "straddlers": int(straddlers.size),
            "driver_straddlers_mb_s": [r.args[1:] for r in seen
                                       if "straddlers reduced" in r.msg][-1:],
            "spatial_chunk_reads_planned": total, "distinct_spatial_chunks": distinct,
            "spatial_chunk_reads_whole_parcel_blocks": whole,
            "spatial_chunk_reads_before_issue13": old_total,
            "identical": same}


class _ListHandler(logging.Handler):
    """Keeps the records it is given (the Dask path logs what the driver reduced)."""

    def __init__(self, out: list[logging.LogRecord]) -> None:
        super().__init__(logging.INFO)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        self.out.append(record)


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _count(path: Path) -> int:
    return sum(1 for p in path.rglob("B04/c/*/*/*") if p.is_file())


def cmd_dask(args: argparse.Namespace) -> dict[str, Any]:
    import geopandas as gpd

    if args.what == "state":
        url = make_state_store()
        parcels = patch_parcels()
        out = _dask_query(url, parcels, args.workers, ["B04"])
    elif args.what == "county":
        url, src = make_county_store()
        parcels = gpd.read_parquet(src).to_crs(CRS)[["parcel_id", "geometry"]]
        out = _dask_query(url, parcels, args.workers, ["B02", "B03", "B04", "B08"])
    else:  # ingest of the 16 patch tiles
        from distributed import Client, LocalCluster

        import parcelzarr as pz

        make_state_store()
        tifs = sorted(str(p) for p in (CACHE / "patches").glob("*.tif"))
        base = CACHE / f"ingest-{args.workers}"
        import shutil

        for d in ("single", "dask"):
            shutil.rmtree(base / d, ignore_errors=True)
        t0 = time.perf_counter()
        pz.ingest(tifs, str(base / "single"), band="B04", time="2024-06-15", quiet=True,
                        workers=1)
        t_single = time.perf_counter() - t0
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster):
            t0 = time.perf_counter()
            rep = pz.ingest(tifs, str(base / "dask"), band="B04", time="2024-06-15",
                            quiet=True, scheduler=cluster.scheduler_address)
            t_dask = time.perf_counter() - t0
        out = {"workers": args.workers, "tiles": len(tifs), "tasks": rep.tasks,
               "single_process_1_thread_s": round(t_single, 2), "dask_s": round(t_dask, 2),
               "speedup_vs_single": round(t_single / t_dask, 2),
               "stored_bytes_single": _du(base / "single"), "stored_bytes_dask": _du(base / "dask"),
               "objects_single": _count(base / "single"), "objects_dask": _count(base / "dask")}
    return {"what": f"dask-{args.what}", **out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("store")
    p = sub.add_parser("plan")
    p.add_argument("--parcels", type=int, default=1_000_000)
    p.add_argument("--cell", type=float, default=316.0)
    p = sub.add_parser("parcels")
    p.add_argument("--parcels", type=int, default=1_000_000)
    p = sub.add_parser("stream")
    p.add_argument("--parcels", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=50_000)
    p.add_argument("--whole", action="store_true", help="the whole file in one zonal_stats")
    p = sub.add_parser("dask")
    p.add_argument("--what", choices=["county", "state", "ingest"], default="state")
    p.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    CACHE.mkdir(parents=True, exist_ok=True)
    if args.cmd == "store":
        out: dict[str, Any] = {"what": "store", "url": make_state_store()}
    else:
        out = {"plan": cmd_plan, "dask": cmd_dask, "parcels": cmd_parcels,
               "stream": cmd_stream}[args.cmd](args)
    out["load"] = _load()
    out["command"] = "bench/scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
