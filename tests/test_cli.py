"""The command line, through click's runner: ingest, info, stats, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.features import geometry_mask

from parcelzarr.cli import main

from ._rasters import make_parcels, make_scene


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], Path]:
    root = tmp_path_factory.mktemp("cli")
    scene = make_scene(root / "scene", shape=(260, 300))
    parcels = make_parcels(shape=(260, 300), n=15).to_crs("EPSG:4326")
    path = root / "parcels.gpkg"
    parcels.to_file(path)
    return root, scene, path


def test_ingest_info_stats(setup: tuple[Path, list[Path], Path]) -> None:
    root, scene, parcels_path = setup
    runner = CliRunner()
    store = str(root / "cli.zarr")
    res = runner.invoke(main, ["ingest", str(root / "scene" / "*.tif"), "--store", store,
                               "--bands", "B04,B08", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "wrote 2 source(s)" in res.output
    res = runner.invoke(main, ["ingest", str(root / "scene" / "*.tif"), "--store", store,
                               "--bands", "B04,B08", "--quiet"])
    assert "nothing to do" in res.output

    res = runner.invoke(main, ["info", store, "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    grid = info["grids"]["utm16n/10m"]
    assert sorted(grid["bands"]) == ["B04", "B08"]
    assert grid["times"][0].startswith("2024-06-15")

    out = root / "stats.csv"
    res = runner.invoke(main, ["stats", store, str(parcels_path), "--out", str(out),
                               "--bands", "B08", "--stats", "count,mean", "--id-column",
                               "field", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "parcels/s" in res.output
    df = pd.read_csv(out)
    assert list(df.columns) == ["field", "band", "time", "count", "mean", "status"]
    # one parcel against the oracle on the source
    gdf = pd.read_csv(out).set_index("field")
    import geopandas as gpd

    parcels = gpd.read_file(parcels_path).to_crs("EPSG:32616")
    with rasterio.open(next(p for p in scene if "_B08_" in p.name)) as src:
        arr = src.read(1)
        for fid, geom in zip(parcels.field, parcels.geometry, strict=True):
            if geom is None or geom.is_empty:
                continue
            m = ~geometry_mask([geom], out_shape=arr.shape, transform=src.transform)
            v = arr[m]
            v = v[v != 0]
            assert gdf.loc[fid, "count"] == v.size
            if v.size:
                assert gdf.loc[fid, "mean"] == pytest.approx(v.mean())


def test_cli_errors_are_one_line(setup: tuple[Path, list[Path], Path]) -> None:
    root, _, parcels_path = setup
    runner = CliRunner()
    res = runner.invoke(main, ["ingest", str(root / "nothing-*.tif"), "--store",
                               str(root / "x.zarr")])
    assert res.exit_code == 2
    assert "error: source" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["stats", str(root / "none.zarr"), str(parcels_path),
                               "--out", str(root / "o.parquet")])
    assert res.exit_code == 2 and "no parcelzarr store" in res.output
    res = runner.invoke(main, ["stats", str(root / "none.zarr"), str(parcels_path),
                               "--out", str(root / "o.txt")])
    assert res.exit_code != 0


def test_storage_option_secret_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()
    res = runner.invoke(main, ["info", "az://c/s.zarr", "--storage-option",
                               "account_name=nosuchacct", "--storage-option",
                               "account_key=c2VjcmV0c2VjcmV0", "--storage-option",
                               "account_host=127.0.0.1:9"])
    assert res.exit_code != 0
    assert "c2VjcmV0c2VjcmV0" not in res.output
