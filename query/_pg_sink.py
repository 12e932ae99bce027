"""Results to PostgreSQL: the long table of :meth:`ParcelStore.zonal_stats` in
``postgresql://...?table=NAME``.

The table is created on first use (one column per result column) with a unique index on
(id, band, time[, class]). A write replaces the rows of the (parcel, band, time) triples it
brings: the new rows are copied into a temporary table, earlier rows with the same keys are
deleted and the new ones inserted, in one transaction under a table lock, so a re-run never
duplicates rows and a reader never sees a half-written result.

A GeoDataFrame (``write_stats(..., geometry=True)``, CLI ``--geometry``) keeps its geometry
as a PostGIS ``geometry`` column in the frame's CRS (its EPSG code as SRID), with a GiST
index, so the table maps and joins spatially as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely

from ._pg import PgTarget, connect, parse_pg_url, psycopg, quoted_table

__all__ = ["to_postgis", "to_postgis_batches"]

logger = logging.getLogger(__name__)


def _srid(df: pd.DataFrame) -> int:
    """The SRID of a GeoDataFrame's CRS (its EPSG code; 0 when it has none)."""
    crs = df.crs if isinstance(df, gpd.GeoDataFrame) else None
    return (crs.to_epsg() or 0) if crs is not None else 0


def _geometry_column(df: pd.DataFrame) -> str | None:
    """The active geometry column of a GeoDataFrame, else None."""
    if isinstance(df, gpd.GeoDataFrame) and df.active_geometry_name in df.columns:
        return str(df.active_geometry_name)
    return None


def _sql_type(series: pd.Series, srid: int = 0) -> str:
    if isinstance(series, gpd.GeoSeries) or isinstance(series.dtype, gpd.array.GeometryDtype):
        return f"geometry(Geometry, {int(srid)})"
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_integer_dtype(series):
        return "bigint"
    if pd.api.types.is_float_dtype(series):
        return "double precision"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "timestamp"
    return "text"


def _csv(frame: pd.DataFrame) -> bytes:
    """``frame`` as headerless CSV for COPY: NaN and None empty (NULL), floats in their
    shortest round-trip form, times ISO, geometries hex EWKB with the SRID (PostGIS' text
    input). Arrow's writer is ~15x faster than pandas'."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    geom = _geometry_column(frame)
    if geom is not None:
        srid = _srid(frame)
        values = shapely.set_srid(frame[geom].to_numpy(), srid)
        frame = pd.DataFrame(frame).assign(**{geom: shapely.to_wkb(
            values, hex=True, include_srid=True)})

    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed-type object column: as text
        table = pa.Table.from_pandas(frame.astype({c: str for c in frame.columns
                                                   if frame[c].dtype == object}),
                                     preserve_index=False)
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False))
    return bytes(sink.getvalue().to_pybytes())


def _existing_columns(cur: Any, target: PgTarget) -> list[str] | None:
    cur.execute("SELECT to_regclass(%s)", (quoted_table(target).as_string(cur),))
    row = cur.fetchone()
    if row is None or row[0] is None:
        return None
    cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                "AND NOT attisdropped ORDER BY attnum", (quoted_table(target).as_string(cur),))
    return [r[0] for r in cur.fetchall()]


def to_postgis(df: pd.DataFrame, url: str, *, id_column: str | None = None) -> int:
    """Write the statistics ``df`` to the table of ``url``; returns the rows written.

    ``df`` is :meth:`ParcelStore.zonal_stats`'s long frame: the id column (``id_column``,
    default the first column), ``band``, ``time`` and statistics (plus ``class`` for
    categorical results). Rows already in the table for the same (id, band, time) are
    replaced. Times are written as ``timestamp`` (UTC, no time zone). A GeoDataFrame's
    geometry becomes a PostGIS ``geometry`` column (SRID: its CRS's EPSG code) with a GiST
    index.

    Raises
    ------
    DatabaseError
        The server cannot be reached, refuses the credentials or the write.
    ValueError
        ``url`` has no ``?table=``, ``df`` lacks the key columns or has columns the
        existing table does not have.
    """
    return to_postgis_batches([df], url, id_column=id_column)


def _check_frame(df: pd.DataFrame, keys: list[str], unique: list[str]) -> None:
    missing = [k for k in keys if k not in df.columns]
    if missing:
        raise ValueError(f"the results lack column(s) {missing}: write the frame "
                         "zonal_stats returns (output='pandas')")
    if df.duplicated(unique).any():
        raise ValueError(f"the results repeat some ({', '.join(unique)}): one row per key")


def to_postgis_batches(frames: Iterable[pd.DataFrame], url: str, *,
                       id_column: str | None = None) -> int:
    """:func:`to_postgis` of the rows of several frames (a streamed query's batches, which
    may be computed while this runs), in **one** transaction: the table holds every frame's
    rows, replacing earlier rows of the same keys, or, if any frame or the write fails
    (Ctrl-C included), exactly what it held before. Frames after the first must have its
    columns; rows repeated across frames fail the write (the table's unique index).

    The table is created from the first frame with rows (an empty frame's column types are
    pandas' guesses), or from the first frame if none has rows. The table is locked against
    other writers (not readers) from the first frame to the commit.
    """
    sql = psycopg().sql
    target = parse_pg_url(url)
    if target.table is None:
        raise ValueError(f"{target.shown}: results go to a table: use ?table=NAME, not ?sql=")
    table = quoted_table(target)
    first: pd.DataFrame | None = None  # the frame the table's columns come from
    columns: list[str] = []
    keys: list[str] = []
    unique: list[str] = []
    replaced = written = 0
    with connect(target, "cannot write results to") as conn, conn.cursor() as cur:

        def set_up(df: pd.DataFrame) -> None:
            nonlocal columns, keys, unique
            name = id_column or str(df.columns[0])
            keys = [name, "band", "time"]
            unique = [*keys, "class"] if "class" in df.columns else keys
            _check_frame(df, keys, unique)
            columns = [str(c) for c in df.columns]
            ident = [sql.Identifier(c) for c in columns]
            existing = _existing_columns(cur, target)
            if existing is None:
                cur.execute(sql.SQL("CREATE TABLE {} ({})").format(table, sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(c),
                                            sql.SQL(_sql_type(df[c], _srid(df))))
                    for c in columns)))
            else:
                extra = [c for c in columns if c not in existing]
                if extra:
                    raise ValueError(
                        f"table {target.shown} has no column(s) {extra} (it has {existing}): "
                        "write to a new table, or ask for the statistics it holds")
            _, tname = target.table  # type: ignore[misc]
            cur.execute(sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})").format(
                sql.Identifier(f"{tname}_pz_key"[:63]), table,
                sql.SQL(", ").join(sql.Identifier(c) for c in unique)))
            geom = _geometry_column(df)
            if geom is not None:
                cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gist ({})"
                                    ).format(sql.Identifier(f"{tname}_pz_geom"[:63]), table,
                                             sql.Identifier(geom)))
            cur.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(table))
            cur.execute(sql.SQL("CREATE TEMP TABLE pz_new ON COMMIT DROP AS "
                                "SELECT {} FROM {} WITH NO DATA").format(
                                    sql.SQL(", ").join(ident), table))

        def copy_in(df: pd.DataFrame) -> None:
            if [str(c) for c in df.columns] != columns:
                raise ValueError(f"a batch's columns {list(map(str, df.columns))} differ from "
                                 f"the first batch's {columns}")
            _check_frame(df, keys, unique)
            ident = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
            with cur.copy(sql.SQL("COPY pz_new ({}) FROM STDIN (FORMAT csv)").format(
                    ident)) as copy:
                copy.write(_csv(df))

        empty: pd.DataFrame | None = None  # the first frame, while none has rows
        for df in frames:
            if first is None:
                if len(df) == 0:  # pandas' guessed types: set up from a frame with rows
                    empty = df if empty is None else empty
                    continue
                first = df
                set_up(df)
            copy_in(df)
        if first is None:  # no frame had rows: the table as the first frame makes it
            if empty is None:
                return 0
            set_up(empty)
        ident = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        cur.execute("ANALYZE pz_new")  # row estimates for the delete's join
        match = sql.SQL(" AND ").join(
            sql.SQL("t.{c} = n.{c}").format(c=sql.Identifier(k)) for k in keys)
        cur.execute(sql.SQL("DELETE FROM {} t USING (SELECT DISTINCT {} FROM pz_new) n "
                            "WHERE {}").format(table, sql.SQL(", ").join(
                                sql.Identifier(k) for k in keys), match))
        replaced = max(int(cur.rowcount), 0)
        cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM pz_new").format(
            table, ident, ident))
        written = int(cur.rowcount)
    logger.info("%d rows -> %s (%d earlier rows replaced)", written, target.shown, replaced)
    return written
