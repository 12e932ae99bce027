"""Ingest: discover sources, plan per output region, write parcel-sized chunks, commit.

This folder is the private subpackage ``parcelzarr._ingest``; users call the functions
re-exported at the top level, :func:`parcelzarr.ingest` and :func:`parcelzarr.compact`.
"""

from ._api import ingest
from ._compact import DEFAULT_TIME_CHUNK, CompactReport, compact
from ._report import IngestReport

__all__ = ["DEFAULT_TIME_CHUNK", "CompactReport", "IngestReport", "compact", "ingest"]
