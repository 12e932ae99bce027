"""Local file system faults: a full disk (a small tmpfs) and read-only stores (chmod, and, for
root, whom chmod does not stop, a read-only bind mount). Each gives one clear line, a typed
error raised from the OS error, and leaves committed data intact.

Oracle: rasterstats on the source GeoTIFFs.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner
from rasterstats import zonal_stats

import parcelzarr as pz
from parcelzarr.cli import main
from parcelzarr.errors import StoreAccessDeniedError, StoreWriteError

from ._rasters import ORIGIN, make_scene

SHAPE = (300, 320)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
#: Run a command as root without the capabilities that let root ignore file modes.
NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
          "--bounding-set=-dac_override,-dac_read_search", "--"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("fsfaults")
    return {
        "2024-06-15": make_scene(root / "d1", shape=SHAPE, date="20240615T165849",
                                 bands=["B04", "B08"]),
        "2024-06-20": make_scene(root / "d2", shape=SHAPE, date="20240620T165849",
                                 bands=["B04", "B08"], seed=7),
    }


def _fields() -> list[shapely.Polygon]:
    x0, y0 = ORIGIN
    w, h = SHAPE[1] * 10.0, SHAPE[0] * 10.0
    return [shapely.box(x0 + i * w / 3 + 11, y0 - (j + 1) * h / 3 + 19,
                        x0 + (i + 1) * w / 3 - 7, y0 - j * h / 3 - 13)
            for i in range(3) for j in range(3)] + [shapely.box(x0, y0 - h, x0 + w, y0)]


def _check_exact(store_url: str, scenes: dict[str, list[Path]], dates: list[str]) -> None:
    """Every stored band of every date in ``dates`` against rasterstats on its source; no
    other date is visible."""
    import geopandas as gpd

    store = pz.open_store(store_url)
    gdf = gpd.GeoDataFrame(geometry=_fields(), crs="EPSG:32616")
    df = store.zonal_stats(gdf, stats=("count", "mean", "min", "max"))
    assert sorted({str(t)[:10] for t in df["time"]}) == sorted(dates)
    for date in dates:
        for path in scenes[date]:
            band = path.stem.split("_")[2]
            ours = df[(df["band"] == band) & (df["time"].astype(str).str[:10] == date)]
            theirs = pd.DataFrame(zonal_stats(_fields(), str(path),
                                              stats=["count", "mean", "min", "max"]))
            np.testing.assert_array_equal(ours["count"].to_numpy(), theirs["count"].to_numpy())
            for s in ("mean", "min", "max"):
                np.testing.assert_allclose(ours[s].to_numpy(dtype=float),
                                           theirs[s].to_numpy(dtype=float), rtol=1e-12)


def _one_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output[-3000:]
    return lines[0]


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    """An empty directory to mount on; unmounted afterwards (root on Linux only)."""
    if not IS_ROOT or not sys.platform.startswith("linux") or shutil.which("mount") is None:
        pytest.skip("needs root on Linux (mount)")
    point = tmp_path / "mnt"
    point.mkdir()
    yield point
    subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)


def _mount(*args: str) -> None:
    res = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount here: {res.stderr.strip()}")


def test_disk_full_is_one_line_and_loses_nothing(
        mountpoint: Path, scenes: dict[str, list[Path]]) -> None:
    _mount("-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mountpoint))
    store = str(mountpoint / "s.zarr")
    first = [str(p) for p in scenes["2024-06-15"]]
    second = [str(p) for p in scenes["2024-06-20"]]
    pz.ingest(first, store, quiet=True)  # ~0.2 MB stored: fits
    with pytest.raises(StoreWriteError) as err:
        pz.ingest(second, store, quiet=True)  # does not
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    assert isinstance(err.value.__cause__, OSError)
    assert err.value.__cause__.errno == errno.ENOSPC
    res = CliRunner().invoke(main, ["ingest", *second, "--store", store, "--quiet"])
    assert res.exit_code != 0
    line = _one_error_line(res.output)
    assert "full" in line and "No space left on device" in line and store in line
    _check_exact(store, scenes, ["2024-06-15"])  # committed data intact, nothing half-seen
    _mount("-o", "remount,size=8m", str(mountpoint))  # space freed: the same command again
    res = CliRunner().invoke(main, ["ingest", *second, "--store", store, "--quiet"])
    assert res.exit_code == 0, res.output
    _check_exact(store, scenes, ["2024-06-15", "2024-06-20"])


def _ingest_once(tmp_path: Path, scenes: dict[str, list[Path]]) -> Path:
    store = tmp_path / "ro.zarr"
    pz.ingest([str(p) for p in scenes["2024-06-15"]], str(store), quiet=True)
    return store


def _chmod_tree(path: Path, *, writable: bool) -> None:
    for p in [path, *path.rglob("*")]:
        if p.is_dir():
            os.chmod(p, 0o755 if writable else 0o555)
        else:
            os.chmod(p, 0o644 if writable else 0o444)


def test_root_is_not_stopped_by_chmod(tmp_path: Path,
                                      scenes: dict[str, list[Path]]) -> None:
    """Why the read-only tests below drop root's capabilities or mount read-only: a chmod
    alone proves nothing when the suite runs as root."""
    if not IS_ROOT:
        pytest.skip("only root bypasses file modes")
    store = _ingest_once(tmp_path, scenes)
    _chmod_tree(store, writable=False)
    try:
        assert os.access(store, os.W_OK)
        pz.ingest([str(p) for p in scenes["2024-06-20"]], str(store), quiet=True)
    finally:
        _chmod_tree(store, writable=True)
    _check_exact(str(store), scenes, ["2024-06-15", "2024-06-20"])


def test_chmod_read_only_store_is_one_line(tmp_path: Path,
                                           scenes: dict[str, list[Path]]) -> None:
    """The command runs as a process that file modes bind: the current user if not root,
    else root without CAP_DAC_OVERRIDE (setpriv)."""
    prefix: list[str] = []
    if IS_ROOT:
        if shutil.which("setpriv") is None:
            pytest.skip("root needs setpriv to be bound by file modes")
        prefix = NO_DAC
    store = _ingest_once(tmp_path, scenes)
    _chmod_tree(store, writable=False)
    exe = str(Path(sys.executable).parent / "parcelzarr")
    env = dict(os.environ, PARCELZARR_CACHE_DIR=str(tmp_path / "cache"))
    try:
        res = subprocess.run(
            [*prefix, exe, "ingest", *map(str, scenes["2024-06-20"]), "--store", str(store),
             "--quiet"], capture_output=True, text=True, env=env, timeout=300, check=False)
        assert res.returncode != 0
        line = _one_error_line(res.stderr)
        assert "permission" in line.lower() and str(store) in line
        # reading still works and the committed date is intact
        res = subprocess.run([*prefix, exe, "info", str(store)], capture_output=True,
                             text=True, env=env, timeout=300, check=False)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "dates (1): 2024-06-15" in res.stdout
    finally:
        _chmod_tree(store, writable=True)
    _check_exact(str(store), scenes, ["2024-06-15"])


def test_read_only_mount_is_one_line_and_still_readable(
        tmp_path: Path, mountpoint: Path, scenes: dict[str, list[Path]]) -> None:
    store = _ingest_once(tmp_path, scenes)
    _mount("--bind", str(store), str(mountpoint))
    _mount("-o", "remount,bind,ro", str(mountpoint))
    with pytest.raises(StoreWriteError) as err:
        pz.ingest([str(p) for p in scenes["2024-06-20"]], str(mountpoint), quiet=True)
    assert err.value.errno == errno.EROFS
    assert isinstance(err.value.__cause__, OSError)
    res = CliRunner().invoke(main, ["ingest", *map(str, scenes["2024-06-20"]), "--store",
                                    str(mountpoint), "--quiet"])
    assert res.exit_code != 0
    assert "read-only file system" in _one_error_line(res.output)
    _check_exact(str(mountpoint), scenes, ["2024-06-15"])  # queries need no write access


def test_no_permission_is_typed_in_python(tmp_path: Path,
                                          scenes: dict[str, list[Path]]) -> None:
    """The Python error for a store the process may not write (when file modes bind it)."""
    if IS_ROOT:
        pytest.skip("root ignores file modes (see test_chmod_read_only_store_is_one_line)")
    store = _ingest_once(tmp_path, scenes)
    _chmod_tree(store, writable=False)
    try:
        with pytest.raises(StoreAccessDeniedError) as err:
            pz.ingest([str(p) for p in scenes["2024-06-20"]], str(store), quiet=True)
        assert isinstance(err.value, PermissionError)
        assert isinstance(err.value.__cause__, PermissionError)
    finally:
        _chmod_tree(store, writable=True)
