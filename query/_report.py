"""What a query cost: :class:`QueryReport`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["QueryReport"]


@dataclass
class QueryReport:
    """What a query cost.

    Attributes
    ----------
    parcels, rows:
        Parcels asked for and rows returned.
    chunks:
        Band chunks the plan reads (each once): spatial chunks x bands x time blocks.
    requests, bytes_read:
        GET requests that succeeded and their bytes, counted at the store (all of them: band
        chunks, SCL mask chunks); failed attempts are in ``retries``.
    seconds:
        Wall time of the whole call (loading parcels, planning, fetching, reducing).
    grids:
        Grids read.
    retries:
        Transient errors retried.
    """

    parcels: int
    rows: int
    chunks: int
    requests: int
    bytes_read: int
    seconds: float
    grids: list[str] = field(default_factory=list)
    retries: int = 0

    @property
    def parcels_per_s(self) -> float:
        return self.parcels / self.seconds if self.seconds > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"parcels_per_s": self.parcels_per_s}

    def __str__(self) -> str:
        return (
            f"{self.parcels} parcels in {self.seconds:.2f} s "
            f"({self.parcels_per_s:,.0f} parcels/s); "
            f"{self.chunks} chunks, {self.requests} requests, {self.bytes_read / 1e6:.1f} MB read"
            + (f", {self.retries} retries" if self.retries else "")
        )
