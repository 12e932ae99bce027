"""``open_store`` and :class:`ParcelStore`: the query API over a parcelzarr store.

The façade only opens the store and hands each call to the module that does it: the catalogue
(:mod:`parcelzarr._catalogue`), the request (:mod:`._request`), zonal execution
(:mod:`._zonal`, :mod:`._distributed`), :mod:`._read` and :mod:`._info`.
"""

from __future__ import annotations

import time as _time
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Literal, overload

import pandas as pd
import xarray as xr
import zarr
from parcelzarr.stores import StoreHandle, open_store_handle

from parcelzarr import _config
from parcelzarr._catalogue import GridInfo, band_array, open_catalogue

from ._chunk_cache import ChunkCache
from ._cost import QueryPlan
from ._cube import Output, check_output, shape_output
from ._distributed import distributed_zonal_stats
from ._dryrun import plan_query
from ._info import grid_dataset, store_info
from ._ops import asks_frac
from ._parcels import load_parcels
from ._read import read_parcel
from ._report import QueryReport
from ._request import DEFAULT_MASK_CLASSES, zonal_request
from ._select import TimeSelection
from ._snapshot import Pin, open_pinned, pinned
from ._stats import DEFAULT_STATS
from ._zonal import run_zonal

__all__ = ["DEFAULT_MASK_CLASSES", "GridInfo", "ParcelStore", "QueryReport", "open_store"]


def open_store(
    url: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    read_cache_mb: float | None = None,
) -> ParcelStore:
    """Open a parcelzarr store for queries.

    Parameters
    ----------
    url:
        Local directory, ``az://container/path`` or ``memory://name``.
    storage_options:
        Passed to adlfs for ``az://`` (credentials; see :mod:`parcelzarr.stores`).
    read_cache_mb:
        Decoded chunks :meth:`ParcelStore.read` keeps for later calls, in MB (default
        ``PARCELZARR_READ_CACHE_MB``, 64; 0 turns the cache off). ``zonal_stats`` does not
        use it: it reads each chunk once anyway.

    Raises
    ------
    StoreNotFoundError
        No parcelzarr store at ``url``.
    StoreUnreachableError, CredentialsError
        The service cannot be reached, or no credentials are configured.

    Examples
    --------
    >>> import parcelzarr as pz
    >>> store = pz.open_store("stores/demo.zarr")  # doctest: +SKIP
    >>> store.zonal_stats("parcels.parquet", bands=["B04", "B08"])  # doctest: +SKIP
    """
    handle = open_store_handle(url, storage_options, read_only=True)
    handle.check_reachable()
    store = ParcelStore(handle, read_cache_mb=read_cache_mb)
    store.storage_options = dict(storage_options) if storage_options else None
    return store


class ParcelStore:
    """A parcelzarr store opened for reading (see :func:`open_store`).

    Attributes
    ----------
    grids:
        The store's grids by name (:class:`GridInfo`: geometry, bands, dates).
    read_cache:
        The decoded chunks kept by :meth:`read` (bounded by bytes; ``hits``, ``misses``,
        ``nbytes``, ``clear()``).
    last_report:
        What the last :meth:`zonal_stats` cost.
    """

    def __init__(self, handle: StoreHandle, *, read_cache_mb: float | None = None) -> None:
        self._handle = handle
        mb = _config.read_cache_mb() if read_cache_mb is None else read_cache_mb
        if not mb >= 0:
            raise ValueError(f"read_cache_mb must be at least 0, got {mb!r}")
        self.read_cache = ChunkCache(max_bytes=int(mb * 1e6))
        raw, snap, root = open_pinned(handle)
        self._root, self.catalogue = open_catalogue(handle.store, handle.url, root=root)
        self.grids: Mapping[str, GridInfo] = self.catalogue.grids
        # Each call reads one committed version, re-loading the catalogue when it changed.
        self._pin = Pin(handle, raw, snap, self._load)
        self.last_report: QueryReport | None = None
        #: Options the store was opened with (handed to Dask workers; never printed).
        self.storage_options: dict[str, Any] | None = None

    def _load(self, root: zarr.Group) -> None:
        """Switch to the committed version ``root`` (see :mod:`._snapshot`)."""
        self._root, self.catalogue = open_catalogue(self._handle.store, self._handle.url,
                                                    root=root)
        self.grids = self.catalogue.grids
        self.read_cache.clear()

    @property
    def url(self) -> str:
        """The store URL (credential-free)."""
        return self._handle.url

    @property
    def bands(self) -> list[str]:
        """All band names in the store."""
        return self.catalogue.bands

    def __repr__(self) -> str:
        return f"ParcelStore({self.url!r}, grids={list(self.grids)}, bands={self.bands})"

    def close(self) -> None:
        """Release network clients. Also done at interpreter exit."""
        self._handle.close()

    def __enter__(self) -> ParcelStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _array(self, grid: str, band: str) -> zarr.Array:
        return band_array(self._root, grid, band)

    @pinned
    def to_xarray(self, grid: str | None = None) -> xr.Dataset:
        """One grid as a lazy (dask), georeferenced :class:`xarray.Dataset`.

        ``grid`` may be omitted when the store has only one. CRS and transform are readable
        through rioxarray (``ds.B04.rio.crs``). Values are stored DNs with ``_FillValue``,
        ``scale_factor`` and ``add_offset`` decoded by xarray (reflectance, NaN for nodata);
        pass through ``xr.open_zarr(..., mask_and_scale=False)`` for raw DNs. Dates are in
        time order (the store keeps them in the order they were ingested). Bands without a
        declared nodata are NaN (float) where no ingested source covers the pixel.
        """
        return grid_dataset(self._handle, self.catalogue, grid)

    @overload
    def zonal_stats(
        self,
        /,
        parcels: Any,
        *,
        bands: str | Iterable[str] | None = None,
        indices: Iterable[str] | None = None,
        stats: str | Iterable[str] = DEFAULT_STATS,
        time: TimeSelection = None,
        all_touched: bool = False,
        weights: Literal["coverage"] | None = None,
        categorical: bool = False,
        mask: bool | str | None = None,
        mask_classes: Iterable[int] | None = None,
        id_column: str | None = None,
        crs: Any = None,
        layer: str | None = None,
        interval: str | None = None,
        composite: str | None = None,
        concurrency: int | None = None,
        scheduler: Any = None,
        quiet: bool = True,
        deadline: float | None = None,
        output: Literal["pandas", "wide"] = "pandas",
        min_coverage_frac: float | None = None,
        weights_band: str | None = None,
        default_weight: float | None = None,
    ) -> pd.DataFrame: ...

    @overload
    def zonal_stats(
        self,
        /,
        parcels: Any,
        *,
        bands: str | Iterable[str] | None = None,
        indices: Iterable[str] | None = None,
        stats: str | Iterable[str] = DEFAULT_STATS,
        time: TimeSelection = None,
        all_touched: bool = False,
        weights: Literal["coverage"] | None = None,
        categorical: bool = False,
        mask: bool | str | None = None,
        mask_classes: Iterable[int] | None = None,
        id_column: str | None = None,
        crs: Any = None,
        layer: str | None = None,
        interval: str | None = None,
        composite: str | None = None,
        concurrency: int | None = None,
        scheduler: Any = None,
        quiet: bool = True,
        deadline: float | None = None,
        output: Literal["xarray"],
        min_coverage_frac: float | None = None,
        weights_band: str | None = None,
        default_weight: float | None = None,
    ) -> xr.Dataset: ...

    @overload
    def zonal_stats(
        self,
        /,
        parcels: Any,
        *,
        bands: str | Iterable[str] | None = None,
        indices: Iterable[str] | None = None,
        stats: str | Iterable[str] = DEFAULT_STATS,
        time: TimeSelection = None,
        all_touched: bool = False,
        weights: Literal["coverage"] | None = None,
        categorical: bool = False,
        mask: bool | str | None = None,
        mask_classes: Iterable[int] | None = None,
        id_column: str | None = None,
        crs: Any = None,
        layer: str | None = None,
        interval: str | None = None,
        composite: str | None = None,
        concurrency: int | None = None,
        scheduler: Any = None,
        quiet: bool = True,
        deadline: float | None = None,
        output: Output = "pandas",
        min_coverage_frac: float | None = None,
        weights_band: str | None = None,
        default_weight: float | None = None,
    ) -> pd.DataFrame | xr.Dataset: ...

    @pinned
    def zonal_stats(
        self,
        parcels: Any,
        *,
        bands: str | Iterable[str] | None = None,
        indices: Iterable[str] | None = None,
        stats: str | Iterable[str] = DEFAULT_STATS,
        time: TimeSelection = None,
        all_touched: bool = False,
        weights: Literal["coverage"] | None = None,
        categorical: bool = False,
        mask: bool | str | None = None,
        mask_classes: Iterable[int] | None = None,
        id_column: str | None = None,
        crs: Any = None,
        layer: str | None = None,
        interval: str | None = None,
        composite: str | None = None,
        concurrency: int | None = None,
        scheduler: Any = None,
        quiet: bool = True,
        deadline: float | None = None,
        output: Output = "pandas",
        min_coverage_frac: float | None = None,
        weights_band: str | None = None,
        default_weight: float | None = None,
    ) -> pd.DataFrame | xr.Dataset:
        """Per-parcel statistics of bands (and indices) for every selected date.

        Parameters
        ----------
        parcels:
            GeoDataFrame, GeoSeries, shapely geometry (with ``crs``), a file path or a
            PostGIS URL (``postgresql://...?table=NAME`` or ``?sql=SELECT...``); any CRS.
        bands:
            Bands to summarise (default: all but the mask band; none when only ``indices``
            are given).
        indices:
            Spectral indices computed per pixel in reflectance: ``ndvi``, ``evi``, ``savi``,
            ``ndwi``, or expressions over band names such as ``"(B08 - B04) / (B08 + B04)"``
            (the expression text becomes the ``band`` value).
        stats:
            Statistic names (rasterstats'): count, sum, mean, min, max, std (population),
            median, range, nodata, percentile_N; and exactextract's, with its semantics:
            stdev, variance, coefficient_of_variation, quantile_Q (``quantile_0.9``),
            majority, minority, variety, and the ``weighted_*`` statistics of a weighting
            raster (``weights_band``); ``"frac"`` and ``"weighted_frac"`` alone give class
            shares (one row per class, as ``categorical=True``; see
            :mod:`parcelzarr.query._ops`).
        time:
            None (all dates), a year ``"2024"``, a month ``"2024-05"``, a day, ``"START/END"``
            of these (inclusive: ``"2024-05/2024-07"`` is May 1 to July 31), a ``slice`` or a
            list. A selection matching no date stored for the bands asked for raises
            :class:`~parcelzarr.errors.DateNotFoundError` naming the stored dates.
        all_touched:
            Include every pixel the parcel touches, not only those whose centre is inside.
        weights:
            ``"coverage"``: weight each touched pixel by the exact fraction of it inside the
            parcel (as exactextract); count, sum, mean, std and nodata are then weighted
            (count is a float), min and max are over pixels with a positive fraction, median
            and percentiles are exactextract's coverage-weighted quantiles.
        categorical:
            One row per (parcel, band, time, class) with ``class``, ``count``, ``fraction``
            (of the parcel's valid pixels) and ``area_m2`` instead of ``stats``. ``area_m2`` is
            in square metres on any CRS: the sum of each pixel's ellipsoidal area on
            geographic grids, ``res_x * res_y`` in metres on projected ones. With
            ``weights_band``, also ``weighted_frac`` (the class's share of the weights).
        mask:
            ``True`` or ``"scl"``: exclude pixels whose Sentinel-2 scene classification (the
            ``SCL`` band, any resolution of the same CRS) is in ``mask_classes``; they count
            as ``nodata``. Requires an ``SCL`` band in the store. Any other layer name masks
            with that layer (a cloud mask such as ``"CLM"``, a QA band), on the same dates;
            ``mask_classes`` then names its values to exclude.
        mask_classes:
            Values of the mask layer to exclude; for SCL by default 0 no data, 1 saturated,
            3 cloud shadow, 8/9 cloud medium/high probability, 10 thin cirrus; required for
            other layers (e.g. ``mask="CLM", mask_classes=[1]``).
        id_column:
            Column of ``parcels`` holding the parcel id (default: ``id`` for parcels that
            follow the fiboa schema, else the index, as ``parcel_id``).
        crs:
            CRS of ``parcels`` when they carry none (shapely geometries).
        layer:
            Layer of a multi-layer parcels file (GeoPackage, ...); default: its first layer,
            which must not be empty.
        interval, composite:
            Per-interval composites: ``interval`` is a pandas offset alias (``"1MS"`` month
            starts, ``"W-MON"``, ``"QS"``, ``"10D"``), ``composite`` one of ``"median"``
            (default), ``"mean"``, ``"max"``, ``"min"``. Each output's dates are grouped by
            interval; per pixel, the valid observations of the interval (not nodata, not
            masked) are merged, then the parcel statistics are taken of that composite; ``time``
            is the interval's start. Indices are composited after being computed per date.
        concurrency:
            Chunk requests in flight (default ``PARCELZARR_CONCURRENCY``, 64).
        scheduler:
            A ``distributed.Client`` or scheduler address: partition the query by spatial
            blocks of chunks over the Dask cluster; results are identical.
        quiet:
            Hide the progress bar.
        deadline:
            Seconds the whole call may take (default ``PARCELZARR_DEADLINE``, none): past it,
            requests in flight are cancelled and :class:`~parcelzarr.errors.QueryDeadlineError`
            (a ``TimeoutError``) is raised; never a partial result. With ``scheduler`` each
            partition gets this deadline.
        output:
            ``"pandas"`` (default): the long frame below. ``"wide"``: one row per (parcel,
            time) with ``{band}_{stat}`` columns (exactextract's names). ``"xarray"``: an
            xvec vector cube, dimensions ``geometry`` (a ``GeometryIndex`` with the parcels'
            CRS), ``time``, ``band``, one variable per statistic, the id column a
            coordinate (see :mod:`parcelzarr.query._cube`).
        min_coverage_frac:
            With ``weights="coverage"``: leave out pixels the parcel covers less than this
            fraction of (``0 < f <= 1``), as exactextract's ``min_coverage_frac``; the others
            keep their fraction as weight.
        weights_band:
            exactextract's weighting raster, for the statistics ``weighted_sum``,
            ``weighted_mean``, ``weighted_stdev``, ``weighted_variance`` and
            ``weighted_frac`` (alone, or with ``frac``: one row per class): a band of the store
            (as stored), an index or an expression over bands (in reflectance), on the
            values' grid or a coarser aligned one of the same CRS. Each pixel weighs
            ``c_i * w_i``: its coverage fraction with ``weights="coverage"`` (else 1) times
            the weight. A weights layer of one date weighs every date; otherwise each date
            takes the weights of the same date (see :mod:`parcelzarr.query._weights`).
        default_weight:
            The weight of pixels whose weight is nodata, NaN or missing (exactextract's
            ``default_weight``). Default: none, and such a pixel makes the parcel's weighted
            statistics NaN, as in exactextract.

        Returns
        -------
        pandas.DataFrame or xarray.Dataset
            One row per (parcel, band, time): the id column, ``band``, ``time``, then one column
            per statistic, then ``status``: "ok", or why the parcel could not be used
            ("empty", "outside", "invalid geometry", "too large"; docs/query.md). Parcels
            with no valid pixels get ``count`` 0 and NaN statistics; no parcel fails the batch.
            The query's cost is in ``df.attrs["parcelzarr"]`` and :attr:`last_report`.
        """
        shares_asked = () if categorical else asks_frac(stats)
        if shares_asked:  # exactextract's frac, weighted_frac: class shares
            check_output(output, categorical=True)  # class rows: the long frame only
            if "weighted_frac" in shares_asked and weights_band is None:
                raise ValueError("weighted_frac weighs pixels by a weighting raster: name it "
                                 "with weights_band= (CLI --weights-band)")
            args = {k: v for k, v in locals().items() if k not in ("self", "shares_asked")}
            shares = self.zonal_stats(**(args | {"categorical": True, "stats": DEFAULT_STATS}))
            assert isinstance(shares, pd.DataFrame)
            shares = shares.rename(columns={"fraction": "frac"})
            return shares if "frac" in shares_asked else shares.drop(columns="frac")
        output = check_output(output, categorical=categorical)
        if output != "pandas":  # the long frame, then reshaped
            args = {k: v for k, v in locals().items()
                    if k not in ("self", "output", "shares_asked")}
            long = self.zonal_stats(**args)
            assert isinstance(long, pd.DataFrame)
            with warnings.catch_warnings():  # repairs were reported by the query
                warnings.simplefilter("ignore")
                pset = (load_parcels(parcels, crs=crs, id_column=id_column, layer=layer)
                        if output == "xarray" else None)
            return shape_output(long, output, pset)
        request = zonal_request(
            self.catalogue, bands=bands, indices=indices, stats=stats, time=time,
            all_touched=all_touched, weights=weights, categorical=categorical, mask=mask,
            mask_classes=mask_classes, concurrency=concurrency, deadline=deadline,
            min_coverage_frac=min_coverage_frac, interval=interval, composite=composite,
            weights_band=weights_band, default_weight=default_weight)
        deadline_at = None if request.deadline is None else _time.monotonic() + request.deadline
        t0 = _time.perf_counter()
        pset = load_parcels(parcels, crs=crs, id_column=id_column, layer=layer)
        if scheduler is not None:
            df, report = distributed_zonal_stats(self.url, self.storage_options, self.catalogue,
                                                 request, pset, scheduler=scheduler,
                                                 handle=self._handle, root=self._root,
                                                 started=t0, version=self._pin.snapshot.version)
        else:
            df, report = run_zonal(self._handle, self._root, self.catalogue, request, pset,
                                   quiet=quiet, started=t0, deadline_at=deadline_at)
        self.last_report = report
        return df

    def plan(
        self,
        parcels: Any,
        *,
        bands: str | Iterable[str] | None = None,
        indices: str | Iterable[str] | None = None,
        stats: str | Iterable[str] = DEFAULT_STATS,
        time: TimeSelection = None,
        all_touched: bool = False,
        weights: Literal["coverage"] | None = None,
        categorical: bool = False,
        mask: bool | str | None = None,
        mask_classes: Iterable[int] | None = None,
        id_column: str | None = None,
        crs: Any = None,
        layer: str | None = None,
        concurrency: int | None = None,
        weights_band: str | None = None,
        default_weight: float | None = None,
    ) -> QueryPlan:
        """Dry run of :meth:`zonal_stats` with the same arguments: the chunks, GET requests,
        bytes, seconds and dollars it will cost, reading no pixel (:class:`QueryPlan`;
        docs/query.md, docs/scale.md)."""
        request = zonal_request(
            self.catalogue, bands=bands, indices=indices, stats=stats, time=time,
            all_touched=all_touched, weights=weights, categorical=categorical, mask=mask,
            mask_classes=mask_classes, concurrency=concurrency, weights_band=weights_band,
            default_weight=default_weight)
        t0 = _time.perf_counter()
        pset = load_parcels(parcels, crs=crs, id_column=id_column, layer=layer)
        return plan_query(self._handle.store, self._root, self.catalogue, request, pset,
                          started=t0)

    @pinned
    def read(
        self,
        geometry: Any,
        *,
        bands: str | Iterable[str] | None = None,
        time: TimeSelection = None,
        crs: Any = None,
        all_touched: bool = False,
    ) -> xr.Dataset:
        """The pixels of one parcel as an :class:`xarray.Dataset`.

        The Dataset covers the parcel's bounding window on the grid that covers it: one
        ``(time, y, x)`` variable per band in the stored dtype, pixels outside the parcel set
        to the band's nodata, a boolean ``inside`` coordinate marking the parcel's pixels
        (pixel-centre rule, or ``all_touched``), and the grid's CRS and transform
        (``ds.rio.crs``).

        Chunks come through :attr:`read_cache`: those it lacks are fetched whole, all at
        once (one round trip), and kept, so a loop over neighbouring parcels reads each
        chunk about once.
        """
        pset = load_parcels(geometry, crs=crs)
        return read_parcel(self._root, self.catalogue, pset, bands=bands, time=time,
                           all_touched=all_touched, cache=self.read_cache)

    @pinned
    def info(self, *, sizes: bool = True) -> dict[str, Any]:
        """Grids, bands, dates, tiles, chunking and sizes, as a JSON-friendly dict.

        Tiles (or file names of named layers) come from the ingest manifest. With ``sizes``
        every band's stored objects are listed and measured (one listing, plus one size
        request per object on blob storage).
        """
        return store_info(self._handle, self._root, self.catalogue, sizes=sizes)
