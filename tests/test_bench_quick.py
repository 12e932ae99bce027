"""Smoke test of the benchmark: ``bench/run.py --quick`` end to end on real Azurite and GDAL.

Runs in a subprocess as ``make bench-quick`` does, but writes into a temporary folder so the
committed results are never overwritten, and at one latency: 20 ms, the one of the verdict.
Every approach still runs and is checked against its reference; at 0 ms the same approaches
read the same data into the same rows (the proxy only delays requests), so a second latency
doubled the time and checked nothing new. The report code loops over whatever latencies ran.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
APPROACHES = {
    "tile-download-per-parcel",
    "tile-download-cached",
    "gdal-vsiaz",
    "gdal-vsiaz-threads",
    "parcelzarr-read-loop",
    "parcelzarr-read-cold",
    "parcelzarr-batch",
    "gdal-vsiaz-timeseries",
    "parcelzarr-timeseries",
    "parcelzarr-coverage",
    "parcelzarr-one-date",
    "exactextract-local",
    "exactextract-vsiaz",
    "floor",
    "floor-coverage",
    "floor-timeseries",
}
REQUIRED = {"approach", "latency_ms", "parcels", "parcels_per_s", "bytes_per_parcel",
            "requests_per_parcel", "p50_ms", "peak_rss_mb"}


@pytest.mark.azure
@pytest.mark.slow
@pytest.mark.timeout(960)
def test_bench_quick_runs_and_all_approaches_agree(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--out", str(tmp_path),
         "--latencies", "20"],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = json.loads((tmp_path / "results.json").read_text())
    assert isinstance(records, list)
    assert {r["latency_ms"] for r in records} == {20.0}
    assert sorted(r["approach"] for r in records) == sorted(APPROACHES)  # each once
    for r in records:
        assert r.keys() >= REQUIRED
        assert r["agrees"], r
        network = ("bytes_per_parcel", "requests_per_parcel")
        for key in ("parcels", "parcels_per_s", *network, "peak_rss_mb"):
            if r["approach"] == "exactextract-local" and key in network:
                assert r[key] == 0, (r["approach"], key)  # reads local files, nothing else
                continue
            assert r[key] > 0, (r["approach"], key)
    md = (tmp_path / "RESULTS.md").read_text()
    assert "## Benchmark: parcelzarr vs alternatives" in md
    assert "### Goals (issue 11)" in md
    assert (tmp_path / "results.png").stat().st_size > 10_000
