"""``parcelzarr stats``: Parquet, GeoParquet and CSV output and the printed cost report."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
from click.testing import CliRunner

import parcelzarr as pz
from parcelzarr.cli import main

from ._rasters import make_parcels as make_parcels
from ._rasters import make_scene


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("cli")
    scene = make_scene(tmp / "scene", shape=(200, 220), bands=["B04", "B08"])
    url = str(tmp / "s.zarr")
    pz.ingest([str(p) for p in scene], url, quiet=True, chunk_size=64)
    parcels = tmp / "parcels.gpkg"
    make_parcels((200, 220), n=15).to_file(parcels)
    return url, parcels


def test_stats_geoparquet_csv_and_report(cli_store: tuple[str, Path], tmp_path: Path) -> None:
    url, parcels = cli_store
    runner = CliRunner()
    out = tmp_path / "s.parquet"
    res = runner.invoke(main, ["stats", url, str(parcels), "--out", str(out), "--geometry",
                               "--bands", "B04,B08", "--indices",
                               "ndvi,(B08 - B04) / (B08 + B04)", "--id-column",
                               "field", "--stats", "count,mean,median", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "parcels/s" in res.output
    assert "requests" in res.output
    gdf = gpd.read_parquet(out)
    assert gdf.crs is not None
    assert set(gdf["band"]) == {"B04", "B08", "ndvi", "(B08 - B04) / (B08 + B04)"}
    ndvi = gdf[gdf.band == "ndvi"].reset_index(drop=True)
    expr = gdf[gdf.band == "(B08 - B04) / (B08 + B04)"].reset_index(drop=True)
    pd.testing.assert_series_equal(ndvi["mean"], expr["mean"])
    csv = tmp_path / "s.csv"
    res = runner.invoke(main, ["stats", url, str(parcels), "--out", str(csv), "--coverage",
                               "--stats", "count,mean", "--quiet"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(csv)
    assert {"parcel_id", "band", "time", "count", "mean"} <= set(df.columns)
    res = runner.invoke(main, ["stats", url, str(parcels), "--out", str(tmp_path / "x.txt")])
    assert res.exit_code != 0
