"""Run approach workers behind the latency proxy and turn what was counted into records.

Requests and bytes are counted at the :class:`~parcelzarr.testing.LatencyProxy` (reset before
each worker, read after it exits), so they are what crossed the wire, not estimates. Bytes are
request plus response bodies. Approaches timed on a sample are extrapolated linearly to the
whole parcel set (``parcels_per_s`` and the per-parcel figures are per timed parcel).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from parcelzarr.testing import LatencyProxy

from ._config import Approach
from ._stats import Agreement, compare

__all__ = ["Record", "WorkerFailedError", "add_ratios", "best_of", "check", "run_approach"]

logger = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parent.parent


class WorkerFailedError(RuntimeError):
    """A worker subprocess exited with an error."""


@dataclass
class Record:
    """One approach at one latency: the row of results.json."""

    approach: str
    latency_ms: float
    parcels: int
    parcels_total: int
    extrapolated: bool
    seconds: float
    seconds_total: float
    parcels_per_s: float
    requests: int
    bytes: int
    requests_per_parcel: float
    bytes_per_parcel: float
    p50_ms: float | None
    p95_ms: float | None
    peak_rss_mb: float
    rss_baseline_mb: float
    #: CPU seconds of the approach's own process during the timed section
    client_cpu_s: float | None = None
    #: CPU seconds of the Azurite emulator (node) while the approach's worker ran: on this
    #: machine the store's server shares the cores with the client, on Azure it does not
    store_cpu_s: float | None = None
    runs: int = 1
    seconds_runs: list[float] = field(default_factory=list)
    load_1m: float | None = None
    agreement: str = ""
    agrees: bool = True
    vs_parcelzarr: dict[str, float | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def run_approach(
    approach: Approach,
    *,
    scenario_file: Path,
    n: int,
    n_total: int,
    threads: int,
    proxy: LatencyProxy,
    connection_string: str,
    work_dir: Path,
    store_pid: int | None = None,
    timeout_s: float = 1800.0,
) -> tuple[Record, pd.DataFrame]:
    """Run ``approach`` on the first ``n`` of ``n_total`` parcels in a worker; count at proxy.

    ``store_pid``: the emulator's process, whose CPU time (children included) is taken
    around the worker's run."""
    out = work_dir / f"{approach.value}-{proxy.delay_ms:g}ms"
    env = dict(os.environ, BENCH_CONNECTION_STRING=connection_string,
               PYTHONPATH=os.pathsep.join(filter(None, [str(_REPO),
                                                        os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "bench._worker", approach.value, str(scenario_file), str(n),
           str(threads), str(out)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    proxy.reset_counters()
    store_cpu0 = _cpu_of_tree(store_pid)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=_REPO, env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    stats = proxy.snapshot()
    store_cpu1 = _cpu_of_tree(store_pid)
    if proc.returncode != 0:
        raise WorkerFailedError(
            f"{approach.value} at {proxy.delay_ms:g} ms failed (exit {proc.returncode}):\n"
            f"{proc.stderr[-4000:]}"
        )
    logger.debug("%s worker took %.1f s", approach.value, time.perf_counter() - t0)
    m = json.loads((out / "metrics.json").read_text())
    df = pd.read_parquet(out / "stats.parquet")
    lat = np.asarray(m["latencies_ms"], dtype=float)
    parcels = int(m["parcels"])
    seconds = float(m["seconds"])
    total_bytes = stats.bytes_in + stats.bytes_out
    record = Record(
        approach=approach.value, latency_ms=proxy.delay_ms, parcels=parcels,
        parcels_total=n_total, extrapolated=parcels < n_total, seconds=seconds,
        seconds_total=seconds * n_total / max(parcels, 1),
        parcels_per_s=parcels / seconds if seconds > 0 else float("inf"),
        requests=stats.requests, bytes=total_bytes,
        requests_per_parcel=stats.requests / max(parcels, 1),
        bytes_per_parcel=total_bytes / max(parcels, 1),
        p50_ms=float(np.percentile(lat, 50)) if lat.size else None,
        p95_ms=float(np.percentile(lat, 95)) if lat.size else None,
        peak_rss_mb=float(m["peak_rss_mb"]), rss_baseline_mb=float(m["rss_baseline_mb"]),
        seconds_runs=[seconds], load_1m=load, client_cpu_s=m.get("cpu_s"),
        store_cpu_s=(store_cpu1 - store_cpu0
                     if store_cpu0 is not None and store_cpu1 is not None else None),
    )  # fmt: skip
    return record, df


def _cpu_of_tree(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` and its children (None without one)."""
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system
    except psutil.Error:
        return None
    return total


def best_of(
    approach: Approach, *, repeats: int, budget_s: float, **kwargs: Any
) -> tuple[Record, pd.DataFrame]:
    """Run ``approach`` up to ``repeats`` times within ``budget_s``; keep the fastest run.

    Every run's wall time is kept in ``seconds_runs``; the statistics of the fastest run are
    returned (all runs compute the same thing, and each is checked by the caller's reference).
    """
    best: tuple[Record, pd.DataFrame] | None = None
    times: list[float] = []
    spent = 0.0
    while len(times) < max(repeats, 1) and (not times or spent < budget_s):
        t0 = time.perf_counter()
        record, df = run_approach(approach, **kwargs)
        spent += time.perf_counter() - t0
        times.append(record.seconds)
        if best is None or record.seconds < best[0].seconds:
            best = (record, df)
    assert best is not None
    best[0].runs = len(times)
    best[0].seconds_runs = times
    return best


def check(record: Record, result: pd.DataFrame, reference: pd.DataFrame,
          approach: Approach) -> Agreement:
    """Compare ``result`` with the parcelzarr reference and note the outcome on ``record``."""
    keys = ("parcel_id", "band", "time") if approach.timeseries else ("parcel_id", "band")
    if approach.timeseries:  # an approach may compute some of the dates
        reference = reference[reference["time"].isin(result["time"].unique())]
    agreement = compare(result, reference, keys=keys, weighted=approach.weighted)
    record.agreement = agreement.message
    record.agrees = agreement.ok
    return agreement


_RATIO_FIELDS = ("parcels_per_s", "bytes_per_parcel", "requests_per_parcel", "peak_rss_mb")


def add_ratios(records: list[Record]) -> None:
    """Fill ``vs_parcelzarr``: each figure divided by parcelzarr's, same latency.

    The reference is ``parcelzarr-batch`` (``parcelzarr-timeseries`` for the time-series
    approaches); ``p50_ms`` is compared with ``parcelzarr-read-loop``.
    """
    by_key = {(r.approach, r.latency_ms): r for r in records}
    for r in records:
        ref = by_key.get((Approach(r.approach).reference.value, r.latency_ms))
        loop = by_key.get((Approach.PZ_READ_LOOP.value, r.latency_ms))
        ratios: dict[str, float | None] = {}
        for f in _RATIO_FIELDS:
            a, b = getattr(r, f), getattr(ref, f) if ref else None
            ratios[f] = a / b if b else None
        ratios["p50_ms"] = (r.p50_ms / loop.p50_ms
                            if r.p50_ms is not None and loop and loop.p50_ms else None)
        r.vs_parcelzarr = ratios
