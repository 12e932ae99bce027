"""Query: plan which chunks each parcel needs, fetch each once, reduce per parcel.

Users open a store with :func:`open_store` and call :class:`ParcelStore`'s methods; the
engine's pieces live in the private modules of this package.
"""

from parcelzarr._catalogue import BandInfo

from ._cost import QueryPlan
from ._indices import INDICES
from ._output import write_cube, write_stats
from ._pg_sink import to_postgis
from ._stats import DEFAULT_STATS
from ._store import DEFAULT_MASK_CLASSES, GridInfo, ParcelStore, QueryReport, open_store
from ._stream import StreamReport, stream_zonal_stats

__all__ = [
    "DEFAULT_MASK_CLASSES",
    "DEFAULT_STATS",
    "INDICES",
    "BandInfo",
    "GridInfo",
    "ParcelStore",
    "QueryPlan",
    "QueryReport",
    "StreamReport",
    "open_store",
    "stream_zonal_stats",
    "to_postgis",
    "write_cube",
    "write_stats",
]
