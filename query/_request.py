"""A zonal-statistics request, normalised once at the public edge.

:func:`zonal_request` checks every argument of :meth:`ParcelStore.zonal_stats` against the
store's catalogue and returns a frozen, picklable :class:`ZonalRequest`: what to compute
(bands, indices and expressions as :class:`Output`), which statistics, which dates, how pixels
count (centre, all touched, coverage weights), the cloud mask and the limits. The execution
(:mod:`._zonal`, :mod:`._distributed`) takes it as it is.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from parcelzarr import _config
from parcelzarr._catalogue import Catalogue
from parcelzarr._sentinel2 import DEFAULT_MASK_CLASSES
from parcelzarr.errors import BandNotFoundError, DateNotFoundError, ReflectanceWarning, plain

from ._composite import check_composite
from ._expr import Expression, parse_expression
from ._indices import INDICES
from ._mask_layer import resolve_mask
from ._ops import check_min_coverage_frac
from ._select import TimeSelection, describe_times, normalise_bands, select_times
from ._stats import StatSpec, parse_stats
from ._weights import check_default_weight, weights_dates

__all__ = ["DEFAULT_MASK_CLASSES", "Output", "ZonalRequest", "select_dates", "zonal_request"]


logger = logging.getLogger(__name__)

#: ``(grid, output name) -> time indices`` of the grid selected for the output.
Dates = dict[tuple[str, str], np.ndarray]


@dataclass(frozen=True)
class Output:
    """One result layer: a band, a named index or an expression, and the bands it reads."""

    name: str
    inputs: tuple[str, ...]
    #: The parsed expression of a band-math output (None for bands and named indices).
    expression: Expression | None = None

    @property
    def is_band(self) -> bool:
        """Whether the output is a stored band as it is."""
        return self.inputs == (self.name,)


@dataclass(frozen=True)
class ZonalRequest:
    """A validated :meth:`ParcelStore.zonal_stats` request (see its parameters)."""

    outputs: tuple[Output, ...]
    stats: StatSpec
    time: TimeSelection = None
    all_touched: bool = False
    coverage: bool = False
    categorical: bool = False
    #: The layer masking pixels (``"SCL"``, or any layer such as ``"CLM"``), or None.
    mask_band: str | None = None
    mask_classes: tuple[int, ...] = DEFAULT_MASK_CLASSES
    #: Per-interval composites (:mod:`._composite`): a pandas offset alias and the
    #: pixel-wise composite, or None.
    interval: str | None = None
    composite: str | None = None
    #: Requests in flight (None: ``PARCELZARR_CONCURRENCY`` where the request runs).
    concurrency: int | None = None
    #: Seconds the query may take (None: no limit).
    deadline: float | None = None
    #: With ``coverage``: pixels covered less than this fraction are left out (0: none).
    min_coverage_frac: float = 0.0
    #: The weighting raster of the ``weighted_*`` statistics (a band, index or expression;
    #: :mod:`._weights`), or None; and the weight of pixels without one (NaN: none).
    weights_band: Output | None = None
    default_weight: float = float("nan")

    @property
    def stat_names(self) -> list[str]:
        """Columns of one result row after ``band`` and ``time``."""
        if self.categorical:
            return ["class", "count", "fraction", "area_m2",
                    *(["weighted_frac"] if self.weights_band is not None else [])]
        return [*self.stats.names, "status"]


def zonal_request(
    catalogue: Catalogue,
    *,
    bands: str | Iterable[str] | None = None,
    indices: str | Iterable[str] | None = None,
    stats: str | Iterable[str],
    time: TimeSelection = None,
    all_touched: bool = False,
    weights: Literal["coverage"] | None = None,
    categorical: bool = False,
    mask: bool | str | None = None,
    mask_classes: Iterable[int] | None = None,
    concurrency: int | None = None,
    deadline: float | None = None,
    min_coverage_frac: float | None = None,
    interval: str | None = None,
    composite: str | None = None,
    weights_band: str | None = None,
    default_weight: float | None = None,
) -> ZonalRequest:
    """Check the arguments of :meth:`ParcelStore.zonal_stats` against ``catalogue``.

    Raises
    ------
    BandNotFoundError
        A band, index or the mask band is not in the store.
    DateNotFoundError
        ``time`` selects no stored date (of an output asked for by name).
    ValueError
        An argument is out of its range.
    """
    mask_band, mask_values = resolve_mask(mask, mask_classes, catalogue.bands)
    interval, composite = check_composite(interval, composite, categorical=categorical)
    spec = parse_stats(("count",) if categorical else stats)
    weighting = _weights_output(catalogue, weights_band, spec, categorical=categorical,
                                interval=interval)
    exclude = tuple(b for b in (mask_band, weighting.name if weighting else None) if b)
    outputs = _outputs(catalogue, bands, indices, exclude=exclude)
    dates = select_dates(catalogue, outputs, time,
                         explicit=bands is not None or bool(indices))
    outputs = [o for o in outputs if any(k[1] == o.name and v.size for k, v in dates.items())]
    _warn_unscaled(catalogue, outputs)
    limit = _config.deadline() if deadline is None else deadline
    if limit is not None and not limit > 0:
        raise ValueError(f"deadline={deadline!r}: give a number of seconds above 0")
    if weights not in (None, "coverage"):
        raise ValueError(f"weights={weights!r}: use None or 'coverage'")
    coverage = weights == "coverage"
    if coverage and all_touched:
        raise ValueError("weights='coverage' already takes every touched pixel: drop "
                         "all_touched=True")
    classes = (tuple(int(c) for c in mask_values) if mask_band is not None
               else DEFAULT_MASK_CLASSES)
    if default_weight is not None and weighting is None:
        raise ValueError("default_weight= is the weight of pixels without one in weights_band="
                         " (CLI --weights-band): give weights_band too")
    return ZonalRequest(
        outputs=tuple(outputs), stats=spec,
        time=time, all_touched=all_touched, coverage=coverage, categorical=categorical,
        mask_band=mask_band, mask_classes=classes, interval=interval, composite=composite,
        concurrency=concurrency, deadline=limit,
        min_coverage_frac=check_min_coverage_frac(min_coverage_frac, coverage=coverage),
        weights_band=weighting, default_weight=check_default_weight(default_weight))


def _weights_output(catalogue: Catalogue, weights_band: str | None, spec: StatSpec, *,
                    categorical: bool, interval: str | None) -> Output | None:
    """The weighting raster ``weights_band`` as an :class:`Output` (a band, an index or an
    expression over bands), checked against the statistics asked for."""
    if weights_band is None:
        if spec.weighted:
            asked = [n for n in spec.names if n.startswith("weighted_")]
            raise ValueError(f"{', '.join(asked)} weigh(s) pixels by a weighting raster: name "
                             "it with weights_band= (CLI --weights-band), a band of the "
                             "store or an expression over bands")
        return None
    if not isinstance(weights_band, str) or not weights_band.strip():
        raise ValueError(f"weights_band={weights_band!r}: give a band name or an expression")
    if not (spec.weighted or categorical):
        raise ValueError(f"weights_band={weights_band!r} weighs the weighted_* statistics "
                         "(weighted_mean, weighted_sum, weighted_stdev, weighted_variance, "
                         "weighted_frac) only: ask for one of them")
    name = weights_band.strip()
    if name in catalogue.bands:
        out = Output(name, (name,))
    elif name.lower() in INDICES:
        out = Output(name.lower(), INDICES[name.lower()].bands)
    elif name.isidentifier():
        raise BandNotFoundError(f"weights_band={name!r}: no such band in the store (it holds "
                                f"{catalogue.bands}), nor an index or expression")
    else:
        expr = parse_expression(name)
        out = Output(expr.text, expr.bands, expr)
    for b in out.inputs:
        catalogue.grids_with(b)
    if interval is not None and weights_dates(catalogue, out.inputs) > 1:
        raise ValueError(f"weights_band={name!r} holds several dates: with interval= "
                         "composites, weigh by a layer of one date (static weights)")
    return out


def _outputs(catalogue: Catalogue, bands: str | Iterable[str] | None,
             indices: str | Iterable[str] | None, *, exclude: tuple[str, ...] = ()
             ) -> list[Output]:
    """An :class:`Output` for each band, index and expression asked for."""
    if isinstance(indices, str):
        indices = [indices]
    index_list = [str(i) for i in (indices or [])]
    available = catalogue.bands
    if bands is None and index_list:
        band_list: list[str] = []
    elif bands is None:
        band_list = [b for b in available if b not in exclude]
    else:
        band_list = normalise_bands(bands, available)
    outputs = [Output(b, (b,)) for b in band_list]
    for item in index_list:
        if item.lower() in INDICES:
            outputs.append(Output(item.lower(), INDICES[item.lower()].bands))
            continue
        if item.isidentifier():
            raise BandNotFoundError(
                f"unknown index {item!r}: use one of {sorted(INDICES)} or an expression "
                "over band names such as '(B08 - B04) / (B08 + B04)'")
        expr = parse_expression(item)
        outputs.append(Output(expr.text, expr.bands, expr))
    for out in outputs:
        for b in out.inputs:
            catalogue.grids_with(b)
    if not outputs:
        raise ValueError(
            "nothing to compute: no band or index was asked for"
            + (f" (the store's only bands are the mask or weights {', '.join(exclude)})"
               if bands is None and exclude and set(available) <= set(exclude) else "")
            + f"; the store holds {available}")
    return outputs


def select_dates(catalogue: Catalogue, outputs: Iterable[Output], time: TimeSelection, *,
                 explicit: bool = False) -> Dates:
    """``(grid, output) -> time indices`` selected by ``time`` at which every band the
    output reads was ingested.

    Raises
    ------
    DateNotFoundError
        Nothing is selected at all, or an output asked for by name (``explicit``) has no
        date in the selection.
    """
    outputs = list(outputs)
    out: Dates = {}
    empty: list[Output] = []
    for o in outputs:
        found = False
        for g in catalogue.holding(o.inputs):
            keep = [int(t) for t in select_times(g.times, time)
                    if all(g.holds(b, int(t)) for b in o.inputs)]
            out[(g.name, o.name)] = np.asarray(keep, dtype=np.int64)
            found = found or bool(keep)
        if not found:
            empty.append(o)
    if empty and (explicit or len(empty) == len(outputs)):
        held = np.unique(np.concatenate([catalogue.times_of(o.inputs) for o in empty]))
        label = ", ".join(o.name if o.is_band else f"{o.name} (reads {', '.join(o.inputs)})"
                          for o in empty)
        what = "" if len(empty) == len(outputs) and not explicit else f" of {label}"
        raise DateNotFoundError(
            f"time {plain(time)!r} matches no stored date{what}: the store holds "
            f"{describe_times(held)}{' for ' + label if what else ''}; choose dates among "
            "them")
    if empty:
        logger.info("no date selected for %s: left out", ", ".join(o.name for o in empty))
    return out


def _warn_unscaled(catalogue: Catalogue, outputs: Iterable[Output]) -> None:
    """Warn when a spectral index reads a band that declares no reflectance scale."""
    for o in outputs:
        if o.name not in INDICES or o.is_band:
            continue
        raw = sorted({b for b in o.inputs for g in catalogue.grids_with(b)
                      if g.bands[b].scale_factor is None})
        if raw:
            warnings.warn(
                f"index {o.name} reads band(s) {', '.join(raw)}, which declare no reflectance "
                "scale: it is computed on the stored values as they are; re-ingest them "
                "with --scale/--offset (Python scale=, offset=), e.g. --scale 0.0001 "
                "--offset -0.1 for Sentinel-2 L2A DNs",
                ReflectanceWarning, stacklevel=4)
