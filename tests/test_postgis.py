"""PostGIS in and out on a real server (issue 12): parcels from ``postgresql://...?table=``
and ``?sql=``, results to ``?table=`` with re-runs replacing rows, credentials from libpq's
conventions never shown.

The server is a throw-away PostgreSQL + PostGIS cluster the session starts (fixture
``postgres``). Parcels are the real Slovenian land-use parcels stored in EPSG:4326 as users
keep them; statistics are checked against numpy on the source GeoTIFF, and the table is read
back with GeoPandas/SQLAlchemy (independent of parcelzarr's writer).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import pytest
import rasterio
import shapely
import sqlalchemy
from click.testing import CliRunner
from rasterio.features import geometry_mask

import parcelzarr as pz
from parcelzarr.cli import main
from parcelzarr.errors import DatabaseError, GeometryError
from parcelzarr.testing import PostgresServer

from ._rasters import SHARED_DATA

SLO = SHARED_DATA / "eo-learn-slovenia"
pytestmark = [pytest.mark.postgis,
              pytest.mark.skipif(not SLO.exists(), reason="shared real data not available")]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> pz.ParcelStore:
    url = str(tmp_path_factory.mktemp("slo") / "slo.zarr")
    times = json.loads((SLO / "timestamps.json").read_text())
    pz.ingest(str(SLO / "NDVI_68dates.tif"), url, band="NDVI", times=times, chunk_size=32,
              quiet=True)
    pz.ingest(str(SLO / "CLM_68dates.tif"), url, band="CLM", times=times, chunk_size=32,
              quiet=True)
    return pz.open_store(url)


@pytest.fixture(scope="module")
def lulc(postgres: PostgresServer) -> str:
    """The LULC parcels in table ``lulc`` (fid primary key, EPSG:4326), loaded with psycopg's
    COPY (EWKB): the name of the table."""
    parcels = gpd.read_file(SLO / "LULC.gpkg").to_crs(4326)
    with psycopg.connect(**_conn(postgres)) as conn:
        conn.execute("CREATE TABLE lulc (fid integer PRIMARY KEY, lulc_id integer, "
                     "geom geometry(Geometry, 4326))")
        with conn.cursor().copy("COPY lulc (fid, lulc_id, geom) FROM STDIN") as copy:
            for i, (cls, geom) in enumerate(zip(parcels["LULC_ID"], parcels.geometry,
                                                strict=True)):
                copy.write_row((1000 + i, int(cls), shapely.to_wkb(
                    shapely.set_srid(geom, 4326), hex=True, include_srid=True)))
    return "lulc"


def _conn(pg: PostgresServer) -> dict[str, object]:
    return {"host": pg.socket_dir, "port": pg.port, "user": pg.user, "password": pg.password,
            "dbname": pg.database}


@pytest.fixture
def pgenv(postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """libpq's PG* variables reaching the server (the URLs then name only the table)."""
    for key, value in postgres.env().items():
        monkeypatch.setenv(key, value)
    return postgres.env()


def _engine(pg: PostgresServer) -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(
        sqlalchemy.URL.create("postgresql+psycopg", username=pg.user, password=pg.password,
                              database=pg.database, query={"host": pg.socket_dir,
                                                           "port": str(pg.port)}),
        poolclass=sqlalchemy.NullPool)


def _numpy_stats(pg: PostgresServer, table: str, dates: list[int]) -> pd.DataFrame:
    """count and mean per parcel and date: parcels read back with GeoPandas, reprojected to
    the raster, burnt by pixel centre; NDVI from rasterio."""
    parcels = gpd.read_postgis(f"SELECT fid, geom FROM {table} ORDER BY fid", _engine(pg),
                               geom_col="geom").to_crs(32633)
    times = np.array(json.loads((SLO / "timestamps.json").read_text()), dtype="datetime64[s]")
    with rasterio.open(SLO / "NDVI_68dates.tif") as ds:
        ndvi = ds.read().astype(np.float64)
        shape, transform = (ds.height, ds.width), ds.transform
    rows = []
    for fid, geom in zip(parcels["fid"], parcels.geometry, strict=True):
        inside = ~geometry_mask([geom], shape, transform)
        for t in dates:
            v = ndvi[t][inside]
            v = v[~np.isnan(v)]
            rows.append({"fid": fid, "time": times[t], "count": v.size,
                         "mean": v.mean() if v.size else np.nan})
    return pd.DataFrame(rows)


def _dates(since: str, until: str) -> list[int]:
    times = np.array(json.loads((SLO / "timestamps.json").read_text()), dtype="datetime64[s]")
    return list(np.flatnonzero((times >= np.datetime64(since)) & (times < np.datetime64(until))))


def test_parcels_from_a_table_in_4326(store: pz.ParcelStore, postgres: PostgresServer,
                                      lulc: str, pgenv: dict[str, str]) -> None:
    df = store.zonal_stats(f"postgresql:///?table={lulc}", bands=["NDVI"],
                           stats="count,mean", time="2016-05/2016-06")
    ref = _numpy_stats(postgres, lulc, _dates("2016-05-01", "2016-07-01"))
    assert df.columns[0] == "fid"  # the table's primary key is the id
    ref = ref.sort_values(["fid", "time"]).reset_index(drop=True)
    df = df.sort_values(["fid", "time"]).reset_index(drop=True)
    np.testing.assert_array_equal(df["fid"], ref["fid"])
    np.testing.assert_array_equal(df["time"].to_numpy(), ref["time"].to_numpy())
    np.testing.assert_array_equal(df["count"], ref["count"])
    np.testing.assert_allclose(df["mean"], ref["mean"], rtol=1e-9)
    assert (df["count"] > 0).sum() > 300


def test_parcels_from_a_query(store: pz.ParcelStore, postgres: PostgresServer, lulc: str,
                              pgenv: dict[str, str]) -> None:
    sql = (f"SELECT fid AS parcel, ST_Transform(geom, 3857) AS g FROM {lulc} "
           "WHERE lulc_id = 3 AND fid % 2 = 0")
    df = store.zonal_stats(f"postgresql:///?sql={sql}", bands=["NDVI"], stats="count,mean",
                           time="2016-06-05", id_column="parcel")
    with psycopg.connect(**_conn(postgres)) as conn:
        want = sorted(r[0] for r in conn.execute(
            f"SELECT fid FROM {lulc} WHERE lulc_id = 3 AND fid % 2 = 0"))
    assert sorted(df["parcel"]) == want and len(want) > 5
    ref = _numpy_stats(postgres, lulc, _dates("2016-06-05", "2016-06-06")).set_index("fid")
    np.testing.assert_array_equal(df["count"], ref.loc[df["parcel"], "count"])
    np.testing.assert_allclose(df["mean"], ref.loc[df["parcel"], "mean"], rtol=1e-9)
    # no stable row order without an id: refused, not keyed by row number
    with pytest.raises(GeometryError, match="--id-column"):
        store.zonal_stats(f"postgresql:///?sql={sql}", bands=["NDVI"], time="2016-06-05")
    # the query runs read-only
    with pytest.raises(DatabaseError, match="read-only"):
        store.zonal_stats(f"postgresql:///?sql=DELETE FROM {lulc} RETURNING fid, geom",
                          bands=["NDVI"], id_column="fid")
    with pytest.raises(ValueError, match="one statement"):
        store.zonal_stats(f"postgresql:///?sql=SELECT fid, geom FROM {lulc}; COMMIT; "
                          f"DELETE FROM {lulc}", bands=["NDVI"], id_column="fid")
    with psycopg.connect(**_conn(postgres)) as conn:
        assert conn.execute(f"SELECT count(*) FROM {lulc}").fetchone() == (88,)


def _table(pg: PostgresServer, table: str) -> pd.DataFrame:
    with _engine(pg).connect() as conn:
        return pd.read_sql(f"SELECT * FROM {table}", conn)


def test_results_to_a_table_and_reruns_replace(store: pz.ParcelStore,
                                               postgres: PostgresServer, lulc: str,
                                               pgenv: dict[str, str]) -> None:
    url = "postgresql:///?table=ndvi_stats"
    first = store.zonal_stats(f"postgresql:///?table={lulc}", bands=["NDVI"],
                              stats="count,mean,median", time="2016-01/2016-06")
    assert pz.to_postgis(first, url) == len(first)
    got = _table(postgres, "ndvi_stats").sort_values(["fid", "time"]).reset_index(drop=True)
    want = first.sort_values(["fid", "time"]).reset_index(drop=True)
    assert list(got.columns) == list(first.columns)
    np.testing.assert_array_equal(got["fid"], want["fid"])
    np.testing.assert_array_equal(got["time"].to_numpy("datetime64[s]"),
                                  want["time"].to_numpy("datetime64[s]"))
    np.testing.assert_array_equal(got["count"], want["count"])
    np.testing.assert_allclose(got["mean"], want["mean"], rtol=1e-12)
    assert got["median"].isna().sum() == want["median"].isna().sum() > 0  # NaN -> NULL
    with psycopg.connect(**_conn(postgres)) as conn:
        idx = conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'ndvi_stats'"
                           ).fetchall()
    assert any("UNIQUE" in d and "(fid, band, \"time\")" in d for (d,) in idx), idx

    # the same run again: same rows, no duplicates
    pz.to_postgis(first, url)
    assert len(_table(postgres, "ndvi_stats")) == len(first)

    # an overlapping run (later dates, cloud-masked) replaces the rows it recomputes
    second = store.zonal_stats(f"postgresql:///?table={lulc}", bands=["NDVI"],
                               stats="count,mean,median", time="2016-04/2016-08",
                               mask="CLM", mask_classes=[1])
    pz.to_postgis(second, url)
    got = _table(postgres, "ndvi_stats")
    key = ["fid", "band", "time"]
    assert not got.duplicated(key).any()
    union = pd.concat([first, second]).drop_duplicates(key)
    assert len(got) == len(union)
    got["time"] = got["time"].astype("datetime64[s]")
    merged = got.merge(second, on=key, suffixes=("", "_new"))
    assert len(merged) == len(second)
    np.testing.assert_array_equal(merged["count"], merged["count_new"])
    kept = got.merge(first[first["time"] < np.datetime64("2016-04-01")], on=key,
                     suffixes=("", "_old"))
    assert len(kept) == (first["time"] < np.datetime64("2016-04-01")).sum() > 0
    np.testing.assert_array_equal(kept["count"], kept["count_old"])
    # the replaced rows really changed: the mask removed cloudy pixels from some of them
    overlap = merged.merge(first, on=key, suffixes=("", "_first"))
    assert len(overlap) > 0 and (overlap["count"] < overlap["count_first"]).sum() > 10

    # results that do not fit the table are refused, naming the columns
    with pytest.raises(ValueError, match="no column"):
        pz.to_postgis(first.assign(extra=1.0), url)


def _cli(args: list[str], env: dict[str, str], cwd: Path, debug: bool = False
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "parcelzarr.cli", "-vv",
                           *(["--debug"] if debug else []), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)


def test_cli_in_and_out_and_no_password_shown(store: pz.ParcelStore,
                                              postgres: PostgresServer, lulc: str,
                                              tmp_path: Path) -> None:
    """Every run is a real ``parcelzarr`` process with debug logs (and tracebacks where it
    fails); neither the real password nor a wrong marker password ever appears."""
    marker = "PZLEAK" + uuid.uuid4().hex
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"*:*:*:{postgres.user}:{postgres.password}\n")
    pgpass.chmod(0o600)
    base = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env = postgres.env()
    via_pgpass = base | {k: v for k, v in env.items() if k != "PGPASSWORD"} | {
        "PGPASSFILE": str(pgpass)}
    wrong = base | env | {"PGPASSWORD": marker}
    sock = f"host={postgres.socket_dir}&port={postgres.port}"
    in_url = (f"postgresql://{postgres.user}:{postgres.password}@/{postgres.database}?{sock}")
    bad_url = f"postgresql://{postgres.user}:{marker}@/{postgres.database}?{sock}"
    common = ["--bands", "NDVI", "--stats", "count,mean", "--time", "2016-06", "--quiet"]
    runs = [
        ("pgpass", ["stats", store.url, f"postgresql:///?table={lulc}", "--out",
                    "postgresql:///?table=cli_out", *common], via_pgpass, 0),
        ("again", ["stats", store.url, f"postgresql:///?table={lulc}", "--out",
                   "postgresql:///?table=cli_out", *common], via_pgpass, 0),
        ("password in url", ["stats", store.url, f"{in_url}&table={lulc}", "--out",
                             f"{in_url}&table=cli_out", *common], base, 0),
        ("wrong password", ["stats", store.url, f"postgresql:///?table={lulc}", "--out",
                            str(tmp_path / "o.csv"), *common], wrong, 2),
        ("wrong password in url", ["stats", store.url, f"{bad_url}&table={lulc}", "--out",
                                   str(tmp_path / "o.csv"), *common], base, 2),
        ("wrong password out", ["stats", store.url, str(SLO / "LULC.gpkg"), "--out",
                                f"{bad_url}&table=cli_out", *common], base, 2),
        ("no table", ["stats", store.url, f"{in_url}&table=missing", "--out",
                      str(tmp_path / "o.csv"), *common], base, 2),
    ]
    texts = {}
    for name, args, run_env, code in runs:
        res = _cli(args, run_env, tmp_path)
        assert res.returncode == code, (name, res.stdout[-500:], res.stderr[-1500:])
        texts[name] = res.stdout + res.stderr
        if code:
            assert res.stderr.strip().splitlines()[-1].startswith("error: ")
            dbg = _cli(args, run_env, tmp_path, debug=True)
            assert dbg.returncode != 0 and "Traceback" in dbg.stderr
            texts[f"{name} --debug"] = dbg.stdout + dbg.stderr
    assert "password authentication failed" in texts["wrong password"]
    assert "relation \"missing\" does not exist" in texts["no table"]
    leaks = [name for name, t in texts.items() for secret in (postgres.password, marker)
             if secret in t]
    assert not leaks, leaks
    # three successful runs wrote one set of rows
    got = _table(postgres, "cli_out")
    assert len(got) == 88 * len(_dates("2016-06-01", "2016-07-01"))
    assert not got.duplicated(["fid", "band", "time"]).any()
    ref = _numpy_stats(postgres, lulc, _dates("2016-06-01", "2016-07-01"))
    merged = got.assign(time=got["time"].astype("datetime64[s]")).merge(ref, on=["fid", "time"])
    assert len(merged) == len(got)
    np.testing.assert_array_equal(merged["count_x"], merged["count_y"])
    np.testing.assert_allclose(merged["mean_x"], merged["mean_y"], rtol=1e-9)


def test_throwaway_server_stops_and_leaves_nothing(postgres: PostgresServer) -> None:
    """A second server gets its own port and directory; stopping it ends the process and
    removes the cluster, and the session's server is untouched."""
    with PostgresServer() as other:
        assert other.port != postgres.port
        folder = Path(other.socket_dir).parent
        args = _conn(other)
        with psycopg.connect(**args) as conn:
            assert conn.execute("SELECT PostGIS_Version()").fetchone() is not None
        assert repr(other).count(other.password) == 0
    assert not folder.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(**args | {"connect_timeout": 3})
    with psycopg.connect(**_conn(postgres)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_results_with_the_parcel_geometry_to_a_table(store: pz.ParcelStore,
                                                    postgres: PostgresServer, lulc: str,
                                                    pgenv: dict[str, str]) -> None:
    """``--geometry`` into a table: a PostGIS geometry column in the parcels' CRS (SRID 4326,
    as their table), a GiST index, the parcels' own geometries (read back with GeoPandas);
    a re-run replaces the rows."""
    args = ["stats", store.url, f"postgresql:///?table={lulc}", "--out",
            "postgresql:///?table=geo_out", "--bands", "NDVI", "--stats", "count,mean",
            "--time", "2016-06", "--geometry", "--quiet"]
    for _ in range(2):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.output
    got = gpd.read_postgis("SELECT * FROM geo_out", _engine(postgres), geom_col="geometry")
    dates = _dates("2016-06-01", "2016-07-01")
    assert len(got) == 88 * len(dates)
    assert not got.duplicated(["fid", "band", "time"]).any()
    assert got.crs is not None and got.crs.to_epsg() == 4326
    parcels = gpd.read_postgis(f"SELECT fid, geom FROM {lulc}", _engine(postgres),
                               geom_col="geom")
    pairs = got.merge(parcels, on="fid")
    assert len(pairs) == len(got)
    dist = shapely.hausdorff_distance(pairs["geometry"].to_numpy(), pairs["geom"].to_numpy())
    assert float(np.max(dist)) < 1e-9
    ref = _numpy_stats(postgres, lulc, dates)
    merged = pd.DataFrame(got.drop(columns="geometry")).assign(
        time=got["time"].astype("datetime64[s]")).merge(ref, on=["fid", "time"])
    np.testing.assert_array_equal(merged["count_x"], merged["count_y"])
    with psycopg.connect(**_conn(postgres)) as conn:
        idx = [d for (d,) in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'geo_out'").fetchall()]
        kind = conn.execute("SELECT GeometryType(geometry), ST_SRID(geometry) FROM geo_out "
                            "LIMIT 1").fetchone()
    assert any("USING gist (geometry)" in d for d in idx), idx
    assert kind is not None and kind[1] == 4326
    # a query is not a table to write to
    df = pd.DataFrame({"fid": [1], "band": ["NDVI"], "time": [np.datetime64("2016-06-05")],
                       "count": [3]})
    with pytest.raises(ValueError, match=r"\?table=NAME, not \?sql="):
        pz.to_postgis(df, "postgresql:///?sql=SELECT 1")


class _FailingAt:
    """A store whose ``zonal_stats`` raises at call ``n`` (a batch failing mid-stream); the
    other calls go to the real store."""

    def __init__(self, store: pz.ParcelStore, n: int) -> None:
        self._store, self._n, self.calls = store, n, 0

    @property
    def last_report(self) -> object:
        return self._store.last_report

    def zonal_stats(self, parcels: object, **kwargs: object) -> pd.DataFrame:
        self.calls += 1
        if self.calls == self._n:
            raise KeyboardInterrupt("stopped mid-stream")
        return self._store.zonal_stats(parcels, **kwargs)


def test_stream_to_a_table_in_one_transaction(store: pz.ParcelStore, postgres: PostgresServer,
                                              lulc: str, pgenv: dict[str, str],
                                              tmp_path: Path) -> None:
    """``stream_zonal_stats`` (and ``stats --batch-size``) into a PostgreSQL table: the rows
    of every batch, equal to numpy on the GeoTIFF; a re-run replaces them (no duplicates); a
    stream stopped mid-way leaves the table exactly as it was (one transaction)."""
    from parcelzarr.query import stream_zonal_stats

    parcels = gpd.read_file(SLO / "LULC.gpkg").to_crs(4326)
    parcels = gpd.GeoDataFrame({"fid": 1000 + np.arange(len(parcels))},
                               geometry=parcels.geometry.to_numpy(), crs=4326)
    path = tmp_path / "lulc.parquet"
    parcels.to_parquet(path)
    url = "postgresql:///?table=ndvi_streamed"
    query = {"bands": ["NDVI"], "stats": "count,mean", "time": "2016-01/2016-03",
             "id_column": "fid"}
    rep = stream_zonal_stats(store, path, url, batch_size=25, **query)
    assert rep.batches == -(-len(parcels) // 25) > 2
    got = _table(postgres, "ndvi_streamed")
    assert rep.rows == len(got) > 0 and not got.duplicated(["fid", "band", "time"]).any()
    want = _numpy_stats(postgres, lulc, _dates("2016-01-01", "2016-04-01"))  # March in
    got["time"] = got["time"].astype("datetime64[s]")
    merged = want.merge(got, on=["fid", "time"], suffixes=("", "_pz"))
    assert len(merged) == len(want) == len(got)
    np.testing.assert_array_equal(merged["count_pz"], merged["count"])
    np.testing.assert_allclose(merged["mean_pz"], merged["mean"], rtol=1e-9)

    before = got.sort_values(["fid", "time"]).reset_index(drop=True)
    failing = _FailingAt(store, 3)
    with pytest.raises(KeyboardInterrupt):
        stream_zonal_stats(failing, path, url, batch_size=25, **{**query, "time": "2016"})
    assert failing.calls == 3  # two batches were computed and copied, then nothing committed
    after = _table(postgres, "ndvi_streamed")
    after["time"] = after["time"].astype("datetime64[s]")
    pd.testing.assert_frame_equal(after.sort_values(["fid", "time"]).reset_index(drop=True),
                                  before)

    # the same stream again through the CLI: the same rows, replaced, not duplicated
    done = _cli(["stats", str(store.url), str(path), "--out", url, "--batch-size", "25",
                 "--bands", "NDVI", "--stats", "count,mean", "--time", "2016-01/2016-03",
                 "--id-column", "fid", "--quiet"], {**os.environ, **pgenv}, tmp_path)
    assert done.returncode == 0, done.stderr[-800:]
    again = _table(postgres, "ndvi_streamed")
    again["time"] = again["time"].astype("datetime64[s]")
    pd.testing.assert_frame_equal(again.sort_values(["fid", "time"]).reset_index(drop=True),
                                  before)
