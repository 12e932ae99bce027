"""Streaming a parcel file in spatial batches: same results as slices, memory set by the batch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from parcelzarr.query import stream_zonal_stats
from parcelzarr.query._stream import hilbert_key

import parcelzarr as pz
from parcelzarr.errors import GeometryError

from ._rasters import CRS, ORIGIN, make_parcels, make_scene

STATS = "count,mean,std,min,max,median,nodata"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("stream")
    paths = make_scene(d / "scene", bands=("B04", "B08"))
    url = str(d / "s.zarr")
    pz.ingest([str(p) for p in paths], url, quiet=True)
    return url


def test_hilbert_key_walks_neighbouring_cells() -> None:
    # on a 2^4 grid every cell gets its own key, and consecutive keys are adjacent cells
    n = 16
    yy, xx = np.mgrid[:n, :n]
    x, y = xx.ravel().astype(float), yy.ravel().astype(float)
    key = hilbert_key(x, y, (0, 0, n - 1, n - 1), order=4)
    assert sorted(key.tolist()) == list(range(n * n))
    order = np.argsort(key)
    steps = np.abs(np.diff(x[order])) + np.abs(np.diff(y[order]))
    assert (steps == 1).all()


def test_stream_equals_the_query_on_slices(store: str, tmp_path: Path) -> None:
    parcels = make_parcels(n=150).to_crs("EPSG:4326")  # overlaps, holes, outside ones
    path = tmp_path / "parcels.parquet"
    parcels.to_parquet(path)
    out = tmp_path / "out.parquet"
    st = pz.open_store(store)
    report = stream_zonal_stats(st, path, out, batch_size=23, stats=STATS)
    assert report.parcels == len(parcels) and report.batches == -(-len(parcels) // 23)
    got = pd.read_parquet(out)
    # the same query, run on three slices of the file in file order
    frames = [st.zonal_stats(parcels.iloc[i:i + 60], stats=STATS)
              for i in range(0, len(parcels), 60)]
    want = pd.concat(frames, ignore_index=True)
    key = ["parcel_id", "band", "time"]
    got = got.sort_values(key).reset_index(drop=True)
    want = want.sort_values(key).reset_index(drop=True)
    assert len(got) == len(want) == report.rows
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    # each batch was a compact area: consecutive batches' rows come from near parcels
    assert set(got["parcel_id"]) == set(range(len(parcels)))


def test_stream_with_an_id_column_and_a_bad_file(store: str, tmp_path: Path) -> None:
    parcels = make_parcels(n=40)
    parcels["field"] = [f"f{i}" for i in range(len(parcels))]
    path = tmp_path / "p.parquet"
    parcels.to_parquet(path)
    out = tmp_path / "o.parquet"
    stream_zonal_stats(pz.open_store(store), path, out, batch_size=7, id_column="field",
                       bands=["B04"], stats="mean")
    got = pd.read_parquet(out).set_index("field")["mean"].sort_index()
    want = pz.open_store(store).zonal_stats(parcels, id_column="field", bands=["B04"],
                                            stats="mean").set_index("field")["mean"]
    pd.testing.assert_series_equal(got, want.sort_index())
    plain = tmp_path / "plain.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(plain)
    with pytest.raises(GeometryError, match="GeoParquet"):
        stream_zonal_stats(pz.open_store(store), plain, out)
    assert not (tmp_path / "o.parquet.partial").exists()


# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child of a large test
# process (an xdist worker) would report its parent's high-water mark.
_CHILD = textwrap.dedent("""
    import json, sys
    import parcelzarr as pz
    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc/self/status")
    from parcelzarr.query import stream_zonal_stats
    mode, url, parcels, out = sys.argv[1:5]
    store = pz.open_store(url)
    base = hwm()
    if mode == "stream":
        stream_zonal_stats(store, parcels, out, batch_size=4000, stats="count,mean")
    else:
        store.zonal_stats(parcels, stats="count,mean").to_parquet(out)
    peak = hwm()
    print(json.dumps({"base": base, "peak": peak}))
""")


def test_stream_peak_memory_is_set_by_the_batch(store: str, tmp_path: Path) -> None:
    """Streaming 60,000 parcels in batches of 4,000 peaks (RSS) within the budget of
    streaming one batch's worth (4,000 parcels) plus 20 MB, while the same query on the whole
    file at once needs more than that budget; both give the same rows."""
    n = 60_000
    side = int(np.ceil(np.sqrt(n)))
    cell = 6400.0 / side
    k = np.arange(n)
    x = ORIGIN[0] + (k % side) * cell + 2
    y = ORIGIN[1] - (k // side) * cell - 2
    perm = np.random.default_rng(1).permutation(n)  # file order is not spatial order
    gdf = gpd.GeoDataFrame(geometry=shapely.box(x, y - cell + 4, x + cell - 4, y)[perm], crs=CRS)
    big, small = tmp_path / "big.parquet", tmp_path / "small.parquet"
    gdf.to_parquet(big)
    gdf.iloc[:4000].to_parquet(small)
    del gdf

    def run(mode: str, path: Path) -> dict[str, float]:
        res = subprocess.run([sys.executable, "-c", _CHILD, mode, store, str(path),
                              str(tmp_path / f"{mode}-{path.stem}.parquet")],
                             capture_output=True, text=True, check=True)
        return json.loads(res.stdout.strip().splitlines()[-1])

    budget = run("stream", small)["peak"] + 20
    streamed, whole = run("stream", big), run("whole", big)
    # the file does not fit the budget at once
    assert whole["peak"] > budget, (whole, streamed, budget)
    assert streamed["peak"] <= budget, (streamed, budget)
    a = pd.read_parquet(tmp_path / "stream-big.parquet").sort_values(["parcel_id", "band"])
    b = pd.read_parquet(tmp_path / "whole-big.parquet").sort_values(["parcel_id", "band"])
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True),
                                  check_dtype=False)


def test_stats_cli_batch_size_streams(store: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from parcelzarr.cli import main

    parcels = make_parcels(n=50)
    path = tmp_path / "p.parquet"
    parcels.to_parquet(path)
    out = tmp_path / "o.parquet"
    res = CliRunner().invoke(main, ["stats", store, str(path), "--out", str(out),
                                    "--batch-size", "9", "--stats", "count,mean", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "batches" in res.output
    got = pd.read_parquet(out).sort_values(["parcel_id", "band"]).reset_index(drop=True)
    want = pz.open_store(store).zonal_stats(parcels, stats="count,mean")
    want = want.sort_values(["parcel_id", "band"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    bad = CliRunner().invoke(main, ["stats", store, str(path), "--out", str(tmp_path / "o.csv"),
                                    "--batch-size", "9"])
    assert bad.exit_code != 0 and "--batch-size" in bad.output
