"""parcelzarr: per-parcel satellite analytics from parcel-sized Zarr chunks.

>>> import parcelzarr as pz
>>> pz.ingest("scenes/*_B0[2348]_10m.tif", "stores/county.zarr")   # doctest: +SKIP
>>> store = pz.open_store("stores/county.zarr")                     # doctest: +SKIP
>>> store.zonal_stats("parcels.gpkg", indices=["ndvi"])             # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

from . import errors
from ._ingest import CompactReport, IngestReport, compact, ingest
from .query import ParcelStore, QueryReport, open_store, to_postgis

try:
    __version__ = version("parcelzarr")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "CompactReport",
    "IngestReport",
    "ParcelStore",
    "QueryReport",
    "__version__",
    "compact",
    "errors",
    "ingest",
    "open_store",
    "to_postgis",
]
