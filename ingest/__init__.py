"""Ingest: discover sources, plan per output region, write parcel-sized chunks, commit.

The package is callable: ``parcelzarr.ingest(sources, store, ...)`` runs :func:`ingest`.
"""

import sys as _sys
import types as _types
from typing import Any as _Any

from ._api import IngestReport, ingest, parse_time
from ._compact import DEFAULT_TIME_CHUNK, CompactReport, compact
from ._names import S2Name, boa_offset, parse_s2_name
from ._plan import BandSpec, GridPlan, IngestPlan, RegionTask, plan_ingest
from ._sources import SourceInfo, discover_sources, expand_sources, inspect_source

__all__ = [
    "DEFAULT_TIME_CHUNK",
    "BandSpec",
    "CompactReport",
    "GridPlan",
    "IngestPlan",
    "IngestReport",
    "RegionTask",
    "S2Name",
    "SourceInfo",
    "boa_offset",
    "compact",
    "discover_sources",
    "expand_sources",
    "ingest",
    "inspect_source",
    "parse_s2_name",
    "parse_time",
    "plan_ingest",
]


class _IngestModule(_types.ModuleType):
    """``parcelzarr.ingest`` is both this package and the function ``pz.ingest(...)``."""

    def __call__(self, *args: _Any, **kwargs: _Any) -> IngestReport:
        return ingest(*args, **kwargs)


_sys.modules[__name__].__class__ = _IngestModule
