"""The approaches, each computing count/mean/std of 4 bands for a set of parcels.

Every function takes the parcels (already loaded, in the scene CRS) and a :class:`Context`,
does all of its network I/O through the latency proxy, and returns an :class:`Outcome`: a long
statistics table (``parcel_id``, ``band``, [``time``], ``count``, ``mean``, ``std``) and the
wall time of each parcel where the approach works parcel by parcel.

Baselines are written the way a user would write them with the usual tools: the Azure SDK to
download blobs, rasterio (GDAL) to decode, ``/vsiaz/`` for windowed COG reads. GDAL is
configured through the standard ``AZURE_STORAGE_CONNECTION_STRING`` (its ``BlobEndpoint``
points at the proxy) and ``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR`` (usual COG advice);
everything else is GDAL's default (block cache, ``/vsiaz/`` chunk cache).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import pandas as pd
import rasterio
from rasterio.io import DatasetReader, MemoryFile

import parcelzarr as pz

from ._config import Approach
from ._scenario import CRS, Scenario, as_datetime64
from ._stats import STATS, masked_stats, parcel_mask, parcel_window

__all__ = ["RUNNERS", "Context", "Outcome"]

Row = dict[str, Any]


@dataclass(frozen=True)
class Context:
    """What a worker needs besides the parcels."""

    scenario: Scenario
    connection_string: str  # BlobEndpoint = the latency proxy
    threads: int


@dataclass
class Outcome:
    """Statistics and per-parcel wall times (empty for batch approaches)."""

    stats: pd.DataFrame
    latencies_s: list[float] = field(default_factory=list)


# --- shared helpers ---------------------------------------------------------------------


def _parcel_rows(
    pid: int, geom: Any, sources: Mapping[str, DatasetReader], extra: Row | None = None
) -> list[Row]:
    """Rows of one parcel: read its window from each band's dataset and reduce."""
    first = next(iter(sources.values()))
    win = parcel_window(geom.bounds, first.transform, first.width, first.height)
    inside = None if win.empty else parcel_mask(geom, first.transform, win)
    rows = []
    for band, src in sources.items():
        if inside is None:
            count, mean, std = 0, float("nan"), float("nan")
        else:
            values = src.read(1, window=win.rasterio())
            count, mean, std = masked_stats(values, inside)
        rows.append({"parcel_id": pid, "band": band, **(extra or {}),
                     "count": count, "mean": mean, "std": std})
    return rows


def _frame(rows: list[Row]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["count"] = df["count"].astype("int64")
    return df


def _items(parcels: gpd.GeoDataFrame) -> list[tuple[int, Any]]:
    return list(zip(parcels["parcel_id"].astype(int), parcels.geometry.values, strict=True))


@contextmanager
def _gdal_azure(ctx: Context) -> Iterator[None]:
    """GDAL configured for ``/vsiaz/`` through the proxy (process environment: thread-safe)."""
    saved = {k: os.environ.get(k) for k in _GDAL_ENV}
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = ctx.connection_string
    os.environ["GDAL_DISABLE_READDIR_ON_OPEN"] = "EMPTY_DIR"
    try:
        with rasterio.Env():
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_GDAL_ENV = ("AZURE_STORAGE_CONNECTION_STRING", "GDAL_DISABLE_READDIR_ON_OPEN")


def _blob_client(ctx: Context) -> Any:
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(ctx.connection_string)


def _download(client: Any, blob: str) -> bytes:
    container, name = blob.split("/", 1)
    data: bytes = client.get_blob_client(container, name).download_blob(
        max_concurrency=4).readall()
    return data


def _timed(fn: Callable[[], list[Row]], latencies: list[float]) -> list[Row]:
    t0 = time.perf_counter()
    rows = fn()
    latencies.append(time.perf_counter() - t0)
    return rows


# --- baselines --------------------------------------------------------------------------


def tile_download_per_parcel(parcels: gpd.GeoDataFrame, ctx: Context) -> Outcome:
    """Download every band's whole tile for each parcel (no cache), read its window."""
    rows: list[Row] = []
    lat: list[float] = []
    with _blob_client(ctx) as client:
        for pid, geom in _items(parcels):

            def one(pid: int = pid, geom: Any = geom) -> list[Row]:
                with ExitStack() as stack:
                    srcs = {}
                    for band, blob in ctx.scenario.blobs.items():
                        mem = stack.enter_context(MemoryFile(_download(client, blob)))
                        srcs[band] = stack.enter_context(mem.open())
                    return _parcel_rows(pid, geom, srcs)

            rows += _timed(one, lat)
    return Outcome(_frame(rows), lat)


def tile_download_cached(parcels: gpd.GeoDataFrame, ctx: Context) -> Outcome:
    """Download each band's tile once into memory (shared cache), then read windows from it.

    The first parcel pays the downloads; its latency is part of the distribution.
    """
    rows: list[Row] = []
    lat: list[float] = []
    with _blob_client(ctx) as client, ExitStack() as stack:
        cache: dict[str, DatasetReader] = {}

        def sources() -> dict[str, DatasetReader]:
            for band, blob in ctx.scenario.blobs.items():
                if band not in cache:
                    mem = stack.enter_context(MemoryFile(_download(client, blob)))
                    cache[band] = stack.enter_context(mem.open())
            return cache

        for pid, geom in _items(parcels):
            rows += _timed(lambda pid=pid, geom=geom: _parcel_rows(pid, geom, sources()), lat)
    return Outcome(_frame(rows), lat)


def _vsiaz(blob: str) -> str:
    return f"/vsiaz/{blob}"


def gdal_vsiaz(parcels: gpd.GeoDataFrame, ctx: Context) -> Outcome:
    """Open each band's COG once via ``/vsiaz/``; windowed read per parcel, sequentially."""
    rows: list[Row] = []
    lat: list[float] = []
    with _gdal_azure(ctx), ExitStack() as stack:
        srcs = {b: stack.enter_context(rasterio.open(_vsiaz(blob)))
                for b, blob in ctx.scenario.blobs.items()}
        for pid, geom in _items(parcels):
            rows += _timed(lambda pid=pid, geom=geom: _parcel_rows(pid, geom, srcs), lat)
    return Outcome(_frame(rows), lat)


class _ThreadDatasets:
    """One set of open datasets per thread (GDAL dataset handles are not thread-safe)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[DatasetReader] = []
        self._lock = threading.Lock()

    def get(self, path: str) -> DatasetReader:
        opened: dict[str, DatasetReader] = self._local.__dict__.setdefault("opened", {})
        if path not in opened:
            opened[path] = rasterio.open(path)
            with self._lock:
                self._all.append(opened[path])
        return opened[path]

    def close(self) -> None:
        for ds in self._all:
            ds.close()


def _threaded(
    parcels: gpd.GeoDataFrame, ctx: Context, work: Callable[[_ThreadDatasets, int, Any], list[Row]]
) -> Outcome:
    lat: list[float] = []
    datasets = _ThreadDatasets()

    def one(item: tuple[int, Any]) -> tuple[list[Row], float]:
        t0 = time.perf_counter()
        rows = work(datasets, *item)
        return rows, time.perf_counter() - t0

    rows: list[Row] = []
    with _gdal_azure(ctx):
        try:
            with ThreadPoolExecutor(max_workers=ctx.threads) as pool:
                for r, dt in pool.map(one, _items(parcels)):
                    rows += r
                    lat.append(dt)
        finally:
            datasets.close()
    return Outcome(_frame(rows), lat)


def gdal_vsiaz_threads(parcels: gpd.GeoDataFrame, ctx: Context) -> Outcome:
    """As :func:`gdal_vsiaz`, parcels spread over a thread pool (datasets per thread)."""

    def work(ds: _ThreadDatasets, pid: int, geom: Any) -> list[Row]:
        srcs = {b: ds.get(_vsiaz(blob)) for b, blob in ctx.scenario.blobs.items()}
        return _parcel_rows(pid, geom, srcs)

    return _threaded(parcels, ctx, work)


def gdal_vsiaz_timeseries(parcels: gpd.GeoDataFrame, ctx: Context) -> Outcome:
    """Thread pool over parcels; each parcel reads its window from all dates' COGs."""
    series = ctx.scenario.ts_blobs

    def work(ds: _ThreadDatasets, pid: int, geom: Any) -> list[Row]:
        rows: list[Row] = []
        for date in sorted(series):
            srcs = {b: ds.get(_vsiaz(blob)) for b, blob in series[date].items()}
            rows += _parcel_rows(pid, geom, srcs, {"time": pd.Timestamp(as_datetime64(date))})
        return rows

    return _threaded(parcels, ctx, work)


# --- parcelzarr -------------------------------------------------------------------------


def _open(url: str, ctx: Context) -> pz.ParcelStore:
    return pz.open_store(url, storage_options={"connection_string": ctx.connection_string})


def parcelzarr_read_loop(parcels: gpd.GeoDataFrame, ctx: Context) -> Outcome:
    """``store.read`` per parcel (all 4 bands), statistics of the returned masked pixels.

    The store's chunk cache is on: neighbouring parcels reuse chunks, as in a user's loop.
    """
    return _read_loop(parcels, ctx, cache_mb=None)


def parcelzarr_read_cold(parcels: gpd.GeoDataFrame, ctx: Context) -> Outcome:
    """``store.read`` per parcel with the chunk cache off: every read is a cold single-parcel
    read (metadata already open), the latency one parcel costs on its own."""
    return _read_loop(parcels, ctx, cache_mb=0)


def _read_loop(parcels: gpd.GeoDataFrame, ctx: Context, *, cache_mb: int | None) -> Outcome:
    rows: list[Row] = []
    lat: list[float] = []
    bands = list(ctx.scenario.bands)
    opts = {"connection_string": ctx.connection_string}
    with pz.open_store(ctx.scenario.store_url, storage_options=opts,
                       **({} if cache_mb is None else {"read_cache_mb": cache_mb})) as store:

        def one(pid: int, geom: Any) -> list[Row]:
            ds = store.read(geom, bands=bands, crs=CRS)
            inside = ds["inside"].to_numpy()
            out = []
            for band in bands:
                count, mean, std = masked_stats(ds[band].to_numpy()[0], inside)
                out.append({"parcel_id": pid, "band": band, "count": count, "mean": mean,
                            "std": std})
            return out

        for pid, geom in _items(parcels):
            rows += _timed(lambda pid=pid, geom=geom: one(pid, geom), lat)
    return Outcome(_frame(rows), lat)


def _zonal(url: str, parcels: gpd.GeoDataFrame, ctx: Context) -> pd.DataFrame:
    with _open(url, ctx) as store:
        return store.zonal_stats(parcels, bands=list(ctx.scenario.bands), stats=STATS,
                                 id_column="parcel_id")


def parcelzarr_batch(parcels: gpd.GeoDataFrame, ctx: Context) -> Outcome:
    """One ``zonal_stats`` call for all parcels."""
    df = _zonal(ctx.scenario.store_url, parcels, ctx)
    return Outcome(df.drop(columns="time"))


def parcelzarr_timeseries(parcels: gpd.GeoDataFrame, ctx: Context) -> Outcome:
    """One ``zonal_stats`` call over all dates of the time-series store."""
    df = _zonal(ctx.scenario.ts_store_url, parcels, ctx)
    df["time"] = pd.to_datetime(df["time"]).dt.normalize()
    return Outcome(df)


def parcelzarr_coverage(parcels: gpd.GeoDataFrame, ctx: Context) -> Outcome:
    """One ``zonal_stats(weights="coverage")`` call for all parcels (exactextract's rule)."""
    with _open(ctx.scenario.store_url, ctx) as store:
        df = store.zonal_stats(parcels, bands=list(ctx.scenario.bands), stats=STATS,
                               id_column="parcel_id", weights="coverage")
    return Outcome(df.drop(columns="time"))


def parcelzarr_one_date(parcels: gpd.GeoDataFrame, ctx: Context) -> Outcome:
    """One ``zonal_stats`` call for the first date of the time-series store (the time
    series' parcels): what 12 dates are measured against."""
    first = as_datetime64(min(ctx.scenario.ts_blobs))
    with _open(ctx.scenario.ts_store_url, ctx) as store:
        df = store.zonal_stats(parcels, bands=list(ctx.scenario.bands), stats=STATS,
                               id_column="parcel_id", time=str(first))
    df["time"] = pd.to_datetime(df["time"]).dt.normalize()
    return Outcome(df)


# --- exactextract -----------------------------------------------------------------------


def _exact_extract(paths: Mapping[str, str], parcels: gpd.GeoDataFrame) -> pd.DataFrame:
    """exactextract, raster-sequential, coverage-weighted count/mean/stdev of every band."""
    from exactextract import exact_extract

    wide = exact_extract(list(paths.values()), parcels, ["count", "mean", "stdev"],
                         strategy="raster-sequential", include_cols=["parcel_id"],
                         output="pandas")
    frames = []
    for band in paths:  # columns are <raster name>_<op>; the band is in the file name
        cols = {op: next(c for c in wide.columns if f"_{band}_" in c and c.endswith(f"_{op}"))
                for op in ("count", "mean", "stdev")}
        frames.append(pd.DataFrame({
            "parcel_id": wide["parcel_id"].to_numpy(), "band": band,
            "count": wide[cols["count"]].to_numpy(float),
            "mean": wide[cols["mean"]].to_numpy(float),
            "std": wide[cols["stdev"]].to_numpy(float)}))
    return pd.concat(frames, ignore_index=True)


def exactextract_local(parcels: gpd.GeoDataFrame, ctx: Context) -> Outcome:
    """exactextract over the same COGs on local disk (no network: the tile already
    downloaded), raster-sequential."""
    return Outcome(_exact_extract(ctx.scenario.cog_files, parcels))


def exactextract_vsiaz(parcels: gpd.GeoDataFrame, ctx: Context) -> Outcome:
    """exactextract over the COGs read through ``/vsiaz/`` (GDAL via rasterio), through the
    latency proxy, raster-sequential."""
    with _gdal_azure(ctx):
        return Outcome(_exact_extract(
            {b: _vsiaz(blob) for b, blob in ctx.scenario.blobs.items()}, parcels))


# --- the floor --------------------------------------------------------------------------


def _floor(url: str, parcels: gpd.GeoDataFrame, ctx: Context, *, coverage: bool,
           all_dates: bool) -> Outcome:
    from ._floor import floor_stats

    with _open(url, ctx) as store:
        return Outcome(floor_stats(store, parcels, bands=list(ctx.scenario.bands),
                                   coverage=coverage, all_dates=all_dates))


def floor(parcels: gpd.GeoDataFrame, ctx: Context) -> Outcome:
    """The floor of ``parcelzarr-batch`` (see :mod:`bench._floor`)."""
    return _floor(ctx.scenario.store_url, parcels, ctx, coverage=False, all_dates=False)


def floor_coverage(parcels: gpd.GeoDataFrame, ctx: Context) -> Outcome:
    """The floor of ``parcelzarr-coverage``."""
    return _floor(ctx.scenario.store_url, parcels, ctx, coverage=True, all_dates=False)


def floor_timeseries(parcels: gpd.GeoDataFrame, ctx: Context) -> Outcome:
    """The floor of ``parcelzarr-timeseries`` (all 12 dates)."""
    return _floor(ctx.scenario.ts_store_url, parcels, ctx, coverage=False, all_dates=True)


RUNNERS: dict[Approach, Callable[[gpd.GeoDataFrame, Context], Outcome]] = {
    Approach.TILE_PER_PARCEL: tile_download_per_parcel,
    Approach.TILE_CACHED: tile_download_cached,
    Approach.GDAL: gdal_vsiaz,
    Approach.GDAL_THREADS: gdal_vsiaz_threads,
    Approach.PZ_READ_LOOP: parcelzarr_read_loop,
    Approach.PZ_READ_COLD: parcelzarr_read_cold,
    Approach.PZ_BATCH: parcelzarr_batch,
    Approach.GDAL_TIMESERIES: gdal_vsiaz_timeseries,
    Approach.PZ_TIMESERIES: parcelzarr_timeseries,
    Approach.PZ_COVERAGE: parcelzarr_coverage,
    Approach.PZ_ONE_DATE: parcelzarr_one_date,
    Approach.EE_LOCAL: exactextract_local,
    Approach.EE_VSIAZ: exactextract_vsiaz,
    Approach.FLOOR: floor,
    Approach.FLOOR_COVERAGE: floor_coverage,
    Approach.FLOOR_TIMESERIES: floor_timeseries,
}

