"""The ingest manifest: which sources are fully written (makes ingest idempotent)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from parcelzarr.stores import StoreHandle

__all__ = ["MANIFEST_KEY", "Manifest"]

MANIFEST_KEY = "parcelzarr-manifest.json"


@dataclass
class Manifest:
    """Sources written to a store, by ``"{grid}/{band}/{time}/{tile}"``.

    It is written after the data and the metadata of an ingest, so an entry here means the
    source is committed and readable.
    """

    sources: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, handle: StoreHandle) -> Manifest:
        raw = handle.read_json(MANIFEST_KEY) or {}
        return cls(sources=dict(raw.get("sources", {})))

    def fingerprints(self) -> Mapping[str, str]:
        return {k: v["fingerprint"] for k, v in self.sources.items()}

    def record(self, key: str, uri: str, fingerprint: str, band_index: int | None = None
               ) -> None:
        self.sources[key] = {
            "uri": uri,
            "fingerprint": fingerprint,
            "written": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if band_index is not None:
            self.sources[key]["band_index"] = band_index

    def save(self, handle: StoreHandle) -> None:
        handle.write_json(MANIFEST_KEY, {"format": 1, "sources": self.sources})
