"""Parcels from PostGIS: ``postgresql://...?table=NAME`` or ``?sql=SELECT...``.

The query runs in a read-only transaction; the geometry column is found by its type
(``?geometry=COL`` picks one of several), the CRS from the geometries' SRID. Rows of a
database query have no stable order, so parcels need an id: ``id_column``, else the
table's single-column primary key; without either the read fails rather than key results
by row number.
"""

from __future__ import annotations

import logging
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely

from parcelzarr.errors import GeometryError

from ._pg import PgTarget, connect, parse_pg_url, psycopg, quoted_table

__all__ = ["read_postgis_parcels"]

logger = logging.getLogger(__name__)


def _primary_key(cur: Any, target: PgTarget) -> list[str]:
    cur.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
        (quoted_table(target).as_string(cur),))
    return [r[0] for r in cur.fetchall()]


def read_postgis_parcels(url: str, *, id_column: str | None = None
                         ) -> tuple[gpd.GeoDataFrame, str]:
    """The parcels at ``url`` and the column holding their ids.

    Raises
    ------
    DatabaseError
        The server cannot be reached, refuses the credentials, or the table/query fails.
    GeometryError
        No rows, no (or several, without ``?geometry=``) geometry columns, no SRID, or no
        id column (none given, no single-column primary key).
    """
    sql = psycopg().sql
    target = parse_pg_url(url)
    with connect(target, "cannot read parcels from") as conn, conn.cursor() as cur:
        cur.execute("SET TRANSACTION READ ONLY")
        cur.execute("SELECT to_regtype('geometry')::oid")
        row = cur.fetchone()
        geometry_oid = row[0] if row else None
        if geometry_oid is None:
            raise GeometryError(f"{target.shown}: the database has no PostGIS (CREATE "
                                "EXTENSION postgis) and so no geometry column")
        if target.table is not None:
            query: Any = sql.SQL("SELECT * FROM {}").format(quoted_table(target))
            if id_column is None:
                pk = _primary_key(cur, target)
                if len(pk) == 1:
                    id_column = pk[0]
        else:
            query = target.sql
        cur.execute(query)
        description = cur.description
        if description is None:
            raise GeometryError(f"{target.shown}: the query returns no rows (use a SELECT)")
        names = [d.name for d in description]
        geoms = [d.name for d in description if d.type_code == geometry_oid]
        rows = cur.fetchall()
    if target.geometry is not None:
        if target.geometry not in geoms:
            raise GeometryError(f"{target.shown}: no geometry column {target.geometry!r}; "
                                f"geometry columns: {geoms}")
        geom_col = target.geometry
    elif len(geoms) == 1:
        geom_col = geoms[0]
    else:
        raise GeometryError(
            f"{target.shown}: {'no' if not geoms else 'several'} geometry columns "
            f"({', '.join(geoms) or 'columns: ' + ', '.join(names)}); "
            + ("select one (a PostGIS geometry)" if not geoms
               else "pick one with &geometry=COL"))
    if not rows:
        raise GeometryError(f"{target.shown} holds no parcels")
    if id_column is None:
        raise GeometryError(
            f"{target.shown}: name the parcel id column with --id-column (Python "
            "id_column=): rows of a database query have no stable order"
            + ("" if target.sql else " and the table has no single-column primary key"))
    frame = pd.DataFrame.from_records(rows, columns=names)
    if id_column not in frame.columns:
        raise GeometryError(f"id column {id_column!r} is not among the columns of "
                            f"{target.shown}: {[c for c in names if c != geom_col]}")
    values = shapely.from_wkb(frame[geom_col].to_numpy(), on_invalid="raise")
    srids = {int(s) for s in shapely.get_srid(values[~pd.isna(values)])}
    srids.discard(0)
    if len(srids) != 1:
        raise GeometryError(
            f"{target.shown}: geometry column {geom_col!r} has "
            + ("no SRID: set one (ST_SetSRID)" if not srids
               else f"mixed SRIDs {sorted(srids)}: transform them to one (ST_Transform)"))
    out = gpd.GeoDataFrame(frame.drop(columns=geom_col),
                           geometry=gpd.GeoSeries(values, crs=f"EPSG:{srids.pop()}"))
    logger.info("read %d parcels from %s", len(out), target.shown)
    return out, id_column
