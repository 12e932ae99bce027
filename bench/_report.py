"""Write results.json, this benchmark's section of RESULTS.md, and the chart.

RESULTS.md is shared with other benchmarks (``## Ingest layout``, ``## Query engine``): only
the text between :data:`BEGIN` and :data:`END` is rewritten; the rest of the file is kept.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from parcelzarr._ingest import DEFAULT_TIME_CHUNK

from ._config import Approach
from ._measure import Record

__all__ = ["BEGIN", "END", "render_section", "replace_section", "rerender", "verdicts", "write_all"]

logger = logging.getLogger(__name__)

BEGIN = "<!-- BEGIN bench/run.py: parcelzarr vs alternatives (generated; edit bench/_report.py) -->"
END = "<!-- END bench/run.py: parcelzarr vs alternatives -->"

_PZ = {Approach.PZ_BATCH.value, Approach.PZ_READ_LOOP.value, Approach.PZ_READ_COLD.value,
       Approach.PZ_TIMESERIES.value, Approach.PZ_COVERAGE.value, Approach.PZ_ONE_DATE.value}
_FLOORS = {a.value for a in Approach if a.floor}


def _fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "—"
    if abs(v) >= 100 or digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def _ratio(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.2g}×" if v < 10 else f"{v:,.0f}×"


def _by(records: Sequence[Record]) -> dict[tuple[str, float], Record]:
    return {(r.approach, r.latency_ms): r for r in records}


def verdicts(records: Sequence[Record]) -> list[str]:
    """Plain statements: is parcelzarr ahead of each baseline at the highest latency?"""
    if not records:
        return []
    lat = max(r.latency_ms for r in records)
    by = _by(records)
    lines = []
    for r, ref_name, ref in _baselines(records, lat):
        speed = ref.parcels_per_s / r.parcels_per_s
        if r.bytes == 0 and r.requests == 0:  # local files: no store traffic to compare
            lines.append(
                f"- `{r.approach}` reads local files (no store requests or bytes to compare): "
                + (f"{ref_name} is ahead, {speed:,.1f}× its parcels/s." if speed > 1 else
                   f"**{ref_name} is NOT ahead: {speed:.2f}× its parcels/s.**")
            )
            continue
        volume = r.bytes_per_parcel / ref.bytes_per_parcel if ref.bytes_per_parcel else None
        ahead_speed = speed > 1
        ahead_bytes = volume is not None and volume > 1
        if ahead_speed and ahead_bytes:
            lines.append(
                f"- {ref_name} is ahead of `{r.approach}`: {speed:,.1f}× the parcels/s, "
                f"{volume:,.1f}× fewer bytes per parcel."
            )
        else:
            what = []
            if not ahead_speed:
                what.append(f"parcels/s ({speed:.2f}× of the baseline)")
            if not ahead_bytes:
                what.append(f"bytes per parcel (baseline reads {volume or 0:.2f}× as much)")
            lines.append(
                f"- **{ref_name} is NOT ahead of `{r.approach}` in {' and '.join(what)}.**"
            )
    lines += _secondary(records, lat)
    for name, what in ((Approach.PZ_READ_COLD.value, "cold single-parcel read, cache off"),
                       (Approach.PZ_READ_LOOP.value, "read loop, chunk cache on")):
        loop0 = by.get((name, 0.0))
        loop = by.get((name, lat))
        if loop is None or loop.p50_ms is None or lat <= 0:
            continue
        base = loop0.p50_ms if loop0 is not None and loop0.p50_ms is not None else 0.0
        trips = (loop.p50_ms - base) / lat
        ok = loop.p50_ms <= 3 * lat + base
        lines.append(
            f"- Single-parcel latency (`{name}`, 4 bands, {what}): p50 {loop.p50_ms:.0f} ms "
            f"at {lat:g} ms per request vs {base:.0f} ms at 0 ms, i.e. {trips:.1f} round trips "
            f"of added latency: " + ("within 3 round trips." if ok
                                     else "**NOT within 3 round trips.**")
        )
    return lines


#: Largest difference of the 1-minute load average between two approaches whose times are
#: compared for a goal; beyond it the machine was not the same for both and the ratio says
#: little (other jobs share these cores).
COMPARABLE_LOAD = 1.0


def _goal_rows(records: Sequence[Record], lat: float
               ) -> Iterator[tuple[str, str, float, bool, tuple[float, float] | None]]:
    """(goal, how it is measured, measured ratio, met, the two loads if they differ by more
    than :data:`COMPARABLE_LOAD`) at latency ``lat``, where measured."""
    for goal, how, v, ok, pair in _goal_pairs(records, lat):
        la, lb = pair[0].load_1m, pair[1].load_1m
        uneven = (la is not None and lb is not None and abs(la - lb) > COMPARABLE_LOAD)
        yield goal, how, v, ok, ((la, lb) if uneven and la is not None and lb is not None
                                 else None)


def _goal_pairs(records: Sequence[Record], lat: float
                ) -> Iterator[tuple[str, str, float, bool, tuple[Record, Record]]]:
    """(goal, how it is measured, measured ratio, met, the two records compared)."""
    by = _by(records)

    def pps(a: Approach) -> float | None:
        r = by.get((a.value, lat))
        return r.parcels_per_s if r is not None else None

    def ratio(num: Approach, den: Approach) -> float | None:
        """Time of ``num`` over time of ``den``, per parcel (= parcels/s of den over num)."""
        a, b = pps(num), pps(den)
        return b / a if a and b else None

    def pair(a: Approach, b: Approach) -> tuple[Record, Record]:
        return by[(a.value, lat)], by[(b.value, lat)]

    floors = ((Approach.PZ_BATCH, Approach.FLOOR, "centre rule"),
              (Approach.PZ_COVERAGE, Approach.FLOOR_COVERAGE, "coverage weights"),
              (Approach.PZ_TIMESERIES, Approach.FLOOR_TIMESERIES, "time series, 12 dates"))
    for pz_app, fl, what in floors:
        v = ratio(pz_app, fl)
        if v is not None:
            yield (f"{what}: ≤ 1.5× the floor", f"`{pz_app.value}` time / `{fl.value}` time",
                   v, v <= 1.5, pair(pz_app, fl))
    for ee in (Approach.EE_LOCAL, Approach.EE_VSIAZ):
        v = ratio(ee, Approach.PZ_COVERAGE)
        if v is not None:
            yield ("coverage weights: ≥ 2× exactextract",
                   f"`{ee.value}` time / `parcelzarr-coverage` time", v, v >= 2,
                   pair(ee, Approach.PZ_COVERAGE))
    v = ratio(Approach.PZ_COVERAGE, Approach.PZ_BATCH)
    if v is not None:
        yield ("coverage weights: ≤ 1.5× the centre rule",
               "`parcelzarr-coverage` time / `parcelzarr-batch` time", v, v <= 1.5,
               pair(Approach.PZ_COVERAGE, Approach.PZ_BATCH))
    base = [r for r in records if r.latency_ms == lat and r.approach not in _PZ | _FLOORS
            and not Approach(r.approach).timeseries and not Approach(r.approach).weighted]
    batch = pps(Approach.PZ_BATCH)
    if base and batch:
        best = max(base, key=lambda r: r.parcels_per_s)
        v = batch / best.parcels_per_s
        yield ("county batch: ≥ 5× the strongest baseline",
               f"`{best.approach}` time / `parcelzarr-batch` time", v, v >= 5,
               (best, by[(Approach.PZ_BATCH.value, lat)]))
    v = ratio(Approach.PZ_TIMESERIES, Approach.PZ_ONE_DATE)
    if v is not None:
        yield ("time series (12 dates, compacted): ≤ 3× one date",
               "`parcelzarr-timeseries` time / `parcelzarr-one-date` time (same parcels)",
               v, v <= 3, pair(Approach.PZ_TIMESERIES, Approach.PZ_ONE_DATE))


def goals(records: Sequence[Record]) -> list[str]:
    """The issue-11 goals, as a table: each measured ratio and whether it is met, then where
    the CPU of the county batch and of the strongest baseline went."""
    lines = ["| goal | latency | measured as | ratio | met |", "|---|--:|---|--:|:-:|"]
    for lat in sorted({r.latency_ms for r in records}):
        for goal, how, v, ok, loads in _goal_rows(records, lat):
            met = "yes" if ok else "**no**"
            if loads is not None:
                met = (f"not comparable: load {loads[0]:.1f} vs {loads[1]:.1f} "
                       f"({'yes' if ok else 'no'} as measured)")
            lines.append(f"| {goal} | {lat:g} ms | {how} | {v:.2f} | {met} |")
    if len(lines) == 2:
        return []
    return lines + _cpu_lines(records)


def _cpu_lines(records: Sequence[Record]) -> list[str]:
    """Client and emulator CPU of ``parcelzarr-batch`` and the fastest county baseline at
    the highest latency: on this machine the Azurite server shares the cores with the
    client; against Azure only the client's CPU is on the user's machine."""
    if not records:
        return []
    lat = max(r.latency_ms for r in records)
    by = _by(records)
    batch = by.get((Approach.PZ_BATCH.value, lat))
    base = [r for r in records if r.latency_ms == lat and r.approach not in _PZ | _FLOORS
            and not Approach(r.approach).timeseries and not Approach(r.approach).weighted]
    if batch is None or not base or batch.client_cpu_s is None or batch.store_cpu_s is None:
        return []
    best = max(base, key=lambda r: r.parcels_per_s)
    if best.client_cpu_s is None or best.store_cpu_s is None:
        return []
    cores = os.cpu_count() or 1

    def busy(r: Record) -> str:
        client, store = r.client_cpu_s or 0.0, r.store_cpu_s or 0.0
        share = (client + store) / (r.seconds * cores)
        return (f"{r.seconds:.2f} s wall, client {client:.2f} CPU s, Azurite {store:.2f} CPU s "
                f"({share:.0%} of {cores} cores)")
    return [
        "",
        f"Where the cores went at {lat:g} ms: `parcelzarr-batch` {busy(batch)}; "
        f"`{best.approach}` {busy(best)}. Client CPU, the part a user's machine pays "
        "against Azure (whose servers are not on these cores): "
        f"`{best.approach}` / `parcelzarr-batch` = "
        f"{best.client_cpu_s / batch.client_cpu_s:.2f}×.",
    ]


def _load_range(records: Sequence[Record]) -> str:
    loads = [r.load_1m for r in records if r.load_1m is not None]
    return f"{min(loads):.1f}–{max(loads):.1f}" if loads else "(unknown)"


_SECONDARY = (("requests_per_parcel", "requests per parcel"), ("peak_rss_mb", "peak RSS"))


def _baselines(records: Sequence[Record], lat: float) -> Iterator[tuple[Record, str, Record]]:
    """Each baseline at latency ``lat`` with the name and record of its parcelzarr reference."""
    by = _by(records)
    for r in records:
        if r.latency_ms != lat or r.approach in _PZ or r.approach in _FLOORS:
            continue
        ref_name = Approach(r.approach).reference.value
        ref = by.get((ref_name, lat))
        if ref is not None:
            yield r, ref_name, ref


def _secondary(records: Sequence[Record], lat: float) -> list[str]:
    """Other figures (requests, memory) where a baseline does better than parcelzarr."""
    lines = []
    for r, ref_name, ref in _baselines(records, lat):
        if r.bytes == 0 and r.requests == 0:  # local files: see the verdict
            continue
        worse = [f"{label} ({getattr(r, f):,.3g} vs {getattr(ref, f):,.3g})"
                 for f, label in _SECONDARY if getattr(r, f) < getattr(ref, f)]
        if worse:
            lines.append(f"- Not ahead on a secondary figure: `{r.approach}` has lower "
                         f"{' and '.join(worse)} than {ref_name}.")
    return lines


def _compaction(sc: Mapping[str, Any]) -> list[str]:
    """The scenario line on the time-series store's compaction (none if it was not run)."""
    seconds = sc["setup_seconds"].get("compact_timeseries")
    if seconds is None:
        return ["- The time-series store keeps ingest's layout: one date per object."]
    return [
        "- The time-series store is then compacted along time, the product's workflow for a "
        f"season: `pz.compact(url)` (default `time_chunk={DEFAULT_TIME_CHUNK}`), so each "
        "spatial chunk of a band holds all 12 dates in one object "
        f"({seconds:.0f} s; not part of the timings). The GDAL time-series baseline reads the "
        "same 48 single-date COGs as before."
    ]


def _table(records: Sequence[Record]) -> list[str]:
    head = ("| approach | latency | parcels timed | wall s, all parcels | parcels/s | ×pz | "
            "kB/parcel | ×pz | requests/parcel | ×pz | p50 ms | p95 ms | p50 ×pz loop | "
            "peak RSS MB | ×pz | RSS above baseline MB | client CPU s | Azurite CPU s | "
            "results |")
    n_cols = head.count("|") - 1
    lines = [head, "|" + "|".join(["---"] * 3 + ["--:"] * (n_cols - 4) + [":-:"]) + "|"]
    order = {a.value: i for i, a in enumerate(Approach)}
    for r in sorted(records, key=lambda r: (r.latency_ms, order[r.approach])):
        v = r.vs_parcelzarr
        timed = f"{r.parcels:,}" + (f" of {r.parcels_total:,} (extrapolated)"
                                    if r.extrapolated else "")
        lines.append(
            f"| {r.approach} | {r.latency_ms:g} ms | {timed} | {_fmt(r.seconds_total, 1)} | "
            f"{_fmt(r.parcels_per_s, 1)} | {_ratio(v.get('parcels_per_s'))} | "
            f"{_fmt(r.bytes_per_parcel / 1e3, 1)} | {_ratio(v.get('bytes_per_parcel'))} | "
            f"{_fmt(r.requests_per_parcel, 2)} | {_ratio(v.get('requests_per_parcel'))} | "
            f"{_fmt(r.p50_ms, 1)} | {_fmt(r.p95_ms, 1)} | {_ratio(v.get('p50_ms'))} | "
            f"{_fmt(r.peak_rss_mb)} | {_ratio(v.get('peak_rss_mb'))} | "
            f"{_fmt(r.peak_rss_mb - r.rss_baseline_mb)} | {_fmt(r.client_cpu_s, 2)} | "
            f"{_fmt(r.store_cpu_s, 2)} | {'agree' if r.agrees else 'DISAGREE'} |"
        )
    return lines


def render_section(
    records: Sequence[Record], *, meta: Mapping[str, Any], chart: str | None
) -> str:
    """The Markdown of this benchmark's section, markers included."""
    env = meta["environment"]
    m, ver = env["machine"], env["versions"]
    sc = meta["scenario"]
    lines = [
        BEGIN,
        "## Benchmark: parcelzarr vs alternatives",
        "",
        f"Command: `{meta['command']}` ({meta['mode']} mode, {meta['date']}, "
        f"total {meta['seconds']:.0f} s).",
        "",
        f"Machine: {m['cores']} cores, {m['ram_gb']} GB RAM, {m['cpu']}, {m['os']}.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in ver.items()) + ".",
        "",
        "### Scenario",
        f"- One Sentinel-2-like tile, {sc['size']}×{sc['size']} px at 10 m, bands "
        f"{', '.join(sc['bands'])}, uint16, one COG per band (DEFLATE + predictor 2, 512² "
        f"blocks, no overviews; {sc['cog_bytes'] / 1e6:,.0f} MB in total), uploaded to Azurite.",
        f"- {sc['n_parcels']:,} synthetic parcels (`parcelzarr.demo.generate_parcels`, "
        "DeWitt-County-sized area and size distribution) in EPSG:32616.",
        f"- Time series: 12 dates (`generate_dates`) of a {sc['ts_size']}×{sc['ts_size']} px "
        f"sub-area ({sc['ts_size'] * 10 / 1000:.1f} km square at the centre of the parcel area, "
        f"bounds {tuple(round(v) for v in sc['ts_bounds'])}), the {sc['n_ts_parcels']:,} parcels "
        "lying inside it, as 48 COGs and a second parcelzarr store.",
        "- parcelzarr stores written by `pz.ingest` with default settings into Azurite "
        f"(ingest {sc['setup_seconds'].get('ingest', 0):.0f} s for the tile, "
        f"{sc['setup_seconds'].get('ingest_timeseries', 0):.0f} s for the series; "
        "not part of the timings).",
        *_compaction(sc),
        "- Statistics: count, mean, population std of the 4 bands per parcel (and per date), "
        "pixel-centre rule, nodata 0 excluded; `parcelzarr-coverage`, `exactextract-*` and "
        "`floor-coverage` weight each pixel by the fraction of it the parcel covers "
        "(exactextract's `count`, `mean`, `stdev`, raster-sequential).",
        "- `exactextract-local` reads the same COGs from local disk (no network: the tiles "
        "already downloaded), `exactextract-vsiaz` through `/vsiaz/` and the proxy.",
        "- `floor*` (`bench/_floor.py`): the irreducible work of a batch: fetch the covering "
        "chunks once (same concurrency), decode, label all parcels' pixels once per strip of "
        "chunk rows, reduce with `np.bincount`; no engine bookkeeping. "
        "`parcelzarr-one-date` is the time-series parcels on the first date only.",
        "",
        "### How it was measured",
        "- Azurite (in memory) is started by the benchmark on a free port; every approach "
        "reaches it through `parcelzarr.testing.LatencyProxy`, which adds the stated delay to "
        "each request. Requests and bytes (request + response bodies) are counted at the "
        "proxy, per approach.",
        "- Each approach runs in its own fresh Python process (`bench/_worker.py`). Wall time "
        "covers the approach only (opening stores and datasets included, imports and loading "
        "the parcel file excluded). Peak RSS is that process's high-water mark "
        "(psutil sampling every 10 ms, and `ru_maxrss`), so it includes the interpreter and "
        "libraries; *RSS above baseline* subtracts the RSS measured after imports and loading "
        "the parcels (`rss_baseline_mb` in results.json).",
        f"- Each approach ran up to {meta['repeats']} times (a further run only while its "
        f"runs so far took under {meta['repeat_budget_s']:g} s); the fastest run is reported "
        "(`runs`, `seconds_runs` in results.json). The 1-minute load average before the "
        f"approaches ranged {_load_range(records)} on {m['cores']} cores: other jobs shared "
        "the machine, so absolute figures are noisy; ratios within one latency less so.",
        "- Approaches marked *extrapolated* were timed on the first N parcels of the parcel "
        "file (file order keeps a real loop's spatial locality) and the county wall time is "
        "scaled linearly; parcels/s, bytes, requests and latencies are per timed parcel.",
        "- p50/p95 are per-parcel wall times of the per-parcel loops (all 4 bands; for the "
        "time series all 12 dates). Batch approaches have none.",
        "- `parcelzarr-read-loop` uses the store's default read cache (decoded chunks, "
        "64 MB, `PARCELZARR_READ_CACHE_MB`). In file order most parcels find all their chunks "
        "already cached and make no request; a parcel that does not costs one round trip (its "
        "missing chunks fetched concurrently). When fewer than 5 % of the parcels miss, p50 "
        "and p95 are both cache hits: they, and the single-parcel verdict below, describe the "
        "loop, not a cold read.",
        "- Before any timing is reported, every approach's statistics are compared with "
        "`parcelzarr-batch` (`parcelzarr-timeseries` for the series) on the parcels it "
        "computed; counts must match (a pixel centre lying exactly on a parcel edge may flip, "
        "≥ 99 % identical, ±2), means and stds to float precision. A mismatch fails the run.",
        "- ×pz: the figure divided by parcelzarr's in the same run and latency "
        "(`parcelzarr-batch`, or `parcelzarr-timeseries` for the time series; p50 against "
        "`parcelzarr-read-loop`). parcels/s ×pz below 1 means slower than parcelzarr.",
        "",
        "### Results",
        *_table(records),
        "",
        "### Verdict (highest latency)",
        *verdicts(records),
        "",
    ]
    if goals(records):
        lines += ["### Goals (issue 11): ratios within one run", *goals(records), ""]
    if chart:
        lines += [f"![parcels/s and bytes per parcel per approach]({chart})", ""]
    lines.append(END)
    return "\n".join(lines) + "\n"


def replace_section(existing: str, section: str) -> str:
    """``existing`` with the text between the markers replaced (or the section appended)."""
    if BEGIN in existing and END in existing:
        head, rest = existing.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        return head + section.rstrip("\n") + tail
    if not existing.strip():
        return "# Benchmark results\n\n" + section
    return existing.rstrip("\n") + "\n\n" + section


def _chart(records: Sequence[Record], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [a.value for a in Approach if any(r.approach == a.value for r in records)]
    lats = sorted({r.latency_ms for r in records})
    by = _by(records)
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    width = 0.8 / max(len(lats), 1)
    x = np.arange(len(names))
    for ax, field, label, corner in (
        (axes[0], "parcels_per_s", "parcels per second (log)", "upper left"),
        (axes[1], "bytes_per_parcel", "bytes transferred per parcel (log)", "upper right"),
    ):
        for i, lat in enumerate(lats):
            vals = [getattr(by[(n, lat)], field) if (n, lat) in by else np.nan for n in names]
            ax.bar(x + (i - (len(lats) - 1) / 2) * width, vals, width, label=f"{lat:g} ms")
        ax.set_yscale("log")
        low, high = ax.get_ylim()
        ax.set_ylim(low, high * 30)  # headroom for the legend above the bars
        ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(title="added latency per request", loc=corner)
        for tick in ax.get_xticklabels():
            if tick.get_text() in _PZ:
                tick.set_fontweight("bold")
    fig.suptitle("parcelzarr vs alternatives (4 bands, count/mean/std per parcel)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(records: Sequence[Record], out_dir: Path, meta: Mapping[str, Any]) -> None:
    """Write ``results.json``, ``results.png`` and the section of ``RESULTS.md`` in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(
        json.dumps([r.as_dict() | {"mode": meta["mode"]} for r in records], indent=1) + "\n"
    )
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    _chart(records, out_dir / "results.png")
    md = out_dir / "RESULTS.md"
    existing = md.read_text() if md.exists() else ""
    md.write_text(replace_section(existing, render_section(records, meta=meta,
                                                           chart="results.png")))
    logger.info("wrote %s, %s and %s", out_dir / "results.json", out_dir / "results.png", md)


def rerender(out_dir: Path) -> None:
    """Rewrite the chart and the section of ``RESULTS.md`` in ``out_dir`` from its
    ``results.json`` and ``meta.json`` (after a change to this module; nothing is re-run)."""
    rows = json.loads((out_dir / "results.json").read_text())
    meta = json.loads((out_dir / "meta.json").read_text())
    names = {f.name for f in dataclasses.fields(Record)}
    records = [Record(**{k: v for k, v in r.items() if k in names}) for r in rows]
    _chart(records, out_dir / "results.png")
    md = out_dir / "RESULTS.md"
    md.write_text(replace_section(md.read_text() if md.exists() else "",
                                  render_section(records, meta=meta, chart="results.png")))
