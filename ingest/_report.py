"""What an ingest did: the report ``pz.ingest`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["IngestReport"]


@dataclass(frozen=True)
class IngestReport:
    """What an ingest did."""

    store: str
    sources_written: int
    sources_skipped: int
    grids: tuple[str, ...]
    tasks: int
    pixels: int
    bytes_written: int
    seconds: float
    skipped: tuple[str, ...] = field(default=(), repr=False)
    raw_bytes: int = 0
    recovered: tuple[str, ...] = ()

    @property
    def mb_per_s(self) -> float:
        """Raw (uncompressed) pixel megabytes written per second."""
        return self.raw_bytes / 1e6 / self.seconds if self.seconds else 0.0

    def __str__(self) -> str:
        text = self._summary()
        if self.recovered:
            text += "; recovered from an interrupted run: " + "; ".join(self.recovered)
        return text

    def _summary(self) -> str:
        if not self.sources_written:
            return (
                f"{self.store}: nothing to do, {self.sources_skipped} source(s) already ingested"
            )
        return (
            f"{self.store}: wrote {self.sources_written} source(s) into {', '.join(self.grids)} "
            f"({self.tasks} regions, {self.pixels / 1e6:.1f} Mpx, {self.raw_bytes / 1e6:.1f} MB "
            f"raw, {self.bytes_written / 1e6:.1f} MB stored) in {self.seconds:.1f} s "
            f"({self.mb_per_s:.1f} MB/s raw); "
            f"skipped {self.sources_skipped} already ingested"
        )
