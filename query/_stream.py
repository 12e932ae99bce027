"""State-sized queries in bounded memory: a GeoParquet file streamed in spatial batches.

:func:`stream_zonal_stats` never holds the whole parcel file as geometries:

1. one pass over the geometry column (record batches) keeps each parcel's bounding-box centre
   and gives it a Hilbert key (:func:`hilbert_key`): 24 bytes per parcel in all;
2. parcels are ranked by key and cut into batches of ``batch_size``; a second pass over the
   file appends each row to its batch's temporary Parquet file (an external bucket sort);
3. each batch, in key order, is loaded, queried with :meth:`ParcelStore.zonal_stats` and
   written to the output as Parquet row groups, then dropped.

Peak memory is set by ``batch_size`` (geometries, the plan and results of one batch), not by
the file. Rows come out in spatial (batch) order, each parcel's rows together; a parcel's
statistics depend only on its own pixels, so they equal those of any other split.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time as _time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from parcelzarr.errors import GeometryError


class _Store(Protocol):
    """What streaming needs of a :class:`~parcelzarr.query.ParcelStore`."""

    last_report: Any

    def zonal_stats(self, parcels: Any, **kwargs: Any) -> Any: ...

__all__ = ["StreamReport", "hilbert_key", "spatial_batches", "stream_zonal_stats"]

logger = logging.getLogger(__name__)

_ROW = "__parcelzarr_row"  # the row number in the file, carried through the bucket files
_ORDER = 16  # Hilbert curve of 2^16 x 2^16 cells over the parcels' extent


@dataclass(frozen=True)
class StreamReport:
    """What a streamed query did: parcels, batches, output rows and the summed query costs."""

    parcels: int
    batches: int
    rows: int
    requests: int
    bytes_read: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.parcels:,} parcels in {self.batches} batches: {self.rows:,} rows, "
                f"{self.requests:,} requests, {self.bytes_read / 1e6:,.1f} MB in "
                f"{self.seconds:.1f} s")


def hilbert_key(x: np.ndarray, y: np.ndarray, bounds: tuple[float, float, float, float],
                order: int = _ORDER) -> np.ndarray:
    """Hilbert curve index of points ``(x, y)`` on a ``2^order`` grid over ``bounds`` (pure;
    NaN points get the last key). Neighbouring keys are neighbouring cells."""
    n = 1 << order
    x0, y0, x1, y1 = bounds
    w, h = max(x1 - x0, 1e-12), max(y1 - y0, 1e-12)
    bad = ~(np.isfinite(x) & np.isfinite(y))
    xi = np.clip(np.nan_to_num((x - x0) / w * (n - 1)), 0, n - 1).astype(np.int64)
    yi = np.clip(np.nan_to_num((y - y0) / h * (n - 1)), 0, n - 1).astype(np.int64)
    d = np.zeros(x.shape, dtype=np.int64)
    s = n >> 1
    while s > 0:
        rx = (xi & s) > 0
        ry = (yi & s) > 0
        d += s * s * ((3 * rx) ^ ry)
        # rotate the quadrant
        flip = ~ry
        swap_x = flip & rx
        xi = np.where(swap_x, n - 1 - xi, xi)
        yi = np.where(swap_x, n - 1 - yi, yi)
        xi, yi = np.where(flip, yi, xi), np.where(flip, xi, yi)
        s >>= 1
    d[bad] = n * n
    return d


def _geo_meta(pf: pq.ParquetFile, path: str) -> tuple[str, Any]:
    """(primary geometry column, CRS) from a GeoParquet file's ``geo`` metadata."""
    meta = pf.schema_arrow.metadata or {}
    raw = meta.get(b"geo")
    if raw is None:
        raise GeometryError(f"{path} is Parquet without GeoParquet metadata: write it with "
                            "GeoDataFrame.to_parquet (streaming reads GeoParquet only)")
    geo = json.loads(raw)
    col = geo["primary_column"]
    info = geo["columns"][col]
    if info.get("encoding", "WKB").upper() != "WKB":
        raise GeometryError(f"{path}: geometry encoding {info.get('encoding')!r} is not "
                            "supported for streaming; write WKB (GeoPandas' default)")
    crs = info.get("crs", "OGC:CRS84")
    return col, crs


def spatial_batches(pf: pq.ParquetFile, geom_col: str, batch_size: int, *,
                    read_rows: int = 65_536) -> np.ndarray:
    """Batch number of every row: rows ranked by the Hilbert key of their bounding-box
    centre, cut into batches of ``batch_size`` (first pass; memory 24 bytes per row)."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for rb in pf.iter_batches(batch_size=read_rows, columns=[geom_col]):
        g = shapely.from_wkb(rb.column(0).to_numpy(zero_copy_only=False))
        b = shapely.bounds(g)
        xs.append((b[:, 0] + b[:, 2]) / 2)
        ys.append((b[:, 1] + b[:, 3]) / 2)
    x = np.concatenate(xs) if xs else np.empty(0)
    y = np.concatenate(ys) if ys else np.empty(0)
    del xs, ys
    ok = np.isfinite(x) & np.isfinite(y)
    bounds = ((float(x[ok].min()), float(y[ok].min()), float(x[ok].max()), float(y[ok].max()))
              if ok.any() else (0.0, 0.0, 1.0, 1.0))
    key = hilbert_key(x, y, bounds)
    del x, y
    order = np.argsort(key, kind="stable")
    batch = np.empty(order.size, dtype=np.int32)
    batch[order] = (np.arange(order.size) // batch_size).astype(np.int32)
    return batch


def _bucket(pf: pq.ParquetFile, batch: np.ndarray, tmp: Path, *,
            read_rows: int = 65_536) -> list[Path]:
    """Second pass: each row appended to its batch's temporary Parquet file."""
    n_batches = int(batch.max()) + 1 if batch.size else 0
    paths = [tmp / f"batch-{i:06d}.parquet" for i in range(n_batches)]
    writers: dict[int, pq.ParquetWriter] = {}
    start = 0
    try:
        for rb in pf.iter_batches(batch_size=read_rows):
            b = batch[start:start + rb.num_rows]
            start += rb.num_rows
            table = pa.Table.from_batches([rb]).append_column(
                _ROW, pa.array(np.arange(start - rb.num_rows, start, dtype=np.int64)))
            for i in np.unique(b):
                part = table.filter(pa.array(b == i))
                w = writers.get(int(i))
                if w is None:
                    w = writers[int(i)] = pq.ParquetWriter(paths[int(i)], table.schema)
                w.write_table(part)
    finally:
        for w in writers.values():
            w.close()
    return paths


def _batches(path: str, batch_size: int, tmp: Path) -> Iterator[tuple[pa.Table, Any, str]]:
    pf = pq.ParquetFile(path)
    geom_col, crs = _geo_meta(pf, path)
    # the passes read as many rows at a time as a batch holds: memory stays the batch's
    read_rows = min(batch_size, 65_536)
    batch = spatial_batches(pf, geom_col, batch_size, read_rows=read_rows)
    paths = _bucket(pf, batch, tmp, read_rows=read_rows)
    del batch
    for p in paths:
        table = pq.read_table(p)
        p.unlink()
        yield table, crs, geom_col


def stream_zonal_stats(store: _Store, parcels: str | Path, out: str | Path, *,
                       batch_size: int = 50_000, id_column: str | None = None,
                       **kwargs: Any) -> StreamReport:
    """:meth:`ParcelStore.zonal_stats` over a GeoParquet parcel file of any size, in bounded
    memory, written to the Parquet file ``out`` one row group per batch (see the module doc).

    ``kwargs`` are those of ``zonal_stats`` (bands, stats, time, ...). Without ``id_column``
    the row number in the file is the ``parcel_id``.

    Raises
    ------
    GeometryError
        ``parcels`` is not a GeoParquet file with WKB geometries.
    ValueError
        ``batch_size`` below 1, or ``scheduler`` given (stream on one machine; Dask runs take
        the whole query).
    """
    import geopandas as gpd

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if kwargs.get("scheduler") is not None:
        raise ValueError("stream_zonal_stats runs on this machine: drop scheduler=")
    t0 = _time.perf_counter()
    path = str(parcels)
    rows = requests = nbytes = n_parcels = n_batches = 0
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    with tempfile.TemporaryDirectory(prefix="parcelzarr-stream-") as tmp:
        try:
            for table, crs, geom_col in _batches(path, batch_size, Path(tmp)):
                geoms = shapely.from_wkb(table.column(geom_col).to_numpy(zero_copy_only=False))
                attrs = table.drop_columns([geom_col, _ROW]).to_pandas()
                if id_column is None:  # the row number in the file, as zonal_stats would
                    attrs.index = table.column(_ROW).to_numpy()
                frame = gpd.GeoDataFrame(attrs, geometry=geoms, crs=crs)
                df = store.zonal_stats(frame, id_column=id_column, **kwargs)
                rep = store.last_report
                if rep is not None:
                    requests += rep.requests
                    nbytes += rep.bytes_read
                n_parcels += len(frame)
                tab = pa.Table.from_pandas(df, preserve_index=False)
                if writer is None:
                    schema = tab.schema.remove_metadata()
                    writer = pq.ParquetWriter(partial, schema)
                writer.write_table(tab.cast(schema))
                rows += len(df)
                n_batches += 1
                logger.info("batch %d: %d parcels, %d rows", n_batches, len(frame), len(df))
                del frame, df, tab, geoms, attrs, table
        except BaseException:
            if writer is not None:
                writer.close()
            partial.unlink(missing_ok=True)
            raise
    if writer is None:
        raise GeometryError(f"{path} holds no parcels")
    writer.close()
    partial.replace(out)
    return StreamReport(parcels=n_parcels, batches=n_batches, rows=rows, requests=requests,
                        bytes_read=nbytes, seconds=_time.perf_counter() - t0)
