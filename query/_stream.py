"""State-sized queries in bounded memory: a GeoParquet file streamed in spatial batches.

:func:`stream_zonal_stats` never holds the whole parcel file, whatever its layout (one giant
row group, as ``GeoDataFrame.to_parquet`` writes up to 1 M rows, or many): the file is read
through a buffered stream, page by page, ``batch_size`` rows at a time, and only the columns a
query uses (the geometry and the id or index columns; other attributes are never read).

1. one pass over the geometry column keeps each parcel's bounding-box centre and gives it a
   Hilbert key (:func:`hilbert_key`); parcels are ranked by key and cut into batches of
   ``batch_size`` (:func:`spatial_batches`; 4 bytes per parcel kept, ~20 at the sort);
2. a second pass sorts each ``batch_size`` rows read by batch and appends them to one
   temporary Arrow IPC file, one record batch per (rows read, batch) segment (an external
   bucket sort: one open file, whatever the number of batches; its footer holds 24 bytes per
   segment). A file already in this order (or declared ``presorted``) skips this pass;
3. each batch, in key order, is read back from its segments, queried with
   :meth:`ParcelStore.zonal_stats` and written to the output as Parquet row groups, then
   dropped.

Peak memory is set by ``batch_size`` (the batch's rows, geometries, plan and results). Rows
come out in spatial (batch) order, each parcel's rows together; a parcel's statistics depend
only on its own pixels, so they equal those of any other split. Parcel ids are those of the
whole file read by GeoPandas: ``id_column``, the ``id`` of fiboa files, else the stored pandas
index (a range or index columns) or the row number.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import secrets
import tempfile
import time as _time
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from parcelzarr import _config
from parcelzarr.errors import GeometryError, QueryDeadlineError, plain

from ._pg import is_postgres_url
from ._pg_sink import to_postgis_batches


class _Store(Protocol):
    """What streaming needs of a :class:`~parcelzarr.query.ParcelStore`."""

    last_report: Any

    def zonal_stats(self, parcels: Any, **kwargs: Any) -> Any: ...

__all__ = ["StreamReport", "hilbert_key", "spatial_batches", "stream_zonal_stats"]

logger = logging.getLogger(__name__)

_ROW = "__parcelzarr_row"  # the row number in the file, carried through the spill file
_ORDER = 16  # Hilbert curve of 2^16 x 2^16 cells over the parcels' extent
#: Parquet pages are read through a buffer of this many bytes (without one, Arrow reads a
#: whole column chunk, i.e. a whole column of a one-row-group file, at once).
_READ_BUFFER = 1 << 20
_KEY_CHUNK = 1 << 16  # parcels per hilbert_key call (its temporaries: ~60 bytes each)


@dataclass(frozen=True)
class StreamReport:
    """What a streamed query did: parcels, batches, output rows, the summed query costs and
    the bytes of the temporary spill file (0: the file was read in its own order)."""

    parcels: int
    batches: int
    rows: int
    requests: int
    bytes_read: int
    seconds: float
    spill_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.parcels:,} parcels in {self.batches} batches: {self.rows:,} rows, "
                f"{self.requests:,} requests, {self.bytes_read / 1e6:,.1f} MB in "
                f"{self.seconds:.1f} s")


@dataclass(frozen=True)
class _Source:
    """What streaming reads of a GeoParquet file and how it makes the parcel ids.

    ``columns`` are read and carried (the geometry, then the id or pandas index columns);
    ``id_column`` names the id column (given, or fiboa's ``id``); without it and without index
    columns, the id is ``index_start + row * index_step`` (a stored RangeIndex, or the row
    number), as ``geopandas.read_parquet`` would make the index.
    """

    path: str
    geometry: str
    crs: Any
    columns: list[str]
    id_column: str | None
    index_range: tuple[int, int] | None  # (start, step); None: index columns are read
    rows: int


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


def _wkb(col: Any) -> np.ndarray:
    """The WKB values of a geometry column (binary, or a ``geoarrow.wkb`` extension type)."""
    if isinstance(col.type, pa.ExtensionType):
        col = (pa.chunked_array([c.storage for c in col.chunks], type=col.type.storage_type)
               if isinstance(col, pa.ChunkedArray) else col.storage)
    return np.asarray(col.to_numpy(zero_copy_only=False))


def _release() -> None:
    """Hand the memory Arrow has freed back to the system. Arrow's allocator keeps freed
    blocks for reuse; read after read they pile up (measured: +30 MB over the first 8 reads
    of 4 MB, then flat), which would make the peak that of several batches, not one."""
    pa.default_memory_pool().release_unused()


def _open(path: str) -> pq.ParquetFile:
    """The file, read page by page through a buffer (never a whole column chunk at once)."""
    try:
        return pq.ParquetFile(path, buffer_size=_READ_BUFFER, pre_buffer=False)
    except (OSError, pa.ArrowInvalid) as exc:
        raise GeometryError(f"cannot read parcels from {path!r}: {exc}") from exc


def _source(pf: pq.ParquetFile, path: str, id_column: str | None) -> _Source:
    """Geometry column, CRS, the columns to read and the id rule of a GeoParquet file."""
    from ._parcels import _fiboa_metadata

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
    names = pf.schema_arrow.names
    rows = pf.metadata.num_rows
    if rows == 0:
        raise GeometryError(f"parcels file {path!r} holds no parcels")
    if _ROW in names:
        raise GeometryError(f"{path}: streaming reserves the column name {_ROW!r}; rename it")
    attrs = [c for c in names if c != col]
    if id_column is None and "id" in names and ("fiboa_version" in names
                                                or _fiboa_metadata(path)):
        logger.info("parcels follow the fiboa schema: ids from their 'id' column")
        id_column = "id"
    if id_column is not None:
        if id_column not in attrs:
            raise GeometryError(f"id column {id_column!r} is not among the parcel columns "
                                f"{attrs}")
        return _Source(path, col, crs, [col, id_column], id_column, None, rows)
    pandas_meta = json.loads(meta.get(b"pandas", b"{}"))
    index = pandas_meta.get("index_columns", [])
    if index and all(isinstance(c, str) for c in index):  # index columns: to_pandas restores
        return _Source(path, col, crs, [col, *index], None, None, rows)
    rng = next((c for c in index if isinstance(c, dict) and c.get("kind") == "range"), None)
    start, step = (int(rng["start"]), int(rng["step"])) if rng else (0, 1)
    return _Source(path, col, crs, [col], None, (start, step), rows)


def _ids(pf: pq.ParquetFile, column: str
         ) -> Generator[tuple[np.ndarray, np.ndarray, int], None, None]:
    """(the present ids, their 64-bit hashes, the number of missing ids) of ``column``,
    ``_KEY_CHUNK`` rows at a time. An id hashes alike in every chunk: missing ids, which
    would turn a chunk of integers into floats, are left out and counted."""
    from pandas.util import hash_array

    for rb in pf.iter_batches(batch_size=_KEY_CHUNK, columns=[column]):
        col = rb.column(0)
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        missing = pc.is_null(col, nan_is_null=True)
        values = col.filter(pc.invert(missing)).to_numpy(zero_copy_only=False)
        yield values, hash_array(values), pc.sum(missing).as_py() or 0


def _check_unique_ids(pf: pq.ParquetFile, src: _Source) -> None:
    """Fail, as the whole-file query does, if parcel ids repeat anywhere in the file (not
    only within a batch), before anything is written. The id column is read alone and kept
    as 8-byte hashes; only ids whose hashes repeat are compared, in a second read (the
    columns of a MultiIndex are grouped whole). Ids made from the row number never repeat."""
    cols = src.columns[1:]
    dup: Any = None
    if len(cols) > 1:
        ids = pf.read(columns=cols, use_pandas_metadata=False)
        counts = ids.group_by(cols, use_threads=False).aggregate([([], "count_all")])
        if len(counts) < ids.num_rows:
            first = counts.filter(pc.greater(counts["count_all"], 1)).to_pylist()[0]
            dup = tuple(first[c] for c in cols)
    elif cols:
        hashes, missing = [], 0
        for _, h, n in _ids(pf, cols[0]):
            hashes.append(h)
            missing += n
        every = np.concatenate(hashes)
        del hashes
        every.sort()
        suspects = np.unique(every[1:][every[1:] == every[:-1]])
        del every
        seen: set[Any] = set()
        for values, h, _ in _ids(pf, cols[0]) if len(suspects) else ():
            for v in values[np.isin(h, suspects)].tolist():  # in file order, as pandas
                if v in seen:
                    dup = v
                    break
                seen.add(v)
            if dup is not None:
                break
        if dup is None and missing > 1:
            dup = float("nan")
    if dup is not None:
        raise GeometryError(f"parcel ids ({src.id_column or 'parcel_id'}) are not unique "
                            f"(e.g. {plain(dup)!r}): pass id_column= naming a unique column")


def spatial_batches(pf: pq.ParquetFile, geom_col: str, batch_size: int, *,
                    read_rows: int = 65_536) -> np.ndarray:
    """Batch number of every row: rows ranked by the Hilbert key of their bounding-box
    centre, cut into batches of ``batch_size`` (first pass; ``read_rows`` geometries at a
    time; 4 bytes per row kept, ~20 while sorting)."""
    n = pf.metadata.num_rows
    cx = np.empty(n, dtype=np.float32)  # float32: 2^-24 of the coordinates, finer than a key
    cy = np.empty(n, dtype=np.float32)
    start = 0
    for rb in pf.iter_batches(batch_size=read_rows, columns=[geom_col]):
        b = shapely.bounds(shapely.from_wkb(_wkb(rb.column(0))))
        cx[start:start + rb.num_rows] = (b[:, 0] + b[:, 2]) / 2
        cy[start:start + rb.num_rows] = (b[:, 1] + b[:, 3]) / 2
        start += rb.num_rows
        del rb, b
        _release()
    ok = np.isfinite(cx) & np.isfinite(cy)
    bounds = ((float(cx[ok].min()), float(cy[ok].min()), float(cx[ok].max()),
               float(cy[ok].max())) if ok.any() else (0.0, 0.0, 1.0, 1.0))
    del ok
    key = np.empty(n, dtype=np.int64)
    for s in range(0, n, _KEY_CHUNK):
        e = min(s + _KEY_CHUNK, n)
        key[s:e] = hilbert_key(cx[s:e].astype(np.float64), cy[s:e].astype(np.float64), bounds)
    del cx, cy
    order = np.argsort(key, kind="stable")
    del key
    batch = np.empty(n, dtype=np.int32)
    batch[order] = np.arange(n, dtype=np.int32) // batch_size
    return batch


def _spill(pf: pq.ParquetFile, src: _Source, batch: np.ndarray, path: Path,
           read_rows: int) -> list[np.ndarray]:
    """Second pass: every ``read_rows`` rows, sorted by batch, appended to one Arrow IPC file
    as one record batch per (rows read, batch); returns each batch's record batch numbers."""
    n_batches = int(batch.max()) + 1
    seg_batch: list[np.ndarray] = []
    codec = "lz4" if pa.Codec.is_available("lz4") else None
    options = pa.ipc.IpcWriteOptions(compression=codec)
    start = 0
    with contextlib.ExitStack() as stack:
        writer: pa.ipc.RecordBatchFileWriter | None = None
        schema: pa.Schema | None = None
        for rb in pf.iter_batches(batch_size=read_rows, columns=src.columns):
            k = rb.num_rows
            b = batch[start:start + k]
            rows = pa.array(np.arange(start, start + k, dtype=np.int64))
            start += k
            if schema is None:
                schema = rb.schema.append(pa.field(_ROW, pa.int64())).with_metadata(
                    pf.schema_arrow.metadata)
                sink = stack.enter_context(pa.OSFile(str(path), "wb"))
                writer = stack.enter_context(pa.ipc.new_file(sink, schema, options=options))
            assert writer is not None
            order = np.argsort(b, kind="stable")
            part = pa.RecordBatch.from_arrays([*rb.columns, rows], schema=schema)
            part = part.take(pa.array(order))
            sb = b[order]
            cuts = np.concatenate(([0], np.flatnonzero(np.diff(sb)) + 1, [k]))
            for s, e in itertools.pairwise(cuts):
                writer.write_batch(part.slice(int(s), int(e - s)))
            seg_batch.append(sb[cuts[:-1]])
            del part, rb
            _release()
    seg = np.concatenate(seg_batch)
    order = np.argsort(seg, kind="stable")
    counts = np.bincount(seg, minlength=n_batches)
    return np.split(order, np.cumsum(counts)[:-1])


def _batches(pf: pq.ParquetFile, src: _Source, batch_size: int, tmp: Path,
             presorted: bool, spilled: list[int]
             ) -> Generator[tuple[pa.Table, np.ndarray], None, None]:
    """(the batch's columns, its row numbers in the file), batch by batch in spatial order;
    the spill file's size is appended to ``spilled``."""
    read_rows = batch_size  # the passes hold as many rows at a time as a batch does
    if not presorted:
        batch = spatial_batches(pf, src.geometry, batch_size, read_rows=read_rows)
        presorted = bool((batch[1:] >= batch[:-1]).all())  # already in key order: no spill
        if not presorted:
            spill = tmp / "spill.arrow"
            segments = _spill(pf, src, batch, spill, read_rows)
            del batch
            spilled.append(spill.stat().st_size)
            with pa.OSFile(str(spill), "rb") as f:  # read, not mapped: RSS stays the batch's
                reader = pa.ipc.open_file(f)
                for segs in segments:
                    table = pa.Table.from_batches([reader.get_batch(int(i)) for i in segs],
                                                  schema=reader.schema)
                    rows = table.column(_ROW).to_numpy()
                    yield table.drop_columns([_ROW]), rows
            return
        del batch
    start = 0
    for rb in pf.iter_batches(batch_size=batch_size, columns=src.columns):
        table = pa.Table.from_batches([rb])
        table = table.replace_schema_metadata(pf.schema_arrow.metadata)
        yield table, np.arange(start, start + rb.num_rows, dtype=np.int64)
        start += rb.num_rows


def _frame(table: pa.Table, rows: np.ndarray, src: _Source) -> Any:
    """One batch as the GeoDataFrame ``geopandas.read_parquet`` would give for its rows."""
    import geopandas as gpd
    import pandas as pd

    geoms = shapely.from_wkb(_wkb(table.column(src.geometry)))
    if src.index_range is not None:  # only the geometry was read
        start, step = src.index_range
        attrs = pd.DataFrame(index=pd.Index(start + rows * step))
    else:  # the id column, or the index columns to_pandas makes the index of
        attrs = table.drop_columns([src.geometry]).to_pandas()
    return gpd.GeoDataFrame(attrs, geometry=geoms, crs=src.crs)


def _output_schema(first: pa.Schema, src: _Source, file_schema: pa.Schema) -> pa.Schema:
    """The output's schema: the first batch's, but an id column whose ids were all missing
    there (typed null by Arrow, a type no later batch's ids cast to) typed as in the file."""
    source = src.id_column or (src.columns[1] if len(src.columns) == 2 else None)
    i = first.get_field_index(src.id_column or "parcel_id")
    if source is None or i < 0 or not pa.types.is_null(first.field(i).type):
        return first
    return first.set(i, first.field(i).with_type(file_schema.field(source).type))


def _write_parquet(frames: Iterator[Any], out: Path, src: _Source,
                   file_schema: pa.Schema) -> None:
    """The frames as row groups of ``out``, which appears only when complete: written to a
    partial file of this call (two runs writing one ``out`` never share one), removed on
    error or Ctrl-C."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"{out.name}.{secrets.token_hex(6)}.partial")
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    empty: pa.Table | None = None  # the first batch without rows
    try:
        for df in frames:
            tab = pa.Table.from_pandas(df, preserve_index=False)
            if len(df):
                if writer is None:
                    schema = _output_schema(tab.schema.remove_metadata(), src, file_schema)
                    writer = pq.ParquetWriter(partial, schema)
                writer.write_table(tab.cast(schema))
            elif empty is None:  # no rows (categorical parcels outside the coverage):
                empty = tab  # pandas' guessed types, the schema only if no batch has rows
            del df, tab
        if writer is None:  # no batch had rows: the first one's empty table
            assert empty is not None  # _source refused a file without parcels
            writer = pq.ParquetWriter(partial, empty.schema.remove_metadata())
            writer.write_table(empty.replace_schema_metadata())
        writer.close()
        partial.replace(out)
    except BaseException:
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)
        raise


def _past_deadline(limit: float, done: int) -> QueryDeadlineError:
    return QueryDeadlineError(f"streamed query did not finish within its deadline of {limit:g}"
                              f" s ({done} batches done): raise deadline= (CLI: --deadline)")


def stream_zonal_stats(store: _Store, parcels: str | Path, out: str | Path, *,
                       batch_size: int = 50_000, id_column: str | None = None,
                       presorted: bool = False, tmp_dir: str | Path | None = None,
                       **kwargs: Any) -> StreamReport:
    """:meth:`ParcelStore.zonal_stats` over a GeoParquet parcel file of any size and layout,
    in memory set by ``batch_size``, written to the Parquet file ``out`` one row group per
    batch (see the module doc), or to the PostgreSQL table of a ``postgresql://...?table=``
    URL in one transaction (rows of earlier runs with the same keys replaced, as
    :func:`~parcelzarr.query.to_postgis`; a failed or interrupted stream writes nothing).

    ``kwargs`` are those of ``zonal_stats`` (bands, stats, time, ...); ``deadline`` (default
    ``PARCELZARR_DEADLINE``) bounds the whole stream, not each batch. Ids are those of the
    whole file: ``id_column``, fiboa's ``id``, else the stored index or the row number. Ids
    repeated anywhere in the file raise before anything is written, as in the whole query.
    ``presorted=True`` takes the file's own order as the spatial order (batches are
    consecutive rows: no sort, no spill); a file already in Hilbert order is detected and
    read so anyway. The spill (about the size of the geometry and id columns) goes to
    ``tmp_dir`` (default: ``TMPDIR``) and is removed on return, error or Ctrl-C; ``out``
    appears only when complete.

    Raises
    ------
    GeometryError
        ``parcels`` is not a GeoParquet file with WKB geometries, holds no parcels, lacks
        ``id_column``, or its parcel ids repeat.
    QueryDeadlineError
        The stream took longer than ``deadline`` (nothing written).
    ValueError
        ``batch_size`` below 1, ``deadline`` not above 0, ``out`` a ``.geoparquet`` file
        (streaming writes no geometry), ``output="xarray"`` (a cube is not streamed), or
        ``scheduler`` given (stream on one machine; Dask runs take the whole query).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if kwargs.get("scheduler") is not None:
        raise ValueError("stream_zonal_stats runs on this machine: drop scheduler=")
    if kwargs.get("output", "pandas") not in ("pandas", "wide"):
        raise ValueError("stream_zonal_stats writes rows to Parquet: output='pandas' or "
                         f"'wide', not {kwargs['output']!r}")
    postgres = is_postgres_url(out)
    if postgres and kwargs.get("output") == "wide":
        raise ValueError("a PostgreSQL table takes the long rows (id, band, time): drop "
                         "output='wide'")
    if not postgres and Path(out).suffix.lower() == ".geoparquet":
        raise ValueError(f"{Path(out).name}: streaming writes Parquet without the parcel "
                         "geometry, which a .geoparquet file would hold: name the output "
                         ".parquet")
    t0 = _time.perf_counter()
    limit = kwargs.pop("deadline", None)
    limit = _config.deadline() if limit is None else limit  # for the whole stream
    if limit is not None and not limit > 0:
        raise ValueError(f"deadline={limit!r}: give a number of seconds above 0")
    path = str(parcels)
    pf = _open(path)
    src = _source(pf, path, id_column)
    _check_unique_ids(pf, src)
    _release()
    rows = requests = nbytes = n_parcels = n_batches = 0
    spilled: list[int] = []

    def results(batches: Iterator[tuple[pa.Table, np.ndarray]]) -> Iterator[Any]:
        """Each batch's statistics, in batch order."""
        nonlocal rows, requests, nbytes, n_parcels, n_batches
        for table, row_numbers in batches:
            frame = _frame(table, row_numbers, src)
            del table, row_numbers
            left = None
            if limit is not None:
                left = limit - (_time.perf_counter() - t0)
                if left <= 0:
                    raise _past_deadline(limit, n_batches)
            try:
                df = store.zonal_stats(frame, id_column=src.id_column, deadline=left, **kwargs)
            except QueryDeadlineError as exc:  # the stream's deadline, not the batch's
                if limit is None:
                    raise
                raise _past_deadline(limit, n_batches) from exc
            rep = store.last_report
            if rep is not None:
                requests += rep.requests
                nbytes += rep.bytes_read
            n_parcels += len(frame)
            rows += len(df)
            n_batches += 1
            logger.info("batch %d: %d parcels, %d rows", n_batches, len(frame), len(df))
            del frame
            yield df
            del df
            _release()

    with tempfile.TemporaryDirectory(prefix="parcelzarr-stream-", dir=tmp_dir) as tmp:
        batches = _batches(pf, src, batch_size, Path(tmp), presorted, spilled)
        try:
            if postgres:  # one transaction: all batches' rows or none
                to_postgis_batches(results(batches), str(out))
            else:
                _write_parquet(results(batches), Path(out), src, pf.schema_arrow)
        finally:
            batches.close()
    return StreamReport(parcels=n_parcels, batches=n_batches, rows=rows, requests=requests,
                        bytes_read=nbytes, seconds=_time.perf_counter() - t0,
                        spill_bytes=sum(spilled))
