"""Users' type checkers see the public API: a script passes ``mypy --strict`` against a
regular (non-editable) install of the wheel, and the revealed types are the real classes."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

USER_SCRIPT = '''\
import pandas as pd
import xarray as xr

import parcelzarr as pz

report = pz.ingest(["scenes/T16TCK_20240615T165849_B04_10m.tif"], "stores/county.zarr",
                   bands=["B04"], storage_options=None)
reveal_type(report)
print(report.sources_written, report.seconds)
store = pz.open_store("stores/county.zarr")
reveal_type(store)
df = store.zonal_stats("parcels.gpkg", bands=["B04"], stats=("count", "mean"),
                       time="2024-06", id_column="parcel_id")
reveal_type(df)
ds = store.to_xarray()
reveal_type(ds)
compacted = pz.compact("stores/county.zarr", time_chunk=16)
reveal_type(compacted)
means: pd.Series = df["mean"]
b04: xr.DataArray = ds["B04"]
print(means.max(), b04.sizes)
'''

# line of each reveal_type -> the class it must reveal (the defining module may move)
EXPECTED = {
    8: r"parcelzarr\.[\w.]+\.IngestReport",
    11: r"parcelzarr\.[\w.]+\.ParcelStore",
    14: r"pandas\.core\.frame\.DataFrame",
    16: r"xarray\.core\.dataset\.Dataset",
    18: r"parcelzarr\.[\w.]+\.CompactReport",
}


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel built from this tree (no editable finder); the
    dependencies come from the test environment's site-packages through a ``.pth`` line,
    which does not run that environment's own ``.pth`` files (the editable install)."""
    tmp = tmp_path_factory.mktemp("wheel-venv")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"),
         str(ROOT)], capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next((tmp / "dist").glob("parcelzarr-*.whl"))
    env = tmp / "venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         str(wheel)], capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = subprocess.run([str(python), "-c", purelib], capture_output=True, text=True,
                          check=True).stdout.strip()
    (Path(site) / "test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    where = subprocess.run([str(python), "-c", "import parcelzarr; print(parcelzarr.__file__)"],
                           capture_output=True, text=True, check=False, cwd=tmp)
    assert where.returncode == 0, where.stderr[-2000:]
    assert where.stdout.strip().startswith(site), where.stdout  # the wheel, not the tree
    return python


@pytest.mark.slow
def test_user_script_passes_mypy_strict_with_real_types(wheel_venv: Path, tmp_path: Path) -> None:
    script = tmp_path / "user_script.py"
    script.write_text(USER_SCRIPT)
    config = tmp_path / "mypy.ini"  # the user's settings, not this repository's
    config.write_text("[mypy]\n")
    res = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--python-executable", str(wheel_venv), "--config-file", str(config), str(script)],
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path)
    out = res.stdout + res.stderr
    assert " error:" not in out, out
    revealed = {int(m[1]): m[2] for m in
                re.finditer(r"user_script\.py:(\d+): note: Revealed type is \"([^\"]+)\"", out)}
    assert revealed.keys() == EXPECTED.keys(), out
    for line, pattern in EXPECTED.items():
        assert re.fullmatch(pattern, revealed[line]), (line, revealed[line])
