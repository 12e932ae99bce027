"""The benchmark's command line: build, deploy, measure every approach, check, report."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from parcelzarr.testing import Azurite, LatencyProxy

from ._config import APPROACHES, Approach, BenchConfig, config_for
from ._env import environment
from ._measure import Record, add_ratios, best_of, check
from ._report import render_section, rerender, write_all
from ._scenario import Scenario, build_local_data, deploy

__all__ = ["main"]

logger = logging.getLogger("bench")

_BENCH = Path(__file__).resolve().parent
_REFERENCES = (Approach.PZ_BATCH, Approach.PZ_COVERAGE, Approach.PZ_TIMESERIES)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description="parcelzarr vs the approaches users would otherwise pick, on Azurite "
        "behind a latency proxy. Writes results.json, results.png and a section of RESULTS.md.",
    )
    p.add_argument("--quick", action="store_true",
                   help="small scene (1024² px, ~300 parcels): a smoke test of ~1 minute")
    p.add_argument("--out", type=Path, default=_BENCH,
                   help="folder for results.json, results.png, RESULTS.md (default: bench/)")
    p.add_argument("--cache", type=Path, default=_BENCH / ".cache",
                   help="folder for generated data, reused between runs (default: bench/.cache)")
    p.add_argument("--latencies", default="0,20",
                   help="comma-separated proxy delays in ms per request (default: 0,20)")
    p.add_argument("--repeats", type=int, default=None,
                   help="runs per approach, fastest reported, while an approach's runs take "
                   "under 40 s in total (default: 3 full, 1 quick)")
    p.add_argument("--approaches", default="",
                   help="comma-separated subset of approaches (parcelzarr references are "
                   "always run); default: all")
    p.add_argument("--chunk", type=int, default=None, metavar="PX",
                   help="object edge of the benchmark's stores (default: the ingest default, "
                   "256); the layout trade-off of a county batch")
    p.add_argument("--inner-chunk", type=int, default=None, metavar="PX",
                   help="with --chunk: objects are shards of chunks of this edge")
    p.add_argument("--render-only", action="store_true",
                   help="rewrite the chart and RESULTS.md section in --out from its "
                   "results.json and meta.json; run nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _selected(spec: str) -> list[Approach]:
    if not spec:
        return list(APPROACHES)
    wanted = {Approach(s.strip()) for s in spec.split(",") if s.strip()}
    wanted |= {a.reference for a in wanted}
    return [a for a in APPROACHES if a in wanted]


def _measure_all(
    cfg: BenchConfig, scenario: Scenario, approaches: Sequence[Approach], az: Azurite,
    work: Path,
) -> list[Record]:
    scenario_file = work / "scenario.json"
    scenario_file.write_text(scenario.to_json())
    records: list[Record] = []
    with LatencyProxy(az.blob_endpoint) as proxy:
        cs = az.storage_options(proxy.endpoint)["connection_string"]
        for latency in cfg.latencies_ms:
            proxy.delay_ms = latency
            refs: dict[Approach, pd.DataFrame] = {}
            for app in approaches:
                n_total = scenario.n_ts_parcels if app.timeseries else scenario.n_parcels
                record, df = best_of(
                    app, repeats=cfg.repeats, budget_s=cfg.repeat_budget_s,
                    scenario_file=scenario_file, n=cfg.sample(app, n_total),
                    n_total=n_total, threads=cfg.threads, proxy=proxy, connection_string=cs,
                    work_dir=work, store_pid=az.pid,
                )
                if app in _REFERENCES:
                    refs[app] = df
                    record.agreement = "reference"
                else:
                    check(record, df, refs[app.reference], app)
                records.append(record)
                print(f"[{latency:g} ms] {app.value:26s} {record.parcels:6d} parcels "
                      f"{record.seconds:8.2f} s (best of {record.runs}) "
                      f"{record.parcels_per_s:10.1f}/s "
                      f"{record.requests:7d} req {record.bytes / 1e6:9.1f} MB "
                      f"rss {record.peak_rss_mb:6.0f} MB  "
                      f"{'ok' if record.agrees else 'MISMATCH'}: {record.agreement}",
                      flush=True)
    return records


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit status 1 if any approach's results disagree with parcelzarr."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("azure", "urllib3", "fsspec", "adlfs", "rasterio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.render_only:
        rerender(args.out)
        return 0
    latencies = tuple(float(v) for v in args.latencies.split(",") if v.strip())
    cfg = config_for("quick" if args.quick else "full", latencies_ms=latencies)
    if args.repeats is not None:
        cfg = dataclasses.replace(cfg, repeats=args.repeats)
    if args.chunk is not None:
        cfg = dataclasses.replace(cfg, chunk_size=args.chunk)
    if args.inner_chunk is not None:
        cfg = dataclasses.replace(cfg, inner_chunk=args.inner_chunk)
    approaches = _selected(args.approaches)
    t0 = time.perf_counter()
    env = environment()  # at the start: the commit that is measured
    data = build_local_data(cfg, args.cache)
    with tempfile.TemporaryDirectory(prefix="parcelzarr-bench-") as tmp, Azurite() as az:
        scenario = deploy(cfg, data, az)
        logger.info("deployed: upload %.1f s, ingest %.1f s, time-series ingest %.1f s",
                    *(scenario.setup_seconds[k] for k in
                      ("upload", "ingest", "ingest_timeseries")))
        records = _measure_all(cfg, scenario, approaches, az, Path(tmp))
    add_ratios(records)
    bad = [r for r in records if not r.agrees]
    if bad:
        for r in bad:
            print(f"RESULTS DISAGREE: {r.approach} at {r.latency_ms:g} ms: {r.agreement}",
                  file=sys.stderr)
        print("no timings reported: fix the disagreement first", file=sys.stderr)
        return 1
    cmd = " ".join(["bench/run.py", *(shlex.quote(a) for a in (argv or sys.argv[1:]))])
    meta = {
        "command": f".venv/bin/python {cmd}".strip(), "mode": cfg.mode,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.perf_counter() - t0, "environment": env,
        "repeats": cfg.repeats, "repeat_budget_s": cfg.repeat_budget_s,
        "scenario": {
            "size": scenario.size, "bands": scenario.bands, "cog_bytes": scenario.cog_bytes,
            "n_parcels": scenario.n_parcels, "n_ts_parcels": scenario.n_ts_parcels,
            "ts_size": scenario.ts_size, "ts_bounds": scenario.ts_bounds,
            "setup_seconds": scenario.setup_seconds,
        },
    }  # fmt: skip
    write_all(records, args.out, meta)
    section = render_section(records, meta=meta, chart=None)
    print(section.split("### Results", 1)[1].rsplit("<!--", 1)[0])
    return 0
