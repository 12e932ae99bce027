"""What a query will cost (pure): the dry-run result and its time and money model.

:func:`estimate` turns counts (band chunks to decode, GET requests, bytes) into seconds and US
dollars with a :class:`CostModel` whose defaults are this project's measurements and Azure's
published price (see :mod:`parcelzarr._config` and docs/scale.md). No I/O here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import parcelzarr._config as _config

__all__ = ["RATE_CHUNK_PX", "CostModel", "GridCost", "QueryPlan", "estimate"]

#: Pixels of the band chunk ``chunk_seconds`` was measured on (256²).
RATE_CHUNK_PX = 256 * 256


@dataclass(frozen=True)
class CostModel:
    """Rates the estimate uses.

    Attributes
    ----------
    chunk_seconds:
        CPU seconds to decode, label and reduce one band chunk of 256² pixels
        (``PARCELZARR_CHUNK_SECONDS``); other chunk sizes in proportion to their pixels.
    requests_per_s:
        GET requests one process completes per second with the default concurrency
        (``PARCELZARR_REQUESTS_PER_S``).
    workers:
        Threads doing the CPU work (``PARCELZARR_WORKERS``).
    get_price_per_10k:
        USD per 10,000 read operations (``PARCELZARR_GET_PRICE``).
    egress_per_gb:
        USD per GB leaving the region (``PARCELZARR_EGRESS_PRICE``); 0 for a query run in the
        store's region.
    """

    chunk_seconds: float
    requests_per_s: float
    workers: int
    get_price_per_10k: float
    egress_per_gb: float

    @classmethod
    def from_config(cls) -> CostModel:
        """The model of the current ``PARCELZARR_*`` settings."""
        return cls(chunk_seconds=_config.chunk_seconds(),
                   requests_per_s=_config.requests_per_s(),
                   workers=_config.default_workers(),
                   get_price_per_10k=_config.get_price(),
                   egress_per_gb=_config.egress_price())


@dataclass(frozen=True)
class GridCost:
    """One grid's share of a query plan."""

    grid: str
    parcels: int
    spatial_chunks: int
    chunks: int
    requests: int
    bytes_read: int
    objects_written: int


@dataclass(frozen=True)
class QueryPlan:
    """What :meth:`ParcelStore.zonal_stats` will read and cost, before a pixel is read.

    Attributes
    ----------
    parcels:
        Parcels asked for.
    chunks:
        Band chunks the query decodes (as ``QueryReport.chunks``).
    requests, bytes_read:
        GET requests (band and mask chunks, written or not) and bytes they return; compare
        with ``QueryReport.requests`` / ``bytes_read``.
    bytes_exact:
        Whether ``bytes_read`` sums every object's size (else it is scaled from a sample).
    seconds:
        Estimated wall time of the query on one process.
    get_cost_usd, egress_usd:
        GET requests and egress at the model's prices.
    plan_seconds:
        What making this plan took (parcels loaded, reprojected, planned; sizes looked up).
    """

    parcels: int
    chunks: int
    requests: int
    bytes_read: int
    bytes_exact: bool
    seconds: float
    get_cost_usd: float
    egress_usd: float
    plan_seconds: float
    grids: tuple[GridCost, ...] = ()
    model: CostModel | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["grids"] = [asdict(g) for g in self.grids]
        return out

    def __str__(self) -> str:
        approx = "" if self.bytes_exact else "~"
        return (
            f"{self.parcels:,} parcels: {self.chunks:,} chunks, {self.requests:,} GET requests, "
            f"{approx}{self.bytes_read / 1e6:,.1f} MB; about {self.seconds:,.1f} s on one "
            f"process; GET requests ${self.get_cost_usd:,.4f}"
            + (f", egress ${self.egress_usd:,.4f}" if self.egress_usd else "")
            + f" (planned in {self.plan_seconds:.2f} s)"
        )


def estimate(*, chunks: float, requests: int, bytes_read: int, model: CostModel
             ) -> tuple[float, float, float]:
    """(seconds, GET USD, egress USD) of a query of ``chunks`` band chunks, counted in
    units of :data:`RATE_CHUNK_PX` pixels (a 512² chunk is 4 of them).

    Fetching and reducing overlap (the engine reduces chunk ``k`` while later ones are in
    flight), so the time is the larger of the CPU time over the workers and the requests at
    the measured request rate.
    """
    cpu = chunks * model.chunk_seconds / max(1, model.workers)
    io = requests / model.requests_per_s
    return (max(cpu, io), requests / 10_000 * model.get_price_per_10k,
            bytes_read / 1e9 * model.egress_per_gb)
