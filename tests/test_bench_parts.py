"""Pure parts of the benchmark: the statistics oracle, the result check, the report section."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._measure import Record  # noqa: E402 (needs sys.path above)
from bench._report import BEGIN, END, goals, replace_section, verdicts  # noqa: E402
from bench._stats import (  # noqa: E402
    compare,
    masked_stats,
    parcel_mask,
    parcel_window,
)

TRANSFORM = Affine(10.0, 0.0, 1000.0, 0.0, -10.0, 2000.0)


def test_window_and_mask_follow_pixel_centres() -> None:
    geom = shapely.box(1012.0, 1928.0, 1052.0, 1988.0)  # cols 1.2-5.2, rows 1.2-7.2
    win = parcel_window(geom.bounds, TRANSFORM, 100, 100)
    assert (win.r0, win.r1, win.c0, win.c1) == (1, 8, 1, 6)
    inside = parcel_mask(geom, TRANSFORM, win)
    assert inside.sum() == 4 * 6  # centres of cols 1..4, rows 1..6


def test_masked_stats_skip_nodata_and_outside() -> None:
    values = np.array([[0, 10], [20, 30]], dtype=np.uint16)
    inside = np.array([[True, True], [True, False]])
    count, mean, std = masked_stats(values, inside)
    assert (count, mean, std) == (2, 15.0, 5.0)
    count, mean, _ = masked_stats(values, np.zeros_like(inside))
    assert count == 0
    assert math.isnan(mean)


def _frame(counts: list[int], means: list[float]) -> pd.DataFrame:
    n = len(counts)
    return pd.DataFrame({"parcel_id": np.arange(n), "band": "B04", "count": counts,
                         "mean": means, "std": np.ones(n)})


def test_compare_accepts_equal_and_rejects_wrong_results() -> None:
    ref = _frame([100] * 200, [1000.0] * 200)
    assert compare(ref.copy(), ref).ok
    wrong = ref.copy()
    wrong.loc[3, "mean"] = 1001.0
    assert not compare(wrong, ref).ok
    missing = ref.iloc[:-1].copy()
    missing.loc[0, "band"] = "B08"
    assert not compare(missing, ref).ok


def test_compare_tolerates_a_flipped_edge_pixel() -> None:
    ref = _frame([100] * 200, [1000.0] * 200)
    edge = ref.copy()
    edge.loc[7, ["count", "mean"]] = [101, 1000.5]
    assert compare(edge, ref).ok
    many = ref.copy()
    many.loc[:10, "count"] = 101
    assert not compare(many, ref).ok  # more than 1 % of counts differ


@pytest.mark.parametrize("existing", ["", "# Results\n\n## Ingest layout\ntext\n"])
def test_section_is_replaced_between_markers_only(existing: str) -> None:
    first = replace_section(existing, f"{BEGIN}\none\n{END}\n")
    assert "one" in first
    assert existing.strip() in first
    second = replace_section(first + "\n## Query engine\nkept\n", f"{BEGIN}\ntwo\n{END}\n")
    assert "two" in second
    assert "one" not in second
    assert "## Query engine\nkept" in second
    assert existing.strip() in second


def _record(approach: str, pps: float, bpp: float, rpp: float, rss: float) -> Record:
    return Record(approach=approach, latency_ms=20.0, parcels=100, parcels_total=100,
                  extrapolated=False, seconds=100 / pps, seconds_total=100 / pps,
                  parcels_per_s=pps, requests=int(rpp * 100), bytes=int(bpp * 100),
                  requests_per_parcel=rpp, bytes_per_parcel=bpp, p50_ms=None, p95_ms=None,
                  peak_rss_mb=rss, rss_baseline_mb=100.0)


def test_verdicts_say_plainly_where_parcelzarr_is_not_ahead() -> None:
    records = [
        _record("parcelzarr-batch", 1000.0, 5e3, 0.1, 300.0),
        _record("gdal-vsiaz", 500.0, 2e4, 0.05, 400.0),
        _record("tile-download-cached", 2000.0, 6e4, 0.01, 900.0),
    ]
    text = "\n".join(verdicts(records))
    assert "parcelzarr-batch is ahead of `gdal-vsiaz`" in text
    assert "NOT ahead of `tile-download-cached` in parcels/s" in text
    assert "`gdal-vsiaz` has lower requests per parcel" in text


def test_weighted_compare_needs_every_row_within_float32_precision() -> None:
    ref = _frame([100] * 50, [1000.0] * 50).assign(count=lambda d: d["count"] * 0.7)
    close = ref.copy()
    close["mean"] *= 1 + 3e-7                 # exactextract's float32 fractions
    assert compare(close, ref, weighted=True).ok
    off = ref.copy()
    off.loc[4, "count"] += 0.5                 # half a pixel more: a wrong fraction
    assert not compare(off, ref, weighted=True).ok
    assert compare(off, ref).ok                # the centre rule's check would let it pass


def test_goals_report_each_ratio_and_whether_it_is_met() -> None:
    records = [
        _record("parcelzarr-batch", 1000.0, 5e3, 0.1, 300.0),
        _record("floor", 1200.0, 5e3, 0.1, 300.0),             # 1.2x: met
        _record("parcelzarr-coverage", 500.0, 5e3, 0.1, 300.0),  # 2x the centre: not met
        _record("exactextract-local", 200.0, 0.0, 0.0, 300.0),  # 2.5x: met
        _record("gdal-vsiaz-threads", 400.0, 2e4, 0.05, 400.0),  # 2.5x < 5x: not met
    ]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in goals(records)[2:]}
    assert "| 1.20 | yes |" in rows["centre rule: ≤ 1.5× the floor"]
    assert "| 2.00 | **no** |" in rows["coverage weights: ≤ 1.5× the centre rule"]
    assert "| 2.50 | yes |" in rows["coverage weights: ≥ 2× exactextract"]
    assert "`gdal-vsiaz-threads` time" in rows["county batch: ≥ 5× the strongest baseline"]
    assert "| 2.50 | **no** |" in rows["county batch: ≥ 5× the strongest baseline"]
    assert not any("time series" in k for k in rows)        # not measured: no row


def test_goal_between_runs_under_different_loads_is_not_called_met() -> None:
    batch = _record("parcelzarr-batch", 1000.0, 5e3, 0.1, 300.0)
    gdal = _record("gdal-vsiaz", 150.0, 2e4, 0.05, 400.0)  # 6.7x as measured
    batch.load_1m, gdal.load_1m = 2.0, 7.5                  # but the baseline ran under load
    row = next(line for line in goals([batch, gdal]) if "strongest baseline" in line)
    assert "not comparable: load 7.5 vs 2.0 (yes as measured)" in row
    gdal.load_1m = 2.5
    row = next(line for line in goals([batch, gdal]) if "strongest baseline" in line)
    assert row.endswith("| 6.67 | yes |")


def test_cpu_accounting_line_compares_client_cpu_with_the_strongest_baseline() -> None:
    batch = _record("parcelzarr-batch", 1000.0, 5e3, 0.1, 300.0)
    gdal = _record("gdal-vsiaz", 200.0, 2e4, 0.05, 400.0)
    batch.client_cpu_s, batch.store_cpu_s = 0.08, 0.06
    gdal.client_cpu_s, gdal.store_cpu_s = 0.3, 0.02
    text = "\n".join(goals([batch, gdal]))
    assert "`gdal-vsiaz` / `parcelzarr-batch` = 3.75×" in text
