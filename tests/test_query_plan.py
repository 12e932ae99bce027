"""The dry run (``store.plan`` / ``parcelzarr plan``) against what the real query then reads.

Requests and bytes are what the query reports from the store's own counters (every GET and
its bytes, counted below zarr); the plan reads no pixel (no GET at all) and must predict both
within 5 % on the demo county and on the benchmark's time-series scene.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from click.testing import CliRunner

import parcelzarr as pz
from parcelzarr.cli import main
from parcelzarr.demo import demo_data

BANDS = ["B02", "B03", "B04", "B08"]


def _close(predicted: int, actual: int) -> bool:
    return abs(predicted - actual) <= 0.05 * max(actual, 1)


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A demo county (the `parcelzarr demo` generator, at a 1,200 px scene)."""
    data = tmp_path_factory.mktemp("county")
    parcels, scene = demo_data(data, size=1200, n_parcels=400, seed=2)
    return parcels, scene


@pytest.mark.parametrize("mode", ["demo", "median"])
def test_plan_predicts_the_demo_county(county: tuple[Path, list[Path]],
                                       store_url: tuple[str, dict | None], mode: str) -> None:
    parcels, scene = county
    url, opts = store_url
    pz.ingest([str(p) for p in scene], url, storage_options=opts, quiet=True)
    store = pz.open_store(url, storage_options=opts)
    kwargs: dict = ({"bands": BANDS, "indices": ["ndvi"], "stats": "count,mean,std,min,max"}
                    if mode == "demo" else {"bands": ["B04"], "stats": "median,percentile_90"})
    before = store._handle.counters.snapshot().get_requests
    plan = store.plan(str(parcels), id_column="parcel_id", **kwargs)
    assert store._handle.counters.snapshot().get_requests == before  # no pixel read
    df = store.zonal_stats(str(parcels), id_column="parcel_id", **kwargs)
    rep = store.last_report
    assert rep is not None and len(df) > 0
    assert plan.parcels == rep.parcels == 400
    assert plan.requests > 0 and plan.bytes_read > 0
    assert _close(plan.requests, rep.requests), (plan.requests, rep.requests)
    assert _close(plan.bytes_read, rep.bytes_read), (plan.bytes_read, rep.bytes_read)
    assert plan.chunks == rep.chunks
    assert plan.bytes_exact
    # money: requests at the default Azure read price
    assert plan.get_cost_usd == pytest.approx(plan.requests / 10_000 * 0.004)
    assert plan.seconds > 0


@pytest.fixture(scope="module")
def bench_scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The benchmark's time-series scene (quick mode: 12 dates on 512² px, the bench's own
    generator and sub-area; GeoTIFFs, not the bench's COG copies of them), ingested and
    compacted along time as the bench does."""
    from bench._config import config_for
    from bench._scenario import _ts_box
    from parcelzarr.demo import (
        generate_dates,
        generate_parcels,
        parcels_bounds_for_area,
        scene_bounds,
        season_dates,
    )

    cfg = config_for("quick", latencies_ms=(0.0,))
    cache = tmp_path_factory.mktemp("bench")
    # the parcels of demo_data(size=cfg.size, ...), without its single-date scene
    b = scene_bounds(size=cfg.size)
    area = 0.8 * (b[2] - b[0]) * (b[3] - b[1]) / 1e6
    parcels = generate_parcels(parcels_bounds_for_area((b[0] + b[2]) / 2, (b[1] + b[3]) / 2,
                                                       area), n_parcels=cfg.n_parcels,
                               seed=cfg.seed)
    x0, y0 = _ts_box(parcels, cfg.ts_size)
    series = generate_dates(cache / "ts", parcels, dates=season_dates(cfg.n_dates),
                            size=cfg.ts_size, origin=(x0, y0), seed=cfg.seed)
    url = str(cache / "ts.zarr")
    pz.ingest([str(p) for paths in series.values() for p in paths], url, quiet=True)
    pz.compact(url, quiet=True)
    inside = parcels[parcels.within(shapely.box(x0, y0 - cfg.ts_size * 10.0,
                                                x0 + cfg.ts_size * 10.0, y0))]
    out = cache / "ts_parcels.parquet"
    inside.to_parquet(out)
    return url, out


@pytest.mark.parametrize("when", [None, "2024-05/2024-07"])
def test_plan_predicts_the_bench_time_series(bench_scene: tuple[str, Path],
                                             when: str | None) -> None:
    url, parcels = bench_scene
    store = pz.open_store(url)
    plan = store.plan(str(parcels), id_column="parcel_id", bands=["B04", "B08"], time=when)
    store.zonal_stats(str(parcels), id_column="parcel_id", bands=["B04", "B08"], time=when)
    rep = store.last_report
    assert rep is not None
    assert _close(plan.requests, rep.requests), (plan.requests, rep.requests)
    assert _close(plan.bytes_read, rep.bytes_read), (plan.bytes_read, rep.bytes_read)


def test_plan_cli_json_and_price_setting(county: tuple[Path, list[Path]], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    parcels, scene = county
    url = str(tmp_path / "s.zarr")
    pz.ingest([str(p) for p in scene], url, bands=["B04"], quiet=True)
    monkeypatch.setenv("PARCELZARR_GET_PRICE", "0.5")
    res = CliRunner().invoke(main, ["plan", url, str(parcels), "--id-column", "parcel_id",
                                    "--stats", "mean", "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    store = pz.open_store(url)
    store.zonal_stats(gpd.read_parquet(parcels), id_column="parcel_id", stats="mean")
    rep = store.last_report
    assert rep is not None
    assert _close(got["requests"], rep.requests) and _close(got["bytes_read"], rep.bytes_read)
    assert got["get_cost_usd"] == pytest.approx(got["requests"] / 10_000 * 0.5)
    text = CliRunner().invoke(main, ["plan", url, str(parcels), "--stats", "mean"])
    assert text.exit_code == 0 and "GET requests" in text.output


def test_plan_rejects_a_bad_price(monkeypatch: pytest.MonkeyPatch, county: tuple[Path, list[Path]],
                                  tmp_path: Path) -> None:
    parcels, scene = county
    url = str(tmp_path / "s.zarr")
    pz.ingest([str(scene[0])], url, quiet=True)
    monkeypatch.setenv("PARCELZARR_GET_PRICE", "cheap")
    with pytest.raises(ValueError, match="PARCELZARR_GET_PRICE"):
        pz.open_store(url).plan(str(parcels))


def test_plan_predicts_a_sharded_store(tmp_path: Path) -> None:
    from ._rasters import make_parcels, make_scene

    paths = make_scene(tmp_path / "scene", bands=("B04",))
    url = str(tmp_path / "s.zarr")
    pz.ingest([str(p) for p in paths], url, quiet=True, inner_chunk=128)
    store = pz.open_store(url)
    parcels = make_parcels(n=80)
    plan = store.plan(parcels, stats="mean")
    store.zonal_stats(parcels, stats="mean")
    rep = store.last_report
    assert rep is not None and rep.requests > 0
    assert _close(plan.requests, rep.requests) and _close(plan.bytes_read, rep.bytes_read)


def test_plan_predicts_a_masked_query(tmp_path: Path) -> None:
    """SCL at 20 m masking a 10 m band: the mask's chunks are GETs too."""
    import numpy as np

    from ._rasters import make_parcels, scene_data, write_tif

    shape = (200, 240)
    scl = np.random.default_rng(5).choice([4, 5, 8, 9, 3, 10], size=(100, 110)).astype("uint8")
    src = [write_tif(tmp_path / "T16TCK_20240615T165849_B04_10m.tif", scene_data(shape, 1)),
           write_tif(tmp_path / "T16TCK_20240615T165849_SCL_20m.tif", scl, res=20.0,
                     nodata=None)]
    url = str(tmp_path / "s.zarr")
    pz.ingest([str(p) for p in src], url, quiet=True, chunk_size=64)
    store = pz.open_store(url)
    parcels = make_parcels(shape, n=25)
    plan = store.plan(parcels, bands=["B04"], stats="mean", mask=True)
    store.zonal_stats(parcels, bands=["B04"], stats="mean", mask=True)
    rep = store.last_report
    assert rep is not None and rep.requests > rep.chunks  # mask chunks were read
    assert plan.chunks == rep.chunks
    assert _close(plan.requests, rep.requests), (plan.requests, rep.requests)
    assert _close(plan.bytes_read, rep.bytes_read), (plan.bytes_read, rep.bytes_read)


def test_plan_seconds_follow_the_pixels_not_the_chunk_count(
        county: tuple[Path, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU estimate counts the pixels a query decodes: a 512² layout reads several times
    fewer chunks than 256² for about the same pixels, and its estimate must not shrink with
    the chunk count (it did: the rate was per chunk, measured on 256² chunks)."""
    monkeypatch.setenv("PARCELZARR_REQUESTS_PER_S", "1e12")  # the CPU term alone
    parcels, scene = county
    plans = {}
    for edge in (256, 512):
        url = str(tmp_path / f"chunks{edge}.zarr")
        pz.ingest([str(p) for p in scene], url, chunk_size=edge, quiet=True)
        plans[edge] = pz.open_store(url).plan(str(parcels), id_column="parcel_id",
                                              bands=["B04"])
    assert plans[256].chunks >= 2 * plans[512].chunks
    pixels = {edge: plan.chunks * edge * edge for edge, plan in plans.items()}
    cpu = {edge: plan.seconds - plan.plan_seconds for edge, plan in plans.items()}
    assert cpu[512] / cpu[256] == pytest.approx(pixels[512] / pixels[256], rel=0.01)
