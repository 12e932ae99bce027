"""``open_store`` and :class:`ParcelStore`: the query API over a parcelzarr store."""

from __future__ import annotations

import logging
import time as _time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import shapely
import xarray as xr
import zarr
from parcelzarr.stores import StoreHandle, open_store_handle
from rasterio.features import geometry_mask
from zarr.core.sync import sync

from parcelzarr import _config
from parcelzarr._footprint import (
    FOOTPRINT_ATTR,
    Footprint,
    covered_mask,
    footprints_of,
    time_key,
    windows_of,
)
from parcelzarr._grid import GridSpec
from parcelzarr._layout import GRID_ATTR, ROOT_ATTR, band_info, grid_spec, open_root
from parcelzarr._progress import progress
from parcelzarr.errors import (
    BandNotFoundError,
    DateNotFoundError,
    GeometryError,
    ReflectanceWarning,
    StoreNotFoundError,
    plain,
)

from ._area import areal_scale, row_areas
from ._chunk_cache import ChunkCache, read_window
from ._cost import QueryPlan
from ._engine import GridJob, Layer, MaskSource, run_grid
from ._expr import Expression, parse_expression
from ._indices import INDICES
from ._parcels import ParcelSet, load_parcels
from ._plan import plan_chunks
from ._rasterize import outside_pixels, too_large
from ._select import TimeSelection, describe_times, normalise_bands, select_times
from ._stats import DEFAULT_STATS, parse_stats

__all__ = ["DEFAULT_MASK_CLASSES", "GridInfo", "ParcelStore", "QueryReport", "open_store"]

#: SCL classes masked by ``mask="scl"``: no data, saturated/defective, cloud shadow, cloud
#: medium and high probability, thin cirrus.
DEFAULT_MASK_CLASSES = (0, 1, 3, 8, 9, 10)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridInfo:
    """One grid of a store: its geometry, bands (with nodata, scale, offset) and dates."""

    name: str
    spec: GridSpec
    bands: Mapping[str, Mapping[str, Any]]
    times: np.ndarray
    #: band -> time key -> committed source footprints (None: written before they were
    #: recorded, every pixel of the grid counts as covered).
    footprints: Mapping[str, Mapping[str, tuple[Footprint, ...]]] | None = None

    def source_windows(self, band: str, t_index: int) -> np.ndarray:
        """Pixel windows ``(n, 4)`` of the sources of ``band`` at time index ``t_index`` (the
        whole grid for a store written before footprints were recorded)."""
        if self.footprints is None:
            return np.array([[0, self.spec.height, 0, self.spec.width]], dtype=np.int64)
        fps = self.footprints.get(band, {}).get(time_key(self.times[t_index]), ())
        return windows_of(self.spec, fps)

    def holds(self, band: str, t_index: int) -> bool:
        """Whether a source of ``band`` was committed at time index ``t_index`` (every band
        shares the grid's time axis; a band not ingested on a date holds nothing there).
        Stores written before footprints were recorded: always True."""
        if self.footprints is None:
            return True
        return bool(self.footprints.get(band, {}).get(time_key(self.times[t_index])))

    def footprint_windows(self, band: str, t_index: int) -> np.ndarray | None:
        """:meth:`source_windows` for a band without declared nodata, whose fill value is a
        valid code; None where nodata already marks uncovered pixels (or for a legacy
        store)."""
        if self.footprints is None or self.bands[band]["nodata"] is not None:
            return None
        return self.source_windows(band, t_index)


@dataclass
class QueryReport:
    """What a query cost.

    Attributes
    ----------
    parcels, rows:
        Parcels asked for and rows returned.
    chunks:
        Band chunks the plan reads (each once): spatial chunks x bands x time blocks.
    requests, bytes_read:
        GET requests that succeeded and their bytes, counted at the store (all of them: band
        chunks, SCL mask chunks); failed attempts are in ``retries``.
    seconds:
        Wall time of the whole call (loading parcels, planning, fetching, reducing).
    grids:
        Grids read.
    retries:
        Transient errors retried.
    """

    parcels: int
    rows: int
    chunks: int
    requests: int
    bytes_read: int
    seconds: float
    grids: list[str] = field(default_factory=list)
    retries: int = 0

    @property
    def parcels_per_s(self) -> float:
        return self.parcels / self.seconds if self.seconds > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"parcels_per_s": self.parcels_per_s}

    def __str__(self) -> str:
        return (
            f"{self.parcels} parcels in {self.seconds:.2f} s "
            f"({self.parcels_per_s:,.0f} parcels/s); "
            f"{self.chunks} chunks, {self.requests} requests, {self.bytes_read / 1e6:.1f} MB read"
            + (f", {self.retries} retries" if self.retries else "")
        )


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
    read_cache:
        The decoded chunks kept by :meth:`read` (bounded by bytes; ``hits``, ``misses``,
        ``nbytes``, ``clear()``).
    """

    def __init__(self, handle: StoreHandle, *, read_cache_mb: float | None = None) -> None:
        self._handle = handle
        mb = _config.read_cache_mb() if read_cache_mb is None else read_cache_mb
        if not mb >= 0:
            raise ValueError(f"read_cache_mb must be at least 0, got {mb!r}")
        self.read_cache = ChunkCache(max_bytes=int(mb * 1e6))
        try:
            root = open_root(handle.store)
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise StoreNotFoundError(
                f"no parcelzarr store at {handle.url}: create one with `parcelzarr ingest SOURCE "
                f"--store {handle.url}`"
            ) from exc
        meta = root.attrs.get(ROOT_ATTR)
        if not isinstance(meta, Mapping) or not meta:
            raise StoreNotFoundError(f"{handle.url} is a Zarr group but not a parcelzarr store")
        self._root = root
        self.grids: dict[str, GridInfo] = {}
        names = meta.get("grids", [])
        for name in names if isinstance(names, list) else []:
            name = str(name)
            group = root[name]
            assert isinstance(group, zarr.Group)
            if GRID_ATTR not in group.attrs:
                continue
            bands = {k: band_info(a) for k, a in group.arrays() if a.ndim == 3}
            time_arr = group["time"]
            assert isinstance(time_arr, zarr.Array)
            t = np.asarray(time_arr[:]).astype("datetime64[s]") if bands else np.array(
                [], dtype="datetime64[s]")
            fps = {b: footprints_of(group.attrs, b) for b in bands}
            known = {b: v for b, v in fps.items() if v is not None}
            self.grids[name] = GridInfo(name, grid_spec(group), bands, t,
                                        known if len(known) == len(fps) else None)
        self.last_report: QueryReport | None = None
        #: Options the store was opened with (handed to Dask workers; never printed).
        self.storage_options: dict[str, Any] | None = None
        self._expressions: dict[str, Expression] = {}

    # -- catalogue -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The store URL (credential-free)."""
        return self._handle.url

    @property
    def bands(self) -> list[str]:
        """All band names in the store."""
        return sorted({b for g in self.grids.values() for b in g.bands})

    def __repr__(self) -> str:
        return f"ParcelStore({self.url!r}, grids={list(self.grids)}, bands={self.bands})"

    def close(self) -> None:
        """Release network clients. Also done at interpreter exit."""
        self._handle.close()

    def __enter__(self) -> ParcelStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _grids_with(self, band: str) -> list[GridInfo]:
        found = [g for g in self.grids.values() if band in g.bands]
        if not found:
            raise BandNotFoundError(f"band {band!r} not in the store; it holds {self.bands}")
        return found

    def _array(self, grid: str, band: str) -> zarr.Array:
        arr = self._root[f"{grid}/{band}"]
        assert isinstance(arr, zarr.Array)
        return arr

    # -- xarray --------------------------------------------------------------------------
    def to_xarray(self, grid: str | None = None) -> xr.Dataset:
        """One grid as a lazy (dask), georeferenced :class:`xarray.Dataset`.

        ``grid`` may be omitted when the store has only one. CRS and transform are readable
        through rioxarray (``ds.B04.rio.crs``). Values are stored DNs with ``_FillValue``,
        ``scale_factor`` and ``add_offset`` decoded by xarray (reflectance, NaN for nodata);
        pass through ``xr.open_zarr(..., mask_and_scale=False)`` for raw DNs. Dates are in
        time order (the store keeps them in the order they were ingested). Bands without a
        declared nodata are NaN (float) where no ingested source covers the pixel.
        """
        import rioxarray  # noqa: F401  (registers the .rio accessor)

        if grid is None:
            if len(self.grids) != 1:
                raise ValueError(f"the store has grids {list(self.grids)}: name one (grid=...)")
            grid = next(iter(self.grids))
        if grid not in self.grids:
            raise KeyError(f"no grid {grid!r}; the store has {list(self.grids)}")
        ds = xr.open_zarr(self._handle.store, group=grid, consolidated=True)
        ds.attrs.pop(FOOTPRINT_ATTR, None)
        info = self.grids[grid]
        for band in info.bands:
            if info.footprints is None or info.bands[band]["nodata"] is not None:
                continue  # nodata marks uncovered pixels already
            ds[band] = ds[band].where(
                xr.DataArray(_covered_lazy(info, band, ds[band].data.chunks),
                             dims=ds[band].dims))
        order = np.argsort(ds["time"].values, kind="stable")
        if (order != np.arange(order.size)).any():  # dates are stored in ingest order
            ds = ds.isel(time=order)
        return ds

    # -- queries -------------------------------------------------------------------------
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
        concurrency: int | None = None,
        scheduler: Any = None,
        quiet: bool = True,
        deadline: float | None = None,
    ) -> pd.DataFrame:
        """Per-parcel statistics of bands (and indices) for every selected date.

        Parameters
        ----------
        parcels:
            GeoDataFrame, GeoSeries, shapely geometry (with ``crs``) or a file path; any CRS.
        bands:
            Bands to summarise (default: all but the mask band; none when only ``indices``
            are given).
        indices:
            Spectral indices computed per pixel in reflectance: ``ndvi``, ``evi``, ``savi``,
            ``ndwi``, or expressions over band names such as ``"(B08 - B04) / (B08 + B04)"``
            (the expression text becomes the ``band`` value).
        stats:
            Statistic names (rasterstats'): count, sum, mean, min, max, std (population),
            median, range, nodata, percentile_N.
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
            geographic grids, ``res_x * res_y`` in metres on projected ones.
        mask:
            ``True`` or ``"scl"``: exclude pixels whose Sentinel-2 scene classification (the
            ``SCL`` band, any resolution of the same CRS) is in ``mask_classes``; they count
            as ``nodata``. Requires an ``SCL`` band in the store.
        mask_classes:
            SCL classes to exclude (default 0 no data, 1 saturated, 3 cloud shadow, 8/9
            cloud medium/high probability, 10 thin cirrus).
        id_column:
            Column of ``parcels`` holding the parcel id (default: the index, as ``parcel_id``).
        crs:
            CRS of ``parcels`` when they carry none (shapely geometries).
        layer:
            Layer of a multi-layer parcels file (GeoPackage, ...); default: its first layer,
            which must not be empty.
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

        Returns
        -------
        pandas.DataFrame
            One row per (parcel, band, time): the id column, ``band``, ``time``, then one column
            per statistic, then ``status``: "ok", or why the parcel could not be used
            ("empty", "outside", "invalid geometry", "too large"; docs/query.md). Parcels
            with no valid pixels get ``count`` 0 and NaN statistics; no parcel fails the batch.
            The query's cost is in ``df.attrs["parcelzarr"]`` and :attr:`last_report`.
        """
        mask_band = self._mask_band(mask)
        outputs = self._outputs(bands, indices, exclude=mask_band)
        dates = self._dates(outputs, time, explicit=bands is not None or bool(indices))
        outputs = [o for o in outputs if any(k[1] == o[0] and v.size for k, v in dates.items())]
        self._warn_unscaled(outputs)
        limit = _config.deadline() if deadline is None else deadline
        if limit is not None and not limit > 0:
            raise ValueError(f"deadline={deadline!r}: give a number of seconds above 0")
        deadline_at = None if limit is None else _time.monotonic() + limit
        if scheduler is not None:
            from ._distributed import distributed_zonal_stats

            return distributed_zonal_stats(
                self, parcels, scheduler=scheduler, bands=bands, indices=indices, stats=stats,
                time=time, all_touched=all_touched, weights=weights, categorical=categorical,
                mask=mask, mask_classes=mask_classes, id_column=id_column, crs=crs,
                layer=layer, concurrency=concurrency,
                **({} if limit is None else {"deadline": limit}),
            )
        if weights not in (None, "coverage"):
            raise ValueError(f"weights={weights!r}: use None or 'coverage'")
        coverage = weights == "coverage"
        if coverage and all_touched:
            raise ValueError("weights='coverage' already takes every touched pixel: drop "
                             "all_touched=True")
        t0 = _time.perf_counter()
        counters = self._handle.counters
        before = counters.snapshot()
        spec = parse_stats(("count",) if categorical else stats)
        classes = np.asarray(sorted(set(mask_classes if mask_classes is not None
                                        else DEFAULT_MASK_CLASSES)), dtype=np.int64)
        pset = load_parcels(parcels, crs=crs, id_column=id_column, layer=layer)

        frames: list[pd.DataFrame] = []
        n_chunks = 0
        status = parcel_status(pset)
        assignment = self._assign(pset, outputs)
        _warn_if_all_outside(pset, assignment, self.grids)
        jobs = []
        for grid_name, group_outputs, subset in assignment:
            info = self.grids[grid_name]
            layers = [
                Layer(name, int(t), needs, self._formula(name, needs, info))
                for name, needs in group_outputs for t in dates[(grid_name, name)]
            ]
            if not layers or subset.size == 0:
                continue
            geoms = pset.to_crs(info.spec.crs)[subset]
            big = too_large(geoms, info.spec)
            if big.any():  # not a real parcel (wrong units or CRS): nothing to read
                geoms = np.where(big, shapely.Polygon(), geoms)
                status[subset[big]] = "too large"
            plan = plan_chunks(geoms, info.spec, all_touched=all_touched,
                               coverage=coverage)
            arrays = {b: self._array(grid_name, b)._async_array
                      for _, needs in group_outputs for b in needs}
            n_chunks += plan.n_chunks * _reads_per_chunk(arrays, layers)
            jobs.append((info, subset, layers, GridJob(
                plan=plan, geoms=geoms, arrays=arrays,
                nodata={b: info.bands[b]["nodata"] for b in arrays}, layers=layers,
                stats=spec, all_touched=all_touched,
                concurrency=concurrency or _config.default_concurrency(),
                coverage=coverage, categorical=categorical, workers=_config.default_workers(),
                mask=None if mask_band is None else self._mask_source(info, mask_band, classes),
                footprints={(b, la.time_index): w for la in layers for b in la.inputs
                            if (w := info.footprint_windows(b, la.time_index)) is not None},
                row_area=_row_areas(info) if categorical else None,
                deadline=limit, deadline_at=deadline_at,
            )))
        bar = progress(total=n_chunks, desc="zonal_stats", unit="chunk", quiet=quiet)
        with bar:
            for info, subset, layers, job in jobs:
                results = sync(run_grid(job, on_chunk=bar.update))
                for lay, res in zip(layers, results, strict=True):
                    when = info.times[lay.time_index]
                    if categorical:
                        frames.append(self._class_frame(pset, subset, lay.name, when, res))
                    else:
                        frames.append(self._frame(pset, subset, lay.name, when, res,
                                                  spec.names, status=status[subset]))
        if not categorical:
            frames.extend(self._uncovered(pset, assignment, outputs, dates, spec.names,
                                          all_touched=all_touched, coverage=coverage,
                                          status=status))
        names = (["class", "count", "fraction", "area_m2"] if categorical
                 else [*spec.names, "status"])
        df = _concat(frames, pset, names, integer_counts=not coverage,
                     sort=["_order", "band", "time", "class"] if categorical else None)
        after = counters.snapshot()
        report = QueryReport(
            parcels=len(pset), rows=len(df), chunks=n_chunks,
            requests=after["get_requests"] - before["get_requests"],
            bytes_read=after["bytes_read"] - before["bytes_read"],
            seconds=_time.perf_counter() - t0, grids=[a[0] for a in assignment],
            retries=after.get("retries", 0) - before.get("retries", 0),
        )
        self.last_report = report
        df.attrs["parcelzarr"] = report.as_dict()
        logger.info("zonal_stats: %s", report)
        return df

    def plan(self, parcels: Any, **kwargs: Any) -> QueryPlan:
        """Dry run of :meth:`zonal_stats` with the same arguments: the chunks, GET requests,
        bytes, seconds and dollars it will cost, reading no pixel (:class:`QueryPlan`)."""
        from ._dryrun import plan_query

        return plan_query(self, parcels, **kwargs)

    def _outputs(self, bands: str | Iterable[str] | None, indices: Iterable[str] | None, *,
                 exclude: str | None = None) -> list[tuple[str, tuple[str, ...]]]:
        """(output name, bands it reads) for each band, index and expression asked for."""
        if isinstance(indices, str):
            indices = [indices]
        index_list = [str(i) for i in (indices or [])]
        if bands is None and index_list:
            band_list: list[str] = []
        elif bands is None:
            band_list = [b for b in self.bands if b != exclude]
        else:
            band_list = normalise_bands(bands, self.bands)
        outputs: list[tuple[str, tuple[str, ...]]] = [(b, (b,)) for b in band_list]
        for item in index_list:
            if item.lower() in INDICES:
                outputs.append((item.lower(), INDICES[item.lower()].bands))
                continue
            if item.isidentifier():
                raise BandNotFoundError(
                    f"unknown index {item!r}: use one of {sorted(INDICES)} or an expression "
                    "over band names such as '(B08 - B04) / (B08 + B04)'")
            expr = parse_expression(item)
            self._expressions[expr.text] = expr
            outputs.append((expr.text, expr.bands))
        for _, needs in outputs:
            for b in needs:
                self._grids_with(b)
        if not outputs:
            raise ValueError(
                "nothing to compute: no band or index was asked for"
                + (f" (the store's only band is the mask band {exclude})"
                   if bands is None and exclude in self.bands else "")
                + f"; the store holds {self.bands}")
        return outputs

    def _dates(self, outputs: Sequence[tuple[str, tuple[str, ...]]], time: TimeSelection, *,
               explicit: bool) -> dict[tuple[str, str], np.ndarray]:
        """``(grid, output) -> time indices`` selected by ``time`` at which every band the
        output reads was ingested.

        Raises
        ------
        DateNotFoundError
            Nothing is selected at all, or an output asked for by name (``explicit``) has no
            date in the selection.
        """
        out: dict[tuple[str, str], np.ndarray] = {}
        empty: list[str] = []
        for name, needs in outputs:
            found = False
            for g in self.grids.values():
                if not all(b in g.bands for b in needs):
                    continue
                keep = [int(t) for t in select_times(g.times, time)
                        if all(g.holds(b, int(t)) for b in needs)]
                out[(g.name, name)] = np.asarray(keep, dtype=np.int64)
                found = found or bool(keep)
            if not found:
                empty.append(name)
        if empty and (explicit or len(empty) == len(outputs)):
            needs_of = dict(outputs)
            held = np.unique(np.concatenate([self._output_times(needs_of[n]) for n in empty]))
            label = ", ".join(n if needs_of[n] == (n,) else f"{n} (reads {', '.join(needs_of[n])})"
                              for n in empty)
            what = "" if len(empty) == len(outputs) and not explicit else f" of {label}"
            raise DateNotFoundError(
                f"time {plain(time)!r} matches no stored date{what}: the store holds "
                f"{describe_times(held)}{' for ' + label if what else ''}; choose dates among "
                "them")
        if empty:
            logger.info("no date selected for %s: left out", ", ".join(empty))
        return out

    def _output_times(self, needs: tuple[str, ...]) -> np.ndarray:
        """Dates at which every band of ``needs`` was ingested (in any grid holding them)."""
        times = [g.times[t] for g in self.grids.values() if all(b in g.bands for b in needs)
                 for t in range(g.times.size) if all(g.holds(b, t) for b in needs)]
        return np.asarray(times, dtype="datetime64[s]")

    def _warn_unscaled(self, outputs: Sequence[tuple[str, tuple[str, ...]]]) -> None:
        """Warn when a spectral index reads a band that declares no reflectance scale."""
        for name, needs in outputs:
            if name not in INDICES or needs == (name,):
                continue
            raw = sorted({b for b in needs for g in self.grids.values()
                          if b in g.bands and g.bands[b].get("scale_factor") is None})
            if raw:
                warnings.warn(
                    f"index {name} reads band(s) {', '.join(raw)}, which declare no reflectance "
                    "scale: it is computed on the stored values as they are; re-ingest them "
                    "with --scale/--offset (Python scale=, offset=), e.g. --scale 0.0001 "
                    "--offset -0.1 for Sentinel-2 L2A DNs",
                    ReflectanceWarning, stacklevel=3)

    def _mask_band(self, mask: bool | str | None) -> str | None:
        if mask is None or mask is False:
            return None
        if mask is True or (isinstance(mask, str) and mask.lower() == "scl"):
            if "SCL" not in self.bands:
                raise BandNotFoundError(
                    "mask='scl' needs the Sentinel-2 scene classification band SCL, which the "
                    f"store does not hold (bands: {self.bands}); ingest the SCL_20m files")
            return "SCL"
        raise ValueError(f"mask={mask!r}: use True or 'scl'")

    def _mask_source(self, info: GridInfo, band: str, classes: np.ndarray) -> MaskSource:
        """Where the grid ``info`` reads its mask: the SCL grid of the same CRS, finest first."""
        s = info.spec
        found = sorted((g for g in self.grids.values()
                        if band in g.bands and g.spec.crs == s.crs),
                       key=lambda g: g.spec.res_x)
        for g in found:
            m = g.spec
            f = m.res_x / s.res_x
            oy = (m.y0 - s.y0) / s.res_y
            ox = (s.x0 - m.x0) / s.res_x
            if all(abs(v - round(v)) < 1e-6 for v in (f, oy, ox)) and round(f) >= 1:
                tmap = np.array([_index_of(g.times, t) for t in info.times], dtype=np.int64)
                return MaskSource(self._array(g.name, band)._async_array, round(f),
                                  (round(oy), round(ox)), tmap, classes)
        raise BandNotFoundError(
            f"no {band} grid of {s.crs.to_string()} aligns with grid {info.name}: the mask "
            "needs a resolution that is a whole multiple of the band's on the same lattice")

    def _class_frame(self, pset: ParcelSet, subset: np.ndarray, band: str,
                     when: np.datetime64, res: Mapping[str, np.ndarray]) -> pd.DataFrame:
        par, cnt = res["parcel"], res["count"]
        total = np.bincount(par, weights=cnt, minlength=subset.size)
        return pd.DataFrame({
            pset.ids.name: pset.ids.to_numpy()[subset[par]],
            "band": band,
            "time": np.full(par.size, when),
            "_order": subset[par],
            "class": res["class"],
            "count": cnt,
            "fraction": cnt / total[par],
            "area_m2": res["area"],
        })

    def _formula(self, name: str, needs: tuple[str, ...], info: GridInfo) -> Any:
        if needs == (name,) and name in info.bands:  # a band (even one named "ndvi")
            return None
        if name in INDICES:
            idx: Any = INDICES[name].formula
        elif name in self._expressions:
            idx = self._expressions[name]
        else:
            return None
        scales = {b: (info.bands[b].get("scale_factor") or 1.0,
                      info.bands[b].get("add_offset") or 0.0) for b in needs}

        def formula(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
            refl = {b: arrays[b].astype(np.float64) * scales[b][0] + scales[b][1] for b in needs}
            return idx(refl)

        return formula

    def _assign(
        self, pset: ParcelSet, outputs: Sequence[tuple[str, tuple[str, ...]]]
    ) -> list[tuple[str, list[tuple[str, tuple[str, ...]]], np.ndarray]]:
        """Give each parcel, for each output, the grid that covers most of it."""
        n = len(pset)
        scores: dict[str, np.ndarray] = {}
        for name, info in self.grids.items():
            geoms = pset.to_crs(info.spec.crs)
            b = shapely.bounds(geoms)
            left, bottom, right, top = info.spec.bounds
            w = np.clip(np.minimum(b[:, 2], right) - np.maximum(b[:, 0], left), 0, None)
            h = np.clip(np.minimum(b[:, 3], top) - np.maximum(b[:, 1], bottom), 0, None)
            area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            with np.errstate(invalid="ignore", divide="ignore"):
                frac = np.where(area > 0, w * h / area, ((w >= 0) & (h >= 0)
                                & (b[:, 0] <= right) & (b[:, 2] >= left)
                                & (b[:, 1] <= top) & (b[:, 3] >= bottom)).astype(float))
            scores[name] = np.nan_to_num(frac, nan=0.0)
        groups: dict[tuple[str, bytes], tuple[list[tuple[str, tuple[str, ...]]], np.ndarray]] = {}
        for out_name, needs in outputs:
            candidates = [g for g in self.grids.values() if all(b in g.bands for b in needs)]
            if not candidates:
                raise BandNotFoundError(f"no grid holds all of {list(needs)} (for {out_name})")
            stack = np.stack([scores[g.name] for g in candidates])
            best = np.argmax(stack, axis=0)
            covered = stack.max(axis=0) > 0
            for ci, g in enumerate(candidates):
                subset = np.flatnonzero(covered & (best == ci))
                if subset.size == 0:
                    continue
                key = (g.name, subset.tobytes())
                groups.setdefault(key, ([], subset))[0].append((out_name, needs))
        del n
        return [(k[0], outs, subset) for k, (outs, subset) in groups.items()]

    def _frame(self, pset: ParcelSet, subset: np.ndarray, band: str, when: np.datetime64,
               res: Mapping[str, np.ndarray], names: Sequence[str], *,
               status: np.ndarray) -> pd.DataFrame:
        data: dict[str, Any] = {
            pset.ids.name: pset.ids.to_numpy()[subset],
            "band": band,
            "time": np.full(subset.size, when),
            "_order": subset,
        }
        data.update({k: res[k] for k in names})
        data["status"] = status
        return pd.DataFrame(data)

    def _uncovered(self, pset: ParcelSet, assignment: Sequence[Any],
                   outputs: Sequence[tuple[str, tuple[str, ...]]],
                   dates: Mapping[tuple[str, str], np.ndarray],
                   names: Sequence[str], *, all_touched: bool = False,
                   coverage: bool = False, status: np.ndarray) -> list[pd.DataFrame]:
        """Rows for parcels outside every grid: count 0, NaN statistics, and their pixels
        (on the first grid holding the output) as ``nodata``; status "outside" unless the
        parcel is unusable ("empty", "invalid geometry", "too large")."""
        frames = []
        for out_name, needs in outputs:
            covered = np.zeros(len(pset), dtype=bool)
            for _, outs, subset in assignment:
                if any(o == out_name for o, _ in outs):
                    covered[subset] = True
            missing = np.flatnonzero(~covered)
            if missing.size == 0:
                continue
            times = np.unique(np.concatenate([
                g.times[dates[(g.name, out_name)]] for g in self.grids.values()
                if (g.name, out_name) in dates
            ]))
            grid = next(g for g in self.grids.values() if all(b in g.bands for b in needs))
            geoms = pset.to_crs(grid.spec.crs)[missing]
            beyond = outside_pixels(geoms, grid.spec, all_touched=all_touched,
                                    coverage=coverage)
            why = np.where(status[missing] == "ok", "outside", status[missing])
            why[too_large(geoms, grid.spec)] = "too large"
            for when in times:
                res = {k: (np.zeros(missing.size, beyond.dtype) if k == "count"
                           else beyond if k == "nodata"
                           else np.full(missing.size, np.nan)) for k in names}
                frames.append(self._frame(pset, missing, out_name, when, res, names,
                                          status=why))
        return frames

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
        import rioxarray  # noqa: F401

        pset = load_parcels(geometry, crs=crs)
        if len(pset) != 1:
            raise GeometryError(f"read() takes one geometry, got {len(pset)}; use zonal_stats")
        band_list = normalise_bands(bands, self.bands)
        outputs = [(b, (b,)) for b in band_list]
        assignment = self._assign(pset, outputs)
        if not assignment:
            raise GeometryError(
                "the parcel lies outside the store's coverage (grids: "
                + ", ".join(f"{g.name} {tuple(round(v) for v in g.spec.bounds)}"
                            for g in self.grids.values()) + ")"
            )
        grid_name = assignment[0][0]
        info = self.grids[grid_name]
        band_list = [o for o, _ in assignment[0][1]]
        geom = pset.to_crs(info.spec.crs)[0]
        r0, r1, c0, c1 = info.spec.pixel_window(shapely.bounds(geom))
        t_idx = select_times(info.times, time)
        if t_idx.size == 0:
            raise DateNotFoundError(
                f"time {plain(time)!r} matches no date of grid {grid_name}, which holds "
                f"{describe_times(info.times)}")
        if r1 <= r0 or c1 <= c0:
            raise GeometryError("the parcel covers no pixel of the store")

        arrays = {b: self._array(grid_name, b)._async_array for b in band_list}
        data = sync(read_window(arrays, grid=grid_name, times=t_idx, window=(r0, r1, c0, c1),
                                cache=self.read_cache,
                                concurrency=_config.default_concurrency()))
        blocks = [data[b] for b in band_list]
        transform = info.spec.transform @ info.spec.transform.translation(c0, r0)
        inside = ~geometry_mask([geom], out_shape=(r1 - r0, c1 - c0), transform=transform,
                                all_touched=all_touched)
        x = info.spec.x0 + (np.arange(c0, c1) + 0.5) * info.spec.res_x
        y = info.spec.y0 - (np.arange(r0, r1) + 0.5) * info.spec.res_y
        data_vars = {}
        rows, cols = np.arange(r0, r1)[:, None], np.arange(c0, c1)[None, :]
        for band, block in zip(band_list, blocks, strict=True):
            bi = info.bands[band]
            if bi["nodata"] is None and info.footprints is not None:
                # No fill value is free to mean "no data": float, NaN outside the parcel
                # and where no source covers the pixel.
                covered = np.stack([covered_mask(info.source_windows(band, int(t)),
                                                 rows, cols) for t in t_idx])
                block = np.where(inside[None] & covered, block, np.nan)
            else:
                fill = 0 if bi["nodata"] is None else bi["nodata"]
                block = np.where(inside[None], block, np.asarray(fill, dtype=block.dtype))
            attrs = {k: v for k, v in (("_FillValue", bi["nodata"]),
                                       ("scale_factor", bi.get("scale_factor")),
                                       ("add_offset", bi.get("add_offset"))) if v is not None}
            data_vars[band] = (("time", "y", "x"), block, attrs)
        ds = xr.Dataset(
            data_vars,
            coords={"time": info.times[t_idx].astype("datetime64[ns]"), "y": y, "x": x,
                    "inside": (("y", "x"), inside)},
            attrs={"grid": grid_name},
        )
        return ds.rio.write_crs(info.spec.crs).rio.write_transform(transform)

    def info(self, *, sizes: bool = True) -> dict[str, Any]:
        """Grids, bands, dates, tiles, chunking and sizes, as a JSON-friendly dict.

        Tiles (or file names of named layers) come from the ingest manifest. With ``sizes``
        every band's stored objects are listed and measured (one listing, plus one size
        request per object on blob storage).
        """
        manifest = self._handle.read_json("parcelzarr-manifest.json") or {}
        out: dict[str, Any] = {"url": self.url, "grids": {}}
        for name, g in self.grids.items():
            s = g.spec
            tiles = sorted({k[len(name) + 1:].rsplit("/", 1)[-1]
                            for k in manifest.get("sources", {}) if k.startswith(name + "/")})
            bands: dict[str, Any] = {}
            for b, i in g.bands.items():
                arr = self._array(name, b)
                bands[b] = {"dtype": str(i["dtype"]), "nodata": i["nodata"],
                            "scale_factor": i.get("scale_factor"),
                            "add_offset": i.get("add_offset"),
                            "object_shape": list(arr.shards or arr.chunks),
                            "chunk_shape": list(arr.chunks)}
                if sizes:
                    n, nbytes = _stored(self._handle, f"{name}/{b}/")
                    bands[b] |= {"objects": n, "stored_bytes": nbytes}
            out["grids"][name] = {
                "crs": s.crs.to_string(),
                "resolution": [s.res_x, s.res_y],
                "shape": [s.height, s.width],
                "bounds": list(s.bounds),
                "chunks": [s.chunk_y, s.chunk_x],
                "bands": bands,
                "times": [str(t) for t in g.times],
                "tiles": tiles,
            }
            if sizes:
                out["grids"][name]["stored_bytes"] = sum(v["stored_bytes"]
                                                         for v in bands.values())
        return out


def _covered_lazy(info: GridInfo, band: str, chunks: tuple[tuple[int, ...], ...]) -> Any:
    """A lazy (dask) boolean ``(time, y, x)`` array: pixels a source of ``band`` covers."""
    import dask.array as da

    def block(block_info: Any = None) -> np.ndarray:
        (t0, t1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        rows, cols = np.arange(y0, y1)[:, None], np.arange(x0, x1)[None, :]
        return np.stack([covered_mask(info.source_windows(band, t), rows, cols)
                         for t in range(t0, t1)]).reshape(t1 - t0, y1 - y0, x1 - x0)

    return da.map_blocks(block, chunks=chunks, dtype=bool, meta=np.array((), dtype=bool))


def _row_areas(info: GridInfo) -> np.ndarray:
    """Ground area (m²) of a pixel per row of the grid, with a warning for projections
    whose map areas are far from ground areas (Web Mercator)."""
    scale = areal_scale(info.spec)
    if abs(scale - 1.0) > 0.01:
        warnings.warn(
            f"grid {info.name} is in {info.spec.crs.name}, whose map areas are {scale:.3g} "
            "times ground areas at its centre: area_m2 is the map-plane area there; ingest "
            "the layer in an equal-area or UTM CRS for ground areas", UserWarning, stacklevel=4)
    return row_areas(info.spec)


def _warn_if_all_outside(pset: ParcelSet, assignment: Sequence[Any],
                         grids: Mapping[str, GridInfo]) -> None:
    """A query none of whose parcels meets any grid is almost always a CRS mix-up: say so."""
    if any(subset.size for _, _, subset in assignment) or len(pset) == 0:
        return
    if shapely.is_empty(pset.geometry).all():
        return
    b = shapely.total_bounds(pset.geometry)
    warnings.warn(
        f"none of the {len(pset)} parcels overlaps the store (parcels in {pset.crs.to_string()} "
        f"span {', '.join(f'{v:.6g}' for v in b)}; grids: {', '.join(grids)}): every parcel "
        "gets count 0; check the parcels' CRS", UserWarning, stacklevel=3)


def _stored(handle: StoreHandle, prefix: str) -> tuple[int, int]:
    """Chunk objects (or shards) and their bytes stored under ``prefix``."""
    import asyncio

    store = handle.store

    async def measure() -> tuple[int, int]:
        # chunk objects only: the array's own metadata document is not data
        keys = [k async for k in store.list_prefix(prefix)
                if k.rsplit("/", 1)[-1] != "zarr.json"]
        sem = asyncio.Semaphore(32)

        async def size(key: str) -> int:
            async with sem:
                return int(await store.getsize(key))

        sizes = await asyncio.gather(*(size(k) for k in keys))
        return len(keys), int(sum(sizes))

    return sync(measure())


def _index_of(times: np.ndarray, t: np.datetime64) -> int:
    hit = np.flatnonzero(times == t)
    return int(hit[0]) if hit.size else -1


def _reads_per_chunk(arrays: Mapping[str, Any], layers: Sequence[Layer]) -> int:
    """Zarr chunks read per spatial chunk: per band, one per time block holding a date."""
    total = 0
    for band, arr in arrays.items():
        ts = {la.time_index for la in layers if band in la.inputs}
        total += len({t // arr.chunks[0] for t in ts})
    return total


def parcel_status(pset: ParcelSet) -> np.ndarray:
    """Per parcel, what its geometry allows before any grid is consulted: "ok", "empty" (no
    area: null, empty or nothing polygonal left after repair) or "invalid geometry"
    (non-finite coordinates, beyond repair). Grids add "outside" and "too large"."""
    status = np.full(len(pset), "ok", dtype=object)
    status[shapely.is_empty(pset.geometry) | (shapely.area(pset.geometry) == 0)] = "empty"
    if pset.unusable is not None:
        status[pset.unusable] = "invalid geometry"
    return status


def _concat(frames: list[pd.DataFrame], pset: ParcelSet, names: Sequence[str], *,
            integer_counts: bool = True, sort: Sequence[str] | None = None) -> pd.DataFrame:
    if not frames:
        cols = [pset.ids.name, "band", "time", *names]
        return pd.DataFrame({c: [] for c in cols})
    df = pd.concat(frames, ignore_index=True)
    df = df.sort_values(list(sort or ["_order", "band", "time"]), kind="stable")
    df = df.drop(columns="_order").reset_index(drop=True)
    if integer_counts:
        for k in ("count", "nodata"):
            if k in df.columns:
                df[k] = df[k].astype("int64")
    return df

