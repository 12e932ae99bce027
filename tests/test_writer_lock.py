"""One writer at a time, with real processes, on local stores and on Azurite.

Without a lock, two concurrent ingests of different dates both reported success and one date
was lost (the second run's recovery deleted the first run's uncommitted date, and the last
manifest write won). Now a second writer waits (``--wait``) or fails with one clear line,
and a killed writer's lock does not block for longer than its documented bound. Pixels are
checked against rasterio reads of the sources.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import zarr
from parcelzarr.stores import open_store_handle, writer_lock

import parcelzarr as pz
from parcelzarr.errors import StoreLockedError

from ._rasters import scene_data, write_tif

ORIGIN = (300_000.0, 4_500_000.0)
DATES = ("20240601T100000", "20240611T100000", "20240621T100000")
BANDS = ("B02", "B03", "B04", "B08")
SIZE = 300


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    folder = tmp_path_factory.mktemp("lock")
    return {date: [write_tif(folder / f"T16TBK_{date}_{band}_10m.tif",
                             scene_data((SIZE, SIZE), seed=10 * d + b), origin=ORIGIN,
                             block=64)
                   for b, band in enumerate(BANDS)]
            for d, date in enumerate(DATES)}


def _cli(url: str, opts: Any, paths: list[Path], *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "parcelzarr.cli", "ingest", *map(str, paths), "--store", url,
           "--chunk", "64", "--workers", "1", "--quiet", *extra]
    for k, v in (opts or {}).items():
        cmd += ["--storage-option", f"{k}={v}"]
    return cmd


ENV = dict(os.environ, PYTHONWARNINGS="ignore", PARCELZARR_LOCK_LEASE="15")


def check_store(url: str, opts: Any, scenes: dict[str, list[Path]], dates: list[str]) -> None:
    """The store holds exactly ``dates``, every band equal to its source (rasterio)."""
    store = pz.open_store(url, storage_options=opts)
    root = zarr.open_group(store._handle.store, mode="r", use_consolidated=True)
    group = root["utm16n/10m"]
    assert isinstance(group, zarr.Group)
    times = [str(np.datetime64(int(t), "s")) for t in group["time"][:]]
    # dates are appended in the order their ingests commit
    assert sorted(times) == [f"{d[:4]}-{d[4:6]}-{d[6:8]}T10:00:00" for d in dates]
    x, y = group["x"][:], group["y"][:]
    for date in dates:
        t = times.index(f"{date[:4]}-{date[4:6]}-{date[6:8]}T10:00:00")
        for path in scenes[date]:
            band = path.name.split("_")[2]
            with rasterio.open(path) as src:
                c0 = round((src.bounds.left - (x[0] - 5)) / 10)
                r0 = round(((y[0] + 5) - src.bounds.top) / 10)
                got = group[band][t, r0:r0 + SIZE, c0:c0 + SIZE]
                np.testing.assert_array_equal(got, src.read(1), err_msg=f"{band} {date}")
    manifest = store._handle.read_json("parcelzarr-manifest.json")
    assert {v["uri"] for v in manifest["sources"].values()} == {
        str(p) for d in dates for p in scenes[d]}


def test_second_writer_fails_with_one_line_or_waits(
        scenes: dict[str, list[Path]], store_url: tuple[str, Any]) -> None:
    url, opts = store_url
    pz.ingest([str(p) for p in scenes[DATES[0]]], url, storage_options=opts, quiet=True,
              chunk_size=64)
    with open_store_handle(url, opts) as handle:
        lock = writer_lock(handle, opts)  # another writer, in this process
        try:
            refused = subprocess.run(_cli(url, opts, scenes[DATES[1]]), env=ENV,
                                     capture_output=True, text=True, timeout=120)
            assert refused.returncode == 2
            line = refused.stderr.strip()
            assert "\n" not in line and line.startswith("error: store ")
            assert url in line and "--wait" in line and "being written" in line
            with pytest.raises(StoreLockedError):
                pz.ingest([str(p) for p in scenes[DATES[1]]], url, storage_options=opts,
                          quiet=True, lock_timeout=0.5)
            check_store(url, opts, scenes, DATES[:1])  # nothing written
            waiting = subprocess.Popen(_cli(url, opts, scenes[DATES[1]], "--wait", "120"),
                                       env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
            time.sleep(3)
            assert waiting.poll() is None  # still waiting for the lock
        finally:
            lock.release()
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert "wrote 4 source(s)" in out
    check_store(url, opts, scenes, list(DATES[:2]))


def test_two_concurrent_ingests_of_different_dates(
        scenes: dict[str, list[Path]], store_url: tuple[str, Any]) -> None:
    url, opts = store_url
    pz.ingest([str(p) for p in scenes[DATES[0]]], url, storage_options=opts, quiet=True,
              chunk_size=64)
    procs = [subprocess.Popen(_cli(url, opts, scenes[d], "--wait", "180"), env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for d in DATES[1:]]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "wrote 4 source(s)" in out
    check_store(url, opts, scenes, list(DATES))


_HOLDER = textwrap.dedent("""
    import json, sys, time
    from parcelzarr.stores import open_store_handle, writer_lock
    url, opts = sys.argv[1], json.loads(sys.argv[2])
    handle = open_store_handle(url, opts)
    lock = writer_lock(handle, opts)
    print("locked", flush=True)
    time.sleep(600)
""")


def _held_elsewhere(url: str, opts: Any) -> bool:
    with open_store_handle(url, opts) as handle:
        try:
            writer_lock(handle, opts, wait=0).release()
        except StoreLockedError:
            return True
    return False


@pytest.mark.parametrize("transport", ["local", pytest.param("azure", marks=pytest.mark.azure)])
def test_killed_writer_releases_the_lock(transport: str, tmp_path: Path,
                                         request: pytest.FixtureRequest) -> None:
    """A writer that holds the lock past its lease keeps it (renewal); once killed -9 the
    lock is free at once (local) or within the lease (Azure, 15 s here)."""
    if transport == "local":
        url, opts = str(tmp_path / "held.zarr"), None
    else:
        azurite = request.getfixturevalue("azurite")
        url = f"az://{request.getfixturevalue('az_container')}/held.zarr"
        opts = azurite.storage_options()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, url, json.dumps(opts)],
                              env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        if transport == "azure":
            time.sleep(17)  # past the 15 s lease: renewed, still held
        assert _held_elsewhere(url, opts)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    t0 = time.monotonic()
    with open_store_handle(url, opts) as handle:
        writer_lock(handle, opts, wait=30).release()
    freed = time.monotonic() - t0
    print(f"{transport}: lock free {freed:.1f} s after kill -9")
    assert freed < (1 if transport == "local" else 17)


def test_memory_store_one_writer(scenes: dict[str, list[Path]]) -> None:
    """``memory://`` stores (one process) have the same rule."""
    url = "memory://writer-lock-test"
    with open_store_handle(url) as handle, writer_lock(handle), pytest.raises(
            StoreLockedError, match="memory://writer-lock-test"):
        pz.ingest([str(p) for p in scenes[DATES[0]]], url, quiet=True, chunk_size=64)
    report = pz.ingest([str(p) for p in scenes[DATES[0]]], url, quiet=True, chunk_size=64)
    assert report.sources_written == 4


@pytest.mark.azure
def test_sigterm_stops_an_ingest_and_frees_its_lock(scenes: dict[str, list[Path]],
                                                     azurite: Any, az_container: str) -> None:
    """SIGTERM (a job scheduler's stop) of an ingest writing to Azure: exit status 143 and
    the blob lease released on the way out (stopped on the spot, the writer held the next
    ingest off for up to its lease); the next ingest, without ``--wait``, completes the
    store and every band equals its source."""
    from azure.storage.blob import ContainerClient

    url, opts = f"az://{az_container}/term.zarr", azurite.storage_options()
    paths = [p for d in DATES for p in scenes[d]]
    proc = subprocess.Popen(_cli(url, opts, paths), env=ENV, stderr=subprocess.PIPE, text=True)
    container = ContainerClient.from_connection_string(azurite.connection_string, az_container)
    deadline = time.monotonic() + 60
    while not any("/c/" in b.name for b in container.list_blobs(name_starts_with="term.zarr/")):
        assert proc.poll() is None and time.monotonic() < deadline, "no chunk was written"
        time.sleep(0.02)
    assert proc.poll() is None, "the ingest ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-800:]
    assert not _held_elsewhere(url, opts)
    again = subprocess.run(_cli(url, opts, paths), env=ENV, capture_output=True, text=True,
                           timeout=300, check=False)
    assert again.returncode == 0, again.stderr[-800:]
    check_store(url, opts, scenes, list(DATES))
