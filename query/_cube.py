"""The shapes of zonal statistics: the long frame, a wide frame and an xvec vector cube.

Pure functions of the long frame :meth:`ParcelStore.zonal_stats` computes (one row per parcel,
band and date) and of the parcels; no I/O.

- ``"pandas"``: the long frame itself.
- ``"wide"``: one row per (parcel, date), one column per band and statistic named
  ``{band}_{stat}`` as exactextract names them (``NDVI_mean``).
- ``"xarray"``: a vector data cube in xvec's convention: dimensions ``geometry`` (indexed by
  an :class:`xvec.GeometryIndex` holding the parcels' CRS, so ``cube.xvec`` works), ``time``
  and ``band``; one variable per statistic (``cube["mean"].sel(band="ndvi")`` is a
  ``(geometry, time)`` array that plots directly); the id column is a coordinate along
  ``geometry`` with an index of its own (``cube.sel(parcel_id=7)``). It round-trips to Zarr
  and netCDF through ``cube.xvec.encode_cf()`` / ``xr.open_dataset(...).xvec.decode_cf()``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import xarray as xr
from pyproj import CRS

__all__ = ["GEOMETRY_DIM", "OUTPUTS", "Output", "check_output", "shape_output", "to_cube",
           "to_wide"]

Output = Literal["pandas", "wide", "xarray"]
OUTPUTS: tuple[str, ...] = get_args(Output)
#: The cube's parcel dimension (xvec's default name for a geometry dimension).
GEOMETRY_DIM = "geometry"
_KEYS = ("band", "time")


def check_output(output: object, *, categorical: bool = False) -> Output:
    """Validate ``output=`` (``"long"`` is an alias of ``"pandas"``, as the CLI spells it)."""
    if output == "long":
        output = "pandas"
    if output not in OUTPUTS:
        raise ValueError(f"output={output!r}: choose one of {', '.join(OUTPUTS)}")
    if categorical and output != "pandas":
        raise ValueError(f"output={output!r} does not take categorical=True (one row per "
                         "class): use output='pandas'")
    return output  # type: ignore[return-value]


def _stat_columns(df: pd.DataFrame, id_name: str) -> list[str]:
    return [c for c in df.columns if c not in (id_name, *_KEYS, "status")]


def _merged_status(values: pd.Series) -> str:
    """One status for a (parcel, date) from its bands': "ok", or the problems, joined."""
    bad = sorted({str(v) for v in values if v != "ok"})
    return "; ".join(bad) if bad else "ok"


def to_wide(df: pd.DataFrame, *, id_name: str) -> pd.DataFrame:
    """One row per (parcel, date) with ``{band}_{stat}`` columns, as exactextract names them.

    Columns: the id, ``time``, then per band (in the order of the long frame) one column per
    statistic, then ``status`` ("ok", or the problems of any band, joined by "; ").
    A (parcel, date) a band lacks (the band was not ingested that date) is NaN there.

    Examples
    --------
    >>> long = pd.DataFrame({"id": [1, 1], "band": ["B04", "B08"],
    ...                      "time": pd.to_datetime(["2024-06-01"] * 2),
    ...                      "mean": [0.1, 0.4], "status": ["ok", "ok"]})
    >>> to_wide(long, id_name="id").columns.tolist()
    ['id', 'time', 'B04_mean', 'B08_mean', 'status']
    """
    stats = _stat_columns(df, id_name)
    bands = list(dict.fromkeys(df["band"]))
    keys = [id_name, "time"]
    order = df[keys].drop_duplicates().reset_index(drop=True)
    if df.empty:
        return pd.DataFrame({c: [] for c in [*keys, *(f"{b}_{s}" for b in bands
                                                      for s in stats), "status"]})
    pivot = df.pivot(index=keys, columns="band", values=stats)
    cols = [(s, b) for b in bands for s in stats]
    pivot = pivot.reindex(columns=pd.MultiIndex.from_tuples(cols))
    pivot.columns = [f"{b}_{s}" for s, b in cols]
    for (s, _), name in zip(cols, pivot.columns, strict=True):
        if pd.api.types.is_integer_dtype(df[s].dtype) and not pivot[name].isna().any():
            pivot[name] = pivot[name].astype(df[s].dtype)  # pivot made it float
    out = order.merge(pivot.reset_index(), on=keys, how="left")
    if "status" in df.columns:
        status = df.groupby(keys, sort=False)["status"].agg(_merged_status).rename("status")
        out = out.merge(status.reset_index(), on=keys, how="left")
    out.attrs = dict(df.attrs)
    return out


def to_cube(df: pd.DataFrame, *, ids: pd.Index, geometry: Sequence[Any] | np.ndarray,
            crs: CRS) -> xr.Dataset:
    """An xvec vector cube of the long frame ``df``.

    Parameters
    ----------
    df:
        The long frame (id column named ``ids.name``, ``band``, ``time``, statistics,
        ``status``).
    ids, geometry, crs:
        Every parcel asked for, in order, with its geometry and the parcels' CRS: the cube's
        ``geometry`` dimension (a parcel without rows is NaN throughout).

    Returns
    -------
    xarray.Dataset
        Dimensions ``(geometry, time, band)``; one variable per statistic (``count`` stays an
        integer when every cell has a value), ``status`` as text ("" where a band has no row
        for a date); coordinates ``geometry`` (xvec ``GeometryIndex`` with ``crs``), the id
        column (with its own index) and ``time``, ``band``.
    """
    import xvec  # noqa: F401  (registers the .xvec accessor)

    id_name = str(ids.name)
    stats = _stat_columns(df, id_name)
    bands = list(dict.fromkeys(df["band"]))
    times = np.unique(df["time"].to_numpy()) if len(df) else np.array([], "datetime64[ns]")
    full = pd.MultiIndex.from_product([ids, times, bands], names=[id_name, "time", "band"])
    table = df.set_index([id_name, "time", "band"]).reindex(full)
    shape = (len(ids), len(times), len(bands))
    data_vars: dict[str, Any] = {}
    for s in stats:
        col = table[s]
        values = col.to_numpy(dtype=np.float64, na_value=np.nan).reshape(shape)
        if s in ("count", "nodata") and not np.isnan(values).any() and \
                pd.api.types.is_integer_dtype(df[s].dtype):
            values = values.astype(np.int64)
        data_vars[s] = ((GEOMETRY_DIM, "time", "band"), values)
    if "status" in table.columns:
        status = table["status"].fillna("").astype(str).to_numpy().reshape(shape)
        data_vars["status"] = ((GEOMETRY_DIM, "time", "band"), status)  # object: any length
    geoms = np.empty(len(ids), dtype=object)
    geoms[:] = list(geometry)
    cube = xr.Dataset(
        data_vars,
        coords={GEOMETRY_DIM: geoms, id_name: (GEOMETRY_DIM, ids.to_numpy()),
                "time": times.astype("datetime64[ns]"), "band": np.asarray(bands, dtype=object)},
    )
    cube = cube.xvec.set_geom_indexes(GEOMETRY_DIM, crs=crs).set_xindex(id_name)
    report = df.attrs.get("parcelzarr")
    if report is not None:
        cube.attrs["parcelzarr_query"] = json.dumps(report, default=str)
    return cube


def shape_output(df: pd.DataFrame, output: Output,
                 parcels: Any = None) -> pd.DataFrame | xr.Dataset:
    """``df`` (the long frame) in the shape ``output`` asks for; ``parcels`` (a
    :class:`~parcelzarr.query.ParcelSet`, needed for ``"xarray"``) gives the cube's
    geometries."""
    if output == "pandas":
        return df
    id_name = str(df.columns[0])
    if output == "wide":
        return to_wide(df, id_name=id_name)
    if parcels is None:
        raise ValueError("output='xarray' needs the parcels")
    return to_cube(df, ids=parcels.ids, geometry=parcels.geometry, crs=parcels.crs)
