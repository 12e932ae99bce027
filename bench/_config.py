"""What one benchmark run does: scenario sizes, latencies, samples per approach.

Two modes: ``full`` (a DeWitt-County-sized parcel set on a full 10980² Sentinel-2 tile) and
``quick`` (a 1024² scene with ~300 parcels, a smoke test for CI). Approaches that are too slow
to run over every parcel are timed on a sample (the first ``n`` parcels in file order, which
keeps the spatial locality a real loop over a parcel file has) and extrapolated; the report
says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

__all__ = ["APPROACHES", "Approach", "BenchConfig", "config_for"]


class Approach(StrEnum):
    """Approach names, exactly as they appear in results.json."""

    TILE_PER_PARCEL = "tile-download-per-parcel"
    TILE_CACHED = "tile-download-cached"
    GDAL = "gdal-vsiaz"
    GDAL_THREADS = "gdal-vsiaz-threads"
    PZ_READ_LOOP = "parcelzarr-read-loop"
    PZ_READ_COLD = "parcelzarr-read-cold"
    PZ_BATCH = "parcelzarr-batch"
    GDAL_TIMESERIES = "gdal-vsiaz-timeseries"
    PZ_TIMESERIES = "parcelzarr-timeseries"
    PZ_COVERAGE = "parcelzarr-coverage"
    PZ_ONE_DATE = "parcelzarr-one-date"
    EE_LOCAL = "exactextract-local"
    EE_VSIAZ = "exactextract-vsiaz"
    FLOOR = "floor"
    FLOOR_COVERAGE = "floor-coverage"
    FLOOR_TIMESERIES = "floor-timeseries"

    @property
    def timeseries(self) -> bool:
        """Whether the approach reads the time-series store's parcels (else the county)."""
        return self in (Approach.GDAL_TIMESERIES, Approach.PZ_TIMESERIES,
                        Approach.PZ_ONE_DATE, Approach.FLOOR_TIMESERIES)

    @property
    def weighted(self) -> bool:
        """Whether the statistics are coverage-weighted (exactextract's rule)."""
        return self in (Approach.PZ_COVERAGE, Approach.EE_LOCAL, Approach.EE_VSIAZ,
                        Approach.FLOOR_COVERAGE)

    @property
    def floor(self) -> bool:
        """Whether the approach is a floor (the bound, not a baseline users would pick)."""
        return self in (Approach.FLOOR, Approach.FLOOR_COVERAGE, Approach.FLOOR_TIMESERIES)

    @property
    def reference(self) -> Approach:
        """The parcelzarr approach this one is compared against (results and ratios)."""
        if self.timeseries:
            return Approach.PZ_TIMESERIES
        return Approach.PZ_COVERAGE if self.weighted else Approach.PZ_BATCH


#: Run order within one latency: the parcelzarr references first, so results can be checked.
APPROACHES: tuple[Approach, ...] = (
    Approach.PZ_BATCH,
    Approach.PZ_COVERAGE,
    Approach.FLOOR,
    Approach.FLOOR_COVERAGE,
    Approach.EE_LOCAL,
    Approach.EE_VSIAZ,
    Approach.PZ_READ_LOOP,
    Approach.PZ_READ_COLD,
    Approach.TILE_PER_PARCEL,
    Approach.TILE_CACHED,
    Approach.GDAL,
    Approach.GDAL_THREADS,
    Approach.PZ_TIMESERIES,
    Approach.PZ_ONE_DATE,
    Approach.FLOOR_TIMESERIES,
    Approach.GDAL_TIMESERIES,
)


@dataclass(frozen=True)
class BenchConfig:
    """Parameters of one run.

    Attributes
    ----------
    mode:
        ``"full"`` or ``"quick"``.
    size:
        Edge of the single-date scene in 10 m pixels.
    n_parcels:
        Parcels generated (over ``min(1050 km², 80 % of the scene)``).
    ts_size:
        Edge in pixels of the time-series sub-area (centred on the parcels).
    n_dates:
        Dates in the time series.
    latencies_ms:
        Proxy delays to run with.
    samples:
        Parcels timed per approach when not all (``None`` or absent: all parcels).
    threads:
        Thread-pool size of the ``*-threads`` / time-series GDAL approaches.
    seed:
        Seed of the synthetic data.
    chunk_size, inner_chunk:
        Object edge of both stores and, below it, the edge of the chunks inside each object
        (a shard), as ``pz.ingest(chunk_size=..., inner_chunk=...)``; ``None``: the ingest
        default.
    repeats, repeat_budget_s:
        Each approach runs up to ``repeats`` times, but a further run only starts while its
        runs so far took less than ``repeat_budget_s`` in total; the fastest run is reported
        (best of N damps noise from other load on the machine).
    """

    mode: Literal["full", "quick"]
    size: int
    n_parcels: int
    ts_size: int
    n_dates: int
    latencies_ms: tuple[float, ...] = (0.0, 20.0)
    samples: dict[str, int] = field(default_factory=dict)
    threads: int = 8
    seed: int = 0
    repeats: int = 1
    repeat_budget_s: float = 40.0
    chunk_size: int | None = None
    inner_chunk: int | None = None

    def sample(self, approach: Approach, n_available: int) -> int:
        """How many parcels ``approach`` is timed on (at most ``n_available``)."""
        n = self.samples.get(approach.value)
        return n_available if n is None else min(n, n_available)


def config_for(mode: Literal["full", "quick"], *, latencies_ms: tuple[float, ...]) -> BenchConfig:
    """The configuration of ``mode`` with the given proxy delays."""
    if mode == "quick":
        return BenchConfig(
            mode="quick", size=1024, n_parcels=300, ts_size=512, n_dates=12,
            latencies_ms=latencies_ms,
            samples={Approach.TILE_PER_PARCEL.value: 3, Approach.GDAL.value: 100,
                     Approach.PZ_READ_LOOP.value: 100, Approach.PZ_READ_COLD.value: 50},
        )  # fmt: skip
    return BenchConfig(
        mode="full", size=10980, n_parcels=10_297, ts_size=2048, n_dates=12,
        latencies_ms=latencies_ms,
        samples={Approach.TILE_PER_PARCEL.value: 4, Approach.PZ_READ_LOOP.value: 2000,
                 Approach.PZ_READ_COLD.value: 300},
        repeats=3,
    )  # fmt: skip
