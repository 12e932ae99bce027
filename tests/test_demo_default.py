"""``parcelzarr demo`` writes only into the cache folder by default, never into the current
directory (a source checkout)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import rasterio
from click.testing import CliRunner

from parcelzarr.cli import main


def test_demo_writes_into_the_cache_folder_only(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cache, cwd = tmp_path / "cache", tmp_path / "checkout"
    cwd.mkdir()
    monkeypatch.setenv("PARCELZARR_CACHE_DIR", str(cache))
    monkeypatch.chdir(cwd)
    res = CliRunner().invoke(main, ["demo", "--size", "600", "--parcels", "40", "--quiet"])
    assert res.exit_code == 0, res.output
    assert list(cwd.iterdir()) == []
    store = cache / "demo" / "demo.zarr"
    assert (store / "zarr.json").is_file()
    stats = pd.read_parquet(cache / "demo" / "demo-stats.parquet")
    # oracle: the pixel count of the generated scene's B04 file covers what the parcels read
    scene = sorted((cache / "demo").glob("scene-600-0/*B04*.tif"))
    assert len(scene) == 1
    with rasterio.open(scene[0]) as ds:
        valid = int((ds.read(1) != ds.nodata).sum())
    b04 = stats[stats["band"] == "B04"]
    assert len(b04) == 40
    assert 0 < b04["count"].sum() <= valid
