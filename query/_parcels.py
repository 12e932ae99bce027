"""Normalise parcels given by the user into geometries with ids and a CRS."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError

from parcelzarr.errors import GeometryError, UnknownCRSError, plain

from ._pg import is_postgres_url
from ._pg_parcels import read_postgis_parcels

__all__ = ["ParcelSet", "load_parcels"]

logger = logging.getLogger(__name__)

ParcelsLike = Any  # GeoDataFrame | GeoSeries | shapely geometry | path


@dataclass(frozen=True)
class ParcelSet:
    """Parcels ready for planning.

    Attributes
    ----------
    ids:
        Parcel ids (one per geometry), as a pandas Index named after the id column.
    geometry:
        Shapely (multi)polygons in ``crs``; empty geometries stay (they give count 0).
    crs:
        Their CRS.
    repaired:
        How many invalid geometries were repaired with ``make_valid``.
    unusable:
        Per parcel: True where the geometry could not be used (non-finite coordinates, or
        beyond repair); it is an empty polygon in ``geometry``. None: all usable.
    """

    ids: pd.Index
    geometry: np.ndarray
    crs: CRS
    repaired: int = 0
    unusable: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def to_crs(self, crs: CRS) -> np.ndarray:
        """The geometries in ``crs``.

        A parcel that does not project into ``crs`` (its coordinates become infinite, e.g. a
        field in Japan on a UTM zone of Europe) comes back empty: it lies outside any grid in
        that CRS and gets count 0 there.
        """
        if crs == self.crs:
            return self.geometry
        out = np.asarray(gpd.GeoSeries(self.geometry, crs=self.crs).to_crs(crs).values,
                         dtype=object)
        out, lost = finite_geometries(out)
        if lost.any():  # e.g. parcels given in the wrong CRS
            logger.warning("%d parcel(s) cannot be projected to %s (coordinates become "
                           "infinite): check the parcels' CRS", int(lost.sum()), crs.name)
        return out


def finite_geometries(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``geoms`` with every geometry holding a NaN or infinite coordinate replaced by an empty
    polygon, and the mask of those replaced (they cannot be rasterised, repaired or
    reprojected: GEOS raises on them)."""
    coords, which = shapely.get_coordinates(geoms, return_index=True)
    bad = np.zeros(len(geoms), dtype=bool)
    bad[which[~np.isfinite(coords).all(axis=1)]] = True
    if bad.any():
        geoms = geoms.copy()
        geoms[bad] = shapely.Polygon()
    return geoms, bad


def _crs(value: Any, what: str) -> CRS:
    try:
        return CRS.from_user_input(value)
    except CRSError as exc:
        raise UnknownCRSError(f"{what}: CRS {value!r} is not understood ({exc})") from exc


def _read_file(path: str, layer: str | None) -> gpd.GeoDataFrame:
    """Read a parcels file; ``layer`` picks one layer of a multi-layer file (GeoPackage, ...).

    Without ``layer`` the file's default (first) layer is read; when it is empty while other
    layers hold features, that is an error listing the layers, never an empty result.
    """
    import pyogrio

    if not os.path.exists(path) and "://" not in path:
        raise GeometryError(f"parcels file {path!r} does not exist")
    try:
        if path.lower().endswith((".parquet", ".geoparquet")):
            if layer is not None:
                raise GeometryError(f"{path!r} is GeoParquet, which has no layers: drop "
                                    f"--layer {layer} (Python layer=)")
            frame = gpd.read_parquet(path)
            if len(frame) == 0:
                raise GeometryError(f"parcels file {path!r} holds no parcels")
            if _fiboa_metadata(path):
                frame.attrs["fiboa"] = True
            return frame
        names = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
        if layer is not None and layer not in names:
            raise GeometryError(f"parcels file {path!r} has no layer {layer!r}; its layers: "
                                f"{_layer_list(path, names)}")
        chosen = layer if layer is not None else (names[0] if names else None)
        frame = gpd.read_file(path, layer=chosen) if chosen is not None else gpd.read_file(path)
    except GeometryError:
        raise
    except Exception as exc:  # pyogrio raises several types; report them uniformly
        raise GeometryError(f"cannot read parcels from {path!r}: {exc}") from exc
    if len(frame) == 0:
        if layer is None and len(names) > 1:
            raise GeometryError(
                f"the default layer {chosen!r} of {path!r} holds no parcels; choose a layer "
                f"with --layer NAME (Python layer=): {_layer_list(path, names)}")
        where = f" (layer {chosen!r})" if len(names) > 1 else ""
        raise GeometryError(f"parcels file {path!r}{where} holds no parcels")
    if layer is None and len(names) > 1:
        logger.info("%s has %d layers; reading the default layer %r (choose with layer=)",
                    path, len(names), chosen)
    return frame


def _fiboa_metadata(path: str) -> bool:
    """Whether a GeoParquet file carries fiboa collection metadata (the ``fiboa`` key of
    fiboa 0.x, or a vecorel ``collection`` naming a fiboa schema)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return b"fiboa" in meta or b"fiboa" in meta.get(b"collection", b"")


def follows_fiboa(frame: pd.DataFrame) -> bool:
    """Whether parcels follow the fiboa schema: an ``id`` column, and a ``fiboa_version``
    column or fiboa metadata in the file they came from."""
    return "id" in frame.columns and ("fiboa_version" in frame.columns
                                      or bool(frame.attrs.get("fiboa")))


def _layer_list(path: str, names: list[str]) -> str:
    """``"a (0 features), b (100 features)"``."""
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    parts = []
    for n in names:
        try:
            count = int(pyogrio.read_info(path, layer=n).get("features", -1))
        except (DataLayerError, DataSourceError):  # still listed, without a count
            count = -1
        parts.append(f"{n} ({count} features)" if count >= 0 else n)
    return ", ".join(parts)


def _check_degrees(geoms: np.ndarray, crs: CRS) -> None:
    """Parcels in a geographic CRS must have longitudes and latitudes: when every parcel lies
    beyond ±360° / ±90° the data is in another CRS than it says (a clear error, not a batch
    of empty results)."""
    if not crs.is_geographic or not len(geoms):
        return
    units = {a.unit_name.lower() for a in crs.axis_info[:2]}
    if not units <= {"degree", "degrees"}:
        return
    with np.errstate(invalid="ignore"):
        b = shapely.bounds(geoms[~shapely.is_empty(geoms)])
    if not b.size:
        return
    beyond = (np.abs(b[:, [1, 3]]).max(axis=1) > 90 + 1e-9) | (
        np.abs(b[:, [0, 2]]).max(axis=1) > 360 + 1e-9)
    if not beyond.all():  # a few stray parcels: each gets status "outside", the batch goes on
        return
    xmin, ymin = np.nanmin(b[:, 0]), np.nanmin(b[:, 1])
    xmax, ymax = np.nanmax(b[:, 2]), np.nanmax(b[:, 3])
    raise GeometryError(
        f"parcels say {crs.name} (degrees) but their coordinates span x {xmin:.6g} to "
        f"{xmax:.6g}, y {ymin:.6g} to {ymax:.6g}, beyond ±180°/±90°: they are in another "
        "CRS; set the right one (gdf.set_crs(..., allow_override=True), or crs=)"
    )


def load_parcels(
    parcels: ParcelsLike,
    *,
    crs: Any = None,
    id_column: str | None = None,
    layer: str | None = None,
) -> ParcelSet:
    """Turn a GeoDataFrame, GeoSeries, shapely geometry (or list of them), a file path or a
    PostGIS URL (``postgresql://...?table=NAME`` or ``?sql=SELECT...``, see
    :mod:`._pg_parcels`) into a :class:`ParcelSet`.

    Invalid geometries are repaired with ``make_valid`` (keeping their polygonal part), with
    one warning giving the count. ``layer`` names the layer of a multi-layer file. Ids come
    from ``id_column``; without it, from the ``id`` column of parcels that follow the fiboa
    schema (:func:`follows_fiboa`), else from the index (named ``parcel_id``).

    Raises
    ------
    GeometryError
        The file cannot be read or holds no parcels (or its default layer is empty while
        others are not), has no CRS and none was given, coordinates do not fit the CRS, the id
        column is missing or not unique, or geometries are not polygons.
    UnknownCRSError
        The CRS cannot be parsed.
    TypeError
        ``layer`` given with parcels that are not a file.
    """
    if crs is not None:
        crs = _crs(crs, "crs")
    if is_postgres_url(parcels):
        if layer is not None:
            raise TypeError("layer= names a layer of a parcels file; a PostgreSQL URL names "
                            "its table with ?table=NAME")
        parcels, id_column = read_postgis_parcels(parcels, id_column=id_column)
    elif isinstance(parcels, (str, os.PathLike)):
        parcels = _read_file(os.fspath(parcels), layer)
    elif layer is not None:
        raise TypeError("layer= names a layer of a parcels file; parcels given as "
                        f"{type(parcels).__name__} have none")
    if isinstance(parcels, shapely.Geometry):
        parcels = gpd.GeoSeries([parcels], crs=crs)
    elif isinstance(parcels, (list, tuple)) and all(
        isinstance(g, shapely.Geometry) for g in parcels
    ):
        parcels = gpd.GeoSeries(list(parcels), crs=crs)
    if isinstance(parcels, gpd.GeoDataFrame):
        frame = parcels
        series = frame.geometry
    elif isinstance(parcels, gpd.GeoSeries):
        frame = None
        series = parcels
    else:
        raise TypeError(
            "parcels must be a GeoDataFrame, GeoSeries, shapely geometry, list of geometries or "
            f"a path to a file GeoPandas reads; got {type(parcels).__name__}"
        )
    source_crs = series.crs
    if source_crs is None:
        if crs is None:
            raise GeometryError(
                "parcels have no CRS: set one (gdf.set_crs('EPSG:4326')) or pass crs=..."
            )
        source_crs = crs
    elif crs is not None and crs != _crs(source_crs, "parcels"):
        raise GeometryError(f"parcels are in {source_crs} but crs={crs!r} was given")
    the_crs = _crs(source_crs, "parcels")

    if id_column is None and frame is not None and follows_fiboa(frame):
        logger.info("parcels follow the fiboa schema: ids from their 'id' column")
        id_column = "id"
    if id_column is not None:
        if frame is None or id_column not in frame.columns:
            raise GeometryError(
                f"id column {id_column!r} is not among the parcel columns "
                f"{[] if frame is None else [c for c in frame.columns if c != frame.geometry.name]}"
            )
        ids = pd.Index(frame[id_column].to_numpy(), name=id_column)
    else:
        ids = pd.Index(series.index.to_numpy(), name="parcel_id")
    if not ids.is_unique:
        dup = plain(ids[ids.duplicated()][0])
        raise GeometryError(
            f"parcel ids ({ids.name}) are not unique (e.g. {dup!r}): pass id_column= naming a "
            "unique column"
        )

    geoms = np.asarray(series.values, dtype=object)
    geoms = np.where(pd.isna(geoms), shapely.Polygon(), geoms)
    types = shapely.get_type_id(geoms)
    bad = ~np.isin(types, (3, 6)) & ~shapely.is_empty(geoms)  # Polygon, MultiPolygon
    if bad.any():
        kinds = sorted({shapely.get_type_id(g) for g in geoms[bad]})
        names = {0: "Point", 1: "LineString", 2: "LinearRing", 4: "MultiPoint",
                 5: "MultiLineString", 7: "GeometryCollection"}
        raise GeometryError(
            f"{int(bad.sum())} parcel geometries are not polygons "
            f"({', '.join(names.get(k, str(k)) for k in kinds)}); e.g. parcel "
            f"{plain(ids[int(np.flatnonzero(bad)[0])])!r}. Buffer points/lines first."
        )
    geoms, unusable = finite_geometries(geoms)
    _check_degrees(geoms, the_crs)
    invalid = ~shapely.is_valid(geoms)
    repaired = int(invalid.sum())
    if repaired:
        fixed = _make_valid(geoms[invalid])
        unusable[np.flatnonzero(invalid)[shapely.is_missing(fixed)]] = True
        fixed = np.where(shapely.is_missing(fixed), shapely.Polygon(), fixed)
        # keep only the polygonal part of what make_valid returns
        polys = [
            shapely.union_all([p for p in shapely.get_parts(g) if shapely.get_type_id(p) in (3, 6)])
            for g in fixed
        ]
        geoms = geoms.copy()
        geoms[invalid] = polys
        warnings.warn(
            f"{repaired} invalid parcel geometries were repaired with make_valid",
            UserWarning,
            stacklevel=3,
        )
    if unusable.any():
        logger.warning("%d parcel(s) have unusable geometries (non-finite coordinates or "
                       "beyond repair): they get count 0 and status 'invalid geometry'",
                       int(unusable.sum()))
    return ParcelSet(ids=ids, geometry=geoms, crs=the_crs, repaired=repaired,
                     unusable=unusable if unusable.any() else None)


def _make_valid(geoms: np.ndarray) -> np.ndarray:
    """``make_valid`` of each geometry; None where GEOS cannot repair it."""
    try:
        return np.asarray(shapely.make_valid(geoms), dtype=object)
    except shapely.errors.GEOSException:
        out = np.empty(len(geoms), dtype=object)
        for i, g in enumerate(geoms):
            try:
                out[i] = shapely.make_valid(g)
            except shapely.errors.GEOSException:
                out[i] = None
        return out
