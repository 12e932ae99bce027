"""No silently empty results (issue 8, items 5 and 6): time periods, selections matching no
stored date, layers of multi-layer parcel files, ``.geoparquet`` output, parcels in a wrong
CRS, plain values in messages.

Real data from ../shared/data: the eo-learn 68-date NDVI stack of Slovenia with its land-use
parcels, the fiboa Portuguese parcels (a GeoPackage whose default layer is empty) and the
Japanese ones. Oracles: the stack's own ``timestamps.json``, and rasterio/numpy on the source
GeoTIFFs; parcelzarr only reads its own store.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from rasterio.features import geometry_mask

import parcelzarr as pz
from parcelzarr.cli import main
from parcelzarr.errors import DateNotFoundError, GeometryError

from ._rasters import SHARED_DATA, make_scene, write_tif

SLO = SHARED_DATA / "eo-learn-slovenia"
PT = SHARED_DATA / "fiboa-parcels" / "pt" / "Continente.gpkg"
JP = SHARED_DATA / "fiboa-parcels" / "jp" / "jp_field_polygons_2024.parquet"
pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared real data not available")


@pytest.fixture(scope="module")
def ndvi_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """The 68-date NDVI stack (2015-07 to 2017-12) as one layer named ``ndvi``."""
    times = json.loads((SLO / "timestamps.json").read_text())
    url = str(tmp_path_factory.mktemp("sel") / "ndvi.zarr")
    pz.ingest([str(SLO / "NDVI_68dates.tif")], url, band="ndvi", times=times, quiet=True)
    return url, times


@pytest.fixture(scope="module")
def lulc() -> gpd.GeoDataFrame:
    return gpd.read_file(SLO / "LULC.gpkg")[["geometry"]].head(12)


def _dates(df: pd.DataFrame) -> list[str]:
    return sorted({str(t)[:19].replace(" ", "T") for t in df["time"]})


@pytest.mark.parametrize(("time", "keep"), [
    ("2016", lambda t: t.startswith("2016")),
    ("2016-05", lambda t: t.startswith("2016-05")),
    ("2016-05/2016-07", lambda t: "2016-05-01" <= t[:10] <= "2016-07-31"),
    ("/2015-08", lambda t: t[:7] <= "2015-08"),
    ("2017-11-15/", lambda t: t[:10] >= "2017-11-15"),
])
def test_years_and_months_select_whole_periods(ndvi_store: tuple[str, list[str]],
                                               lulc: gpd.GeoDataFrame, time: str,
                                               keep: object) -> None:
    url, times = ndvi_store
    df = pz.open_store(url).zonal_stats(lulc, stats="count,mean", time=time)
    expect = sorted(t for t in times if keep(t))  # type: ignore[operator]
    assert expect  # the oracle selects something
    assert _dates(df) == expect
    assert len(df) == len(lulc) * len(expect)


def test_selection_matching_no_date_is_an_error(ndvi_store: tuple[str, list[str]],
                                                lulc: gpd.GeoDataFrame,
                                                tmp_path: Path) -> None:
    url, _ = ndvi_store
    store = pz.open_store(url)
    for time in ("2021", "2019-01/2019-12", "2016-06-01"):
        with pytest.raises(DateNotFoundError, match=r"2015-07-11 to 2017-12"):
            store.zonal_stats(lulc, time=time)
    with pytest.raises(DateNotFoundError, match="2015-07-11"):
        store.read(lulc.geometry.iloc[0], crs=lulc.crs, time="2021")
    parcels = tmp_path / "p.gpkg"
    lulc.to_file(parcels)
    res = CliRunner().invoke(main, ["stats", url, str(parcels), "--out",
                                    str(tmp_path / "o.parquet"), "--time", "2021", "--quiet"])
    assert res.exit_code == 2
    assert "matches no stored date" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o.parquet").exists()


def test_band_missing_on_the_selected_dates(tmp_path: Path) -> None:
    """B08 was ingested on one date only: its other date is not reported as an empty parcel
    row, and asking for B08 on a date it lacks is an error."""
    first = make_scene(tmp_path / "a", shape=(120, 130), date="20240615T165849",
                       bands=["B04", "B08"])
    second = make_scene(tmp_path / "b", shape=(120, 130), date="20240701T165849",
                        bands=["B04"])
    url = str(tmp_path / "s.zarr")
    pz.ingest([str(p) for p in first + second], url, quiet=True)
    with rasterio.open(first[0]) as src:
        parcel = shapely.box(*src.bounds).buffer(-300)
        crs = src.crs
    store = pz.open_store(url)
    df = store.zonal_stats(parcel, crs=crs, stats="count")
    got = sorted((b, str(t)[:10]) for b, t in zip(df["band"], df["time"], strict=True))
    assert got == [("B04", "2024-06-15"), ("B04", "2024-07-01"), ("B08", "2024-06-15")]
    assert (df["count"] > 0).all()
    with pytest.raises(DateNotFoundError, match=r"B08.*2024-06-15"):
        store.zonal_stats(parcel, crs=crs, bands=["B08"], time="2024-07")
    with pytest.raises(DateNotFoundError, match=r"ndvi \(reads B04, B08\).*1 date, 2024-06-15"):
        store.zonal_stats(parcel, crs=crs, indices=["ndvi"], time="2024-07")
    with pytest.raises(ValueError, match="nothing to compute"):
        store.zonal_stats(parcel, crs=crs, bands=[])


@pytest.fixture(scope="module")
def aveiro_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A synthetic 10 m class layer in EPSG:3763 under the Portuguese parcels of the
    ``OcupacoesSolo_Aveiro`` layer."""
    tmp = tmp_path_factory.mktemp("pt")
    rng = np.random.default_rng(8)
    data = rng.integers(0, 6, size=(470, 530)).astype("uint8")
    tif = write_tif(tmp / "classes.tif", data, origin=(-26_300.0, 97_400.0), res=10.0,
                    crs="EPSG:3763", nodata=0)
    url = str(tmp / "pt.zarr")
    pz.ingest([str(tif)], url, band="cls", time="2023-01-01", quiet=True)
    return url, tif


def test_multi_layer_parcel_files(aveiro_store: tuple[str, Path], tmp_path: Path) -> None:
    url, tif = aveiro_store
    store = pz.open_store(url)
    # the default layer "Continente" is empty while two others hold parcels
    with pytest.raises(GeometryError, match=r"Continente.*Culturas_Aveiro \(100 features\)"):
        store.zonal_stats(str(PT), stats="count")
    with pytest.raises(GeometryError, match="no layer 'nope'"):
        store.zonal_stats(str(PT), layer="nope")
    df = store.zonal_stats(str(PT), layer="OcupacoesSolo_Aveiro", stats="count")
    parcels = gpd.read_file(PT, layer="OcupacoesSolo_Aveiro")
    assert len(df) == len(parcels) == 100
    with rasterio.open(tif) as src:
        values = src.read(1)
        expect = [int(((~geometry_mask([g], values.shape, src.transform)) & (values != 0)).sum())
                  for g in parcels.geometry]
    assert df["count"].tolist() == expect
    assert sum(expect) > 1000

    runner = CliRunner()
    out = tmp_path / "stats.geoparquet"
    res = runner.invoke(main, ["stats", url, str(PT), "--layer", "OcupacoesSolo_Aveiro",
                               "--out", str(out), "--stats", "count", "--quiet"])
    assert res.exit_code == 0, res.output
    written = gpd.read_parquet(out)
    assert len(written) == 100 and written.crs == parcels.crs
    assert written.geometry.notna().all()
    res = runner.invoke(main, ["stats", url, str(PT), "--out", str(out), "--quiet"])
    assert res.exit_code == 2
    assert "--layer" in res.output and "OcupacoesSolo_Aveiro (100 features)" in res.output


def test_parcels_in_a_wrong_crs(ndvi_store: tuple[str, list[str]], lulc: gpd.GeoDataFrame
                                ) -> None:
    url, _ = ndvi_store
    store = pz.open_store(url)
    aveiro = gpd.read_file(PT, layer="Culturas_Aveiro").head(5)
    # metres labelled as degrees: a clear error, not an overflow or a 90 GB raster
    with pytest.raises(GeometryError, match=r"beyond ±180°/±90°"):
        store.zonal_stats(aveiro.set_crs("EPSG:4326", allow_override=True), time="2016-05")
    # coordinates 1000 times too large project to infinity: count 0, the others exact
    blown = aveiro.copy()
    blown["geometry"] = aveiro.geometry.scale(1000, 1000, origin=(0, 0))
    mixed = pd.concat([lulc.to_crs(aveiro.crs), blown], ignore_index=True)
    df = store.zonal_stats(mixed, stats="count", time="2016-05-06")
    assert len(df) == len(mixed)
    assert (df["count"].iloc[len(lulc):] == 0).all()
    with rasterio.open(SLO / "NDVI_68dates.tif") as src:
        shape, transform = (src.height, src.width), src.transform
    back = gpd.GeoSeries(mixed.geometry.iloc[:len(lulc)], crs=aveiro.crs).to_crs(lulc.crs)
    expect = [int((~geometry_mask([g], shape, transform)).sum()) for g in back]
    assert df["count"].iloc[:len(lulc)].tolist() == expect
    # parcels on the other side of the world: count 0 and a warning naming the cause
    japan = gpd.read_parquet(JP).head(5)
    with pytest.warns(UserWarning, match="none of the 5 parcels overlaps the store"):
        far = store.zonal_stats(japan, stats="count", time="2016-05-06")
    assert (far["count"] == 0).all() and len(far) == 5


def test_messages_show_plain_values(ndvi_store: tuple[str, list[str]]) -> None:
    url, _ = ndvi_store
    store = pz.open_store(url)
    gdf = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1), shapely.Point(5, 5)],
                           index=pd.Index(np.array([7, 3], dtype=np.int64)), crs="EPSG:32633")
    with pytest.raises(GeometryError) as err:
        store.zonal_stats(gdf)
    assert "parcel 3" in str(err.value) and "np." not in str(err.value)
    twice = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)] * 2,
                             index=pd.Index(np.array([4, 4], dtype=np.int64)), crs="EPSG:32633")
    with pytest.raises(GeometryError, match=r"not unique \(e\.g\. 4\)"):
        store.zonal_stats(twice)
