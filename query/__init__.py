"""Query: plan which chunks each parcel needs, fetch each once, reduce per parcel."""

from ._cost import CostModel, GridCost, QueryPlan
from ._coverage import coverage_cells
from ._engine import GridJob, Layer, MaskSource, run_grid
from ._expr import Expression, parse_expression
from ._indices import INDICES, IndexDef
from ._output import write_stats
from ._parcels import ParcelSet, load_parcels
from ._plan import ChunkPlan, overlap_passes, plan_chunks
from ._rasterize import ChunkLabels, label_chunk
from ._select import normalise_bands, select_times
from ._stats import DEFAULT_STATS, Partials, StatSpec, exact_stats, parse_stats
from ._store import DEFAULT_MASK_CLASSES, GridInfo, ParcelStore, QueryReport, open_store
from ._stream import StreamReport, hilbert_key, stream_zonal_stats

__all__ = [
    "DEFAULT_MASK_CLASSES",
    "DEFAULT_STATS",
    "INDICES",
    "ChunkLabels",
    "ChunkPlan",
    "CostModel",
    "Expression",
    "GridCost",
    "GridInfo",
    "GridJob",
    "IndexDef",
    "Layer",
    "MaskSource",
    "ParcelSet",
    "ParcelStore",
    "Partials",
    "QueryPlan",
    "QueryReport",
    "StatSpec",
    "StreamReport",
    "coverage_cells",
    "exact_stats",
    "hilbert_key",
    "label_chunk",
    "load_parcels",
    "normalise_bands",
    "open_store",
    "overlap_passes",
    "parse_expression",
    "parse_stats",
    "plan_chunks",
    "run_grid",
    "select_times",
    "stream_zonal_stats",
    "write_stats",
]
