"""Streaming under adversarial input and interruptions: ids repeated across batches,
missing ids, batches without rows, the whole-stream deadline, SIGTERM, two runs writing one
output, outputs the stream must refuse. Each compared with the whole-file query."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from parcelzarr.query import stream_zonal_stats

import parcelzarr as pz
from parcelzarr.errors import GeometryError

from ._rasters import CRS, ORIGIN, make_parcels
from .test_query_stream import _sorted, _started_mid_stream, _via_parquet
from .test_query_stream import store as store  # the module's own store of two bands


def test_ids_repeated_across_batches_fail_before_anything_is_written(store: str,
                                                                       tmp_path: Path) -> None:
    """A parcel id that repeats in two different batches fails the stream with the whole
    query's error (id column, stored index, fiboa id; presorted or not), and an earlier
    output is left as it was."""
    from parcelzarr.query._stream import _open, spatial_batches

    st = pz.open_store(store)
    parcels = make_parcels(n=40)
    out = tmp_path / "o.parquet"
    out.write_bytes(b"earlier result")
    far = [0, len(parcels) - 4]  # two parcels the key pass puts in different batches
    files = {"field": parcels.assign(field=parcels["field"].where(
                 parcels.index != far[1], parcels["field"][far[0]])),
             "index": parcels.set_axis([0 if i == far[1] else i for i in parcels.index]),
             "fiboa": parcels.assign(id=parcels["field"].where(parcels.index != far[1],
                                                               parcels["field"][far[0]]),
                                     fiboa_version="0.2.0")}
    for name, frame in files.items():
        path = tmp_path / f"{name}.parquet"
        frame.to_parquet(path)
        batch = spatial_batches(_open(str(path)), "geometry", 7)
        assert batch[far[0]] != batch[far[1]], "the repeated ids share a batch"
        id_column = "field" if name == "field" else None
        with pytest.raises(GeometryError) as whole:
            st.zonal_stats(str(path), id_column=id_column, stats="mean")
        assert "not unique" in str(whole.value)
        for presorted in (False, True):
            with pytest.raises(GeometryError) as streamed:
                stream_zonal_stats(st, path, out, batch_size=7, id_column=id_column,
                                   presorted=presorted, stats="mean")
            assert str(streamed.value) == str(whole.value)
            assert out.read_bytes() == b"earlier result"
            assert not list(tmp_path.glob("o.parquet*.partial"))


def test_sigterm_of_the_cli_cleans_up_like_ctrl_c(store: str, tmp_path: Path) -> None:
    """SIGTERM (a job scheduler's stop) of ``parcelzarr stats --batch-size`` while batches
    are written: exit status 143, the spill directory and the partial output removed, the
    earlier output untouched."""
    parcels = make_parcels(n=3000)
    path, out, tmp = tmp_path / "p.parquet", tmp_path / "o.parquet", tmp_path / "tmp"
    parcels.to_parquet(path)
    out.write_bytes(b"earlier result")
    tmp.mkdir()
    cli = Path(sys.executable).parent / "parcelzarr"
    proc, partial = _started_mid_stream(
        [str(cli), "stats", store, str(path), "--out", str(out), "--batch-size", "50",
         "--stats", "mean,median", "--quiet"], out, tmp)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert list(tmp.iterdir()) == []
    assert not partial.exists() and out.read_bytes() == b"earlier result"


def test_sigterm_of_a_whole_query_exits_143_and_keeps_the_earlier_output(
        store: str, tmp_path: Path) -> None:
    """SIGTERM of ``parcelzarr stats`` without ``--batch-size`` once the store is open:
    status 143 through the cleanup (it was -15, killed on the spot), no partial output, the
    earlier output untouched."""
    parcels = make_parcels(n=3000)
    path, out = tmp_path / "p.parquet", tmp_path / "o.csv"
    parcels.to_parquet(path)
    out.write_bytes(b"earlier result")
    proc = subprocess.Popen(
        [sys.executable, "-m", "parcelzarr.cli", "-vv", "stats", store, str(path), "--out",
         str(out), "--stats", "mean,median", "--quiet"], stderr=subprocess.PIPE, text=True)
    opened = threading.Event()
    lines: list[str] = []

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "Creating Zarr event loop" in line:
                opened.set()

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    assert opened.wait(60), "the store was never opened"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    assert proc.returncode == 128 + signal.SIGTERM, "".join(lines)[-800:]
    assert out.read_bytes() == b"earlier result"
    assert not list(tmp_path.glob("o.csv*.partial"))


def test_a_missing_id_in_the_first_batch_streams(store: str, tmp_path: Path) -> None:
    """A string id column (or index) whose one missing id is the first batch's only id:
    the stream's rows equal the whole query's (Arrow would type that batch's ids null, a
    type the later batches' ids do not cast to)."""
    from parcelzarr.query._stream import _open, spatial_batches

    st = pz.open_store(store)
    parcels = make_parcels(n=20)
    parcels.to_parquet(tmp_path / "order.parquet")
    first = int(np.flatnonzero(spatial_batches(_open(str(tmp_path / "order.parquet")),
                                               "geometry", 1) == 0)[0])
    ids = parcels["field"].where(parcels.index != first, None)
    files = {"pid": parcels.assign(pid=ids), None: parcels.set_index(ids.rename("pid"))}
    for id_column, frame in files.items():
        path, out = tmp_path / "p.parquet", tmp_path / "o.parquet"
        frame.to_parquet(path)
        stream_zonal_stats(st, path, out, batch_size=1, id_column=id_column, stats="mean")
        want = _via_parquet(st.zonal_stats(str(path), id_column=id_column, stats="mean"),
                            tmp_path / "whole.parquet")
        key = [want.columns[0], "band", "time"]
        got = pd.read_parquet(out)
        assert got[key[0]].isna().sum() == 2  # the missing id's two bands
        pd.testing.assert_frame_equal(_sorted(got, key), _sorted(want, key))


def test_the_deadline_bounds_the_whole_stream(store: str, tmp_path: Path) -> None:
    """``deadline`` is the whole stream's, not each batch's: 49 one-parcel batches (over a
    second in all, each well within the deadline) fail with QueryDeadlineError, nothing
    written, the earlier output kept."""
    from parcelzarr.errors import QueryDeadlineError

    path, out, spill = tmp_path / "p.parquet", tmp_path / "o.parquet", tmp_path / "spill"
    make_parcels(n=40).to_parquet(path)
    out.write_bytes(b"earlier result")
    spill.mkdir()
    st = pz.open_store(store)
    t0 = time.perf_counter()
    with pytest.raises(QueryDeadlineError, match=r"deadline of 0\.3 s"):
        stream_zonal_stats(st, path, out, batch_size=1, stats="mean", deadline=0.3,
                           tmp_dir=spill)
    assert time.perf_counter() - t0 < 5
    assert out.read_bytes() == b"earlier result" and list(spill.iterdir()) == []
    assert not list(tmp_path.glob("o.parquet*.partial"))
    with pytest.raises(ValueError, match="above 0"):
        stream_zonal_stats(st, path, out, batch_size=1, deadline=0)


_RUN = textwrap.dedent("""
    import sys
    import parcelzarr as pz
    from parcelzarr.query import stream_zonal_stats
    url, parcels, out, batch = sys.argv[1:5]
    stream_zonal_stats(pz.open_store(url), parcels, out, batch_size=int(batch), stats="mean")
""")


def test_two_runs_writing_one_output_leave_a_whole_file(store: str, tmp_path: Path) -> None:
    """Two streams to the same output at once (an overlapping re-run): both finish and the
    output is one run's whole result. Before, they shared one partial file: the output was
    unreadable and the second run failed."""
    parcels = make_parcels(n=400)
    path, out = tmp_path / "p.parquet", tmp_path / "o.parquet"
    parcels.to_parquet(path)
    runs = [subprocess.Popen([sys.executable, "-c", _RUN, store, str(path), str(out), batch],
                             stderr=subprocess.PIPE, text=True) for batch in ("20", "30")]
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err[-2000:]
    got = pd.read_parquet(out)
    want = _via_parquet(pz.open_store(store).zonal_stats(parcels, stats="mean"),
                        tmp_path / "whole.parquet")
    key = ["parcel_id", "band", "time"]
    pd.testing.assert_frame_equal(_sorted(got, key), _sorted(want, key))
    assert not list(tmp_path.glob("o.parquet*.partial"))


def test_stream_outputs_the_whole_query_would_write(store: str, tmp_path: Path) -> None:
    """The output's folder is made, as the whole query's writer does (before, the stream
    failed after querying its first batch); a .geoparquet output, which the whole query
    writes with the geometry, is refused (before, a plain Parquet file without geometry
    was written under that name), and so is a cube (output="xarray"); a PostgreSQL
    output whose server cannot be reached fails in one line, before any batch is queried,
    without showing the password."""
    from click.testing import CliRunner

    from parcelzarr.cli import main

    path = tmp_path / "p.parquet"
    parcels = make_parcels(n=20)
    parcels.to_parquet(path)
    out = tmp_path / "new" / "folder" / "o.parquet"
    res = CliRunner().invoke(main, ["stats", store, str(path), "--out", str(out),
                                    "--batch-size", "6", "--stats", "mean", "--quiet"])
    assert res.exit_code == 0, res.output
    assert len(pd.read_parquet(out)) == 2 * len(parcels)  # two bands
    geo = tmp_path / "o.geoparquet"
    res = CliRunner().invoke(main, ["stats", store, str(path), "--out", str(geo),
                                    "--batch-size", "6", "--stats", "mean", "--quiet"])
    assert res.exit_code != 0 and "--batch-size" in res.output and not geo.exists()
    with pytest.raises(ValueError, match="geoparquet"):
        stream_zonal_stats(pz.open_store(store), path, geo, batch_size=6)
    assert not geo.exists()
    cube = tmp_path / "cube.parquet"  # was an AttributeError after the first batch's query
    with pytest.raises(ValueError, match="'xarray'"):
        stream_zonal_stats(pz.open_store(store), path, cube, batch_size=6, output="xarray")
    assert not list(tmp_path.glob("cube*"))
    res = CliRunner().invoke(main, ["stats", store, str(path), "--out",
                                    "postgresql://bob:s3cret@localhost/db?table=t",
                                    "--batch-size", "6"])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: cannot write results to "
                                 "postgresql://bob@localhost/db?table=t: ")
    assert "s3cret" not in res.output and len(res.output.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="long rows"):  # before any work, not after a batch
        stream_zonal_stats(pz.open_store(store), path, "postgresql:///db?table=t",
                           batch_size=6, output="wide")


def test_repeated_ids_are_found_across_read_chunks(tmp_path: Path) -> None:
    """The uniqueness check reads ids in chunks of 65,536: an integer id repeated in a
    chunk that also holds a missing id (which pandas would turn into floats) is found, a
    single missing id is an id like any other, and a file of 70,000 distinct ids passes."""
    from parcelzarr.query._stream import _check_unique_ids, _open, _source

    n = 70_000
    geoms = shapely.points(np.arange(n), np.zeros(n))
    base = np.arange(n, dtype=float) * 7
    cases = {"distinct": (base, None), "one missing": (np.where(np.arange(n) == 5, np.nan,
                                                                base), None),
             "repeated": (np.where(np.arange(n) == 68_000, 7.0 * 3,
                                   np.where(np.arange(n) == 68_001, np.nan, base)), 21)}
    for name, (ids, dup) in cases.items():
        path = tmp_path / f"{name}.parquet"
        frame = gpd.GeoDataFrame({"pid": pd.array(ids, dtype="Int64")}, geometry=geoms,
                                 crs=CRS)
        frame.to_parquet(path)
        pf = _open(str(path))
        src = _source(pf, str(path), "pid")
        if dup is None:
            _check_unique_ids(pf, src)
        else:
            with pytest.raises(GeometryError, match=f"not unique \\(e.g. {dup}\\)"):
                _check_unique_ids(pf, src)


def test_categorical_batches_without_rows(store: str, tmp_path: Path) -> None:
    """Categorical parcels outside the coverage (or empty) give no rows: a batch of only
    those, first or not, no longer types the output (it failed the later batches' cast);
    the rows equal the whole query's, and a file of only such parcels gives no rows."""
    x0, y0 = ORIGIN
    inside = [shapely.box(x0 + 1000 + 40 * i, y0 - 1000, x0 + 1025 + 40 * i, y0 - 975)
              for i in range(3)]
    outside = [shapely.box(x0 - 90_000 + 50 * i, y0 + 90_000, x0 - 89_960 + 50 * i,
                           y0 + 90_040) for i in range(3)]
    files = {"outside first": outside + inside, "empty first": [shapely.Polygon(), *inside],
             "all outside": outside}
    st = pz.open_store(store)
    kw: dict[str, Any] = {"stats": "count", "categorical": True, "bands": ["B04"]}
    for name, geoms in files.items():
        path, out = tmp_path / "p.parquet", tmp_path / "o.parquet"
        gpd.GeoDataFrame(geometry=geoms, crs=CRS).to_parquet(path)
        stream_zonal_stats(st, path, out, batch_size=1, **kw)
        want = _via_parquet(st.zonal_stats(str(path), **kw), tmp_path / "whole.parquet")
        key = ["parcel_id", "band", "time", "class"]
        got = pd.read_parquet(out)
        assert (len(got) == 0) == (name == "all outside"), name
        pd.testing.assert_frame_equal(_sorted(got, key), _sorted(want, key))


def test_the_cli_streams_outside_the_main_thread(store: str, tmp_path: Path) -> None:
    """``stats --batch-size`` called from a worker thread (an embedding application): the
    SIGTERM handler, which only the main thread may set, is skipped, the stream runs."""
    import threading

    from click.testing import CliRunner

    from parcelzarr.cli import main

    path, out = tmp_path / "p.parquet", tmp_path / "o.parquet"
    make_parcels(n=10).to_parquet(path)
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(CliRunner().invoke(
        main, ["stats", store, str(path), "--out", str(out), "--batch-size", "4",
               "--stats", "mean", "--quiet"])))
    worker.start()
    worker.join(60)
    assert results and results[0].exit_code == 0, results and results[0].output
    assert len(pd.read_parquet(out)) == 2 * 19  # 19 parcels, two bands


class _Unprintable:
    """A value whose text fails: to_csv stops on it after writing the rows before it."""

    def __str__(self) -> str:
        raise RuntimeError("unprintable")

    __repr__ = __str__


def test_a_failing_whole_query_write_leaves_the_earlier_output(tmp_path: Path) -> None:
    """The whole query's writer (write_stats) fails mid-write (a CSV stopped after 3 MB of
    rows): no half file, the earlier output untouched (before, the half CSV replaced it)."""
    from parcelzarr.query import write_stats

    n = 300_000
    df = pd.DataFrame({"parcel_id": range(n), "mean": 1.5,
                       "note": ["a"] * (n - 1) + [_Unprintable()]})
    out = tmp_path / "o.csv"
    out.write_text("earlier result")
    with pytest.raises(RuntimeError, match="unprintable"):
        write_stats(df, out)
    assert out.read_text() == "earlier result" and list(tmp_path.iterdir()) == [out]
    write_stats(df.iloc[:-1], out)
    pd.testing.assert_frame_equal(pd.read_csv(out), df.iloc[:-1].astype({"note": "str"}))
