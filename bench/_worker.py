"""Worker subprocess: run one approach on the first ``n`` parcels and write what it measured.

Each approach runs in a fresh process so that its peak RSS is its own: the larger of a psutil
sampler (every 10 ms) and the kernel's high-water mark of this process image (``VmHWM`` in
``/proc/self/status``; ``ru_maxrss`` is not used because Linux carries it over from the
forked parent across ``exec``). The RSS after imports and loading the parcels (before the
timer starts) is recorded as the baseline. Only the approach itself is
timed (opening the store or datasets included).

Usage (internal; :mod:`bench._measure` builds the command line)::

    python -m bench._worker APPROACH SCENARIO_JSON N THREADS OUT_DIR

The proxy connection string comes in ``BENCH_CONNECTION_STRING``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

import geopandas as gpd
import psutil

from ._approaches import RUNNERS, Context
from ._config import Approach
from ._scenario import Scenario

__all__ = ["main"]

logger = logging.getLogger(__name__)

_MB = 1024 * 1024


class _PeakRss:
    """Samples this process's RSS in a daemon thread; :attr:`peak_mb` is the maximum seen."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self._proc = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        """Peak RSS in MiB, including the kernel's high-water mark where available."""
        return max(self.peak, _vm_hwm()) / _MB


def _vm_hwm() -> int:
    """Peak RSS of this process image in bytes (Linux ``VmHWM``), 0 where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return 0


def main(argv: list[str]) -> int:
    """Run the approach named in ``argv``; write ``stats.parquet`` and ``metrics.json``."""
    approach, scenario_file, n, threads, out = argv
    app = Approach(approach)
    scenario = Scenario.from_json(Path(scenario_file).read_text())
    path = scenario.ts_parcels_file if app.timeseries else scenario.parcels_file
    parcels = gpd.read_parquet(path).iloc[: int(n)]
    ctx = Context(scenario=scenario, connection_string=os.environ["BENCH_CONNECTION_STRING"],
                  threads=int(threads))
    baseline_mb = psutil.Process().memory_info().rss / _MB
    with _PeakRss() as rss:
        cpu0 = os.times()
        t0 = time.perf_counter()
        outcome = RUNNERS[app](parcels, ctx)
        seconds = time.perf_counter() - t0
        cpu1 = os.times()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    outcome.stats.to_parquet(out_dir / "stats.parquet")
    metrics = {
        "approach": app.value, "parcels": len(parcels), "seconds": seconds,
        "latencies_ms": [s * 1000 for s in outcome.latencies_s],
        "rss_baseline_mb": baseline_mb, "peak_rss_mb": rss.peak_mb,
        # CPU of this process (all its threads, GDAL's included) during the timed section
        "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
    }  # fmt: skip
    (out_dir / "metrics.json").write_text(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main(sys.argv[1:]))
