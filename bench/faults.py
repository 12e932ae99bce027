"""Soak of the storage layer under faults: hung chunk GETs and a dead store, with the default
``PARCELZARR_*`` timeouts (or the ones in the environment).

Scenarios, each through both transports (Azurite behind ``parcelzarr.testing.LatencyProxy``):

* ``hang``: a synthetic county (``--size`` px, ``--parcels`` parcels, 4 bands) queried
  clean, then with ``--rate`` of chunk GETs never answered (issue 9: 2 % hung GETs turned a
  2-5 s query into 363 s); results must be identical.
* ``dead``: every request hangs after the store is opened; time until the query fails with
  ``StoreUnreachableError`` (bound: ``PARCELZARR_UNREACHABLE_AFTER``, 60 s by default).

Usage::

    .venv/bin/python bench/faults.py                   # both scenarios, Markdown on stdout
    .venv/bin/python bench/faults.py --scenario hang --rate 0.02 --size 2000 --parcels 2000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

BANDS = ["B02", "B03", "B04", "B08"]


def _data(data_dir: Path, size: int, n_parcels: int) -> tuple[list[Path], Any]:
    from parcelzarr.demo import generate_parcels, generate_scene, scene_bounds

    parcels = generate_parcels(scene_bounds(size=size), n_parcels=n_parcels, seed=3)
    paths = generate_scene(data_dir / f"faults-{size}", parcels, size=size, bands=BANDS)
    return paths, parcels


def _hang(url: str, opts: dict[str, Any], parcels: Any, proxy: Any, rate: float) -> dict[str, Any]:
    import parcelzarr as pz

    store = pz.open_store(url, storage_options=opts)
    t = time.perf_counter()
    clean = store.zonal_stats(parcels, stats=("count", "mean", "max"))
    clean_s = time.perf_counter() - t
    store = pz.open_store(url, storage_options=opts)
    proxy.reset_counters()
    proxy.fault_rate(rate, "hang", match=r"/c/", seed=1)
    t = time.perf_counter()
    faulty = store.zonal_stats(parcels, stats=("count", "mean", "max"))
    faulty_s = time.perf_counter() - t
    proxy.clear_faults()
    costs = store._handle.counters.snapshot()
    return {"clean_s": clean_s, "faulty_s": faulty_s, "hung": proxy.faults_injected,
            "requests": proxy.requests, "hedges": costs.hedges, "retries": costs.retries,
            "identical": bool(clean.equals(faulty))}


def _dead(url: str, opts: dict[str, Any], parcels: Any, proxy: Any) -> dict[str, Any]:
    import parcelzarr as pz
    from parcelzarr.errors import StoreUnreachableError

    store = pz.open_store(url, storage_options=opts)
    proxy.fault_rate(1.0, "hang", methods=("GET", "HEAD", "PUT", "DELETE", "POST"))
    t = time.perf_counter()
    try:
        store.zonal_stats(parcels, stats=("count",))
        outcome = "no error (!)"
    except StoreUnreachableError as exc:
        outcome = f"StoreUnreachableError: {str(exc)[:120]}..."
    finally:
        proxy.clear_faults()
    return {"fail_s": time.perf_counter() - t, "outcome": outcome}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=["hang", "dead", "all"], default="all")
    parser.add_argument("--rate", type=float, default=0.02, help="share of chunk GETs hung")
    parser.add_argument("--size", type=int, default=2000, help="scene edge in pixels")
    parser.add_argument("--parcels", type=int, default=2000)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir())
                        / "parcelzarr-bench-faults")
    args = parser.parse_args()

    import parcelzarr as pz
    from parcelzarr.testing import Azurite, LatencyProxy

    paths, parcels = _data(args.data_dir, args.size, args.parcels)
    rows = []
    with Azurite() as az, LatencyProxy(az.blob_endpoint) as proxy:
        az.create_container("faults")
        url = "az://faults/county.zarr"
        pz.ingest([str(p) for p in paths], url, storage_options=az.storage_options(),
                  quiet=True)
        for transport in ("obstore", "adlfs"):
            opts = az.storage_options(proxy.endpoint) | {"transport": transport}
            if args.scenario in ("hang", "all"):
                r = _hang(url, opts, parcels, proxy, args.rate)
                rows.append(f"| hang {args.rate:.0%} of chunk GETs | {transport} | clean "
                            f"{r['clean_s']:.1f} s, faulty {r['faulty_s']:.1f} s; {r['hung']} "
                            f"hung of {r['requests']} requests, {r['hedges']} hedges, "
                            f"{r['retries']} retries; identical: {r['identical']} |")
            if args.scenario in ("dead", "all"):
                r = _dead(url, opts, parcels, proxy)
                rows.append(f"| dead store (all requests hang) | {transport} | failed after "
                            f"{r['fail_s']:.1f} s: {r['outcome']} |")
    print("| scenario | transport | outcome |\n|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
