"""The ingest manifest: which sources are fully written (makes ingest idempotent)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from parcelzarr.stores import StoreHandle

from ._fingerprint import HASH_PREFIX
from ._sources import SourceInfo

__all__ = ["MANIFEST_KEY", "Manifest"]

logger = logging.getLogger(__name__)

MANIFEST_KEY = "parcelzarr-manifest.json"


@dataclass
class Manifest:
    """Sources written to a store, by ``"{grid}/{band}/{time}/{tile}"``.

    It is written after the data and the metadata of an ingest, so an entry here means the
    source is committed and readable. An entry holds the source's URI, its content
    fingerprint (``"sha256:<hex>"``) and the stamp (size and mtime, or ETag) of the file it
    was hashed from. Entries written before content hashes (fingerprint ``"size:stamp"``)
    stay readable: a source of the same size is taken as the one recorded, and the entry of a
    file at the recorded URI is upgraded to its content hash when the manifest is next saved.
    """

    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    _upgrades: dict[str, SourceInfo] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, handle: StoreHandle) -> Manifest:
        raw = handle.read_json(MANIFEST_KEY) or {}
        return cls(sources=dict(raw.get("sources", {})))

    def fingerprints(self) -> Mapping[str, str]:
        return {k: v["fingerprint"] for k, v in self.sources.items()}

    def known_hashes(self) -> dict[tuple[str, str], str]:
        """``(uri, stamp) -> fingerprint`` of entries with a content hash (files not to hash
        again while they keep their stamp)."""
        return {(str(v["uri"]), str(v["stamp"])): str(v["fingerprint"])
                for v in self.sources.values()
                if v.get("stamp") and str(v.get("fingerprint", "")).startswith(HASH_PREFIX)}

    def done(self, sources: Sequence[SourceInfo],
             grid_of: Callable[[SourceInfo], str]) -> dict[str, str]:
        """Recorded fingerprints by key, as :func:`plan_ingest` compares them with
        ``sources`` (whose fingerprints are content hashes).

        An entry without a content hash matches a source of the same size (the old
        fingerprint was size and mtime, which a byte-identical copy does not share).
        """
        out = dict(self.fingerprints())
        for src in sources:
            key = f"{grid_of(src)}/{src.key}"
            recorded = out.get(key)
            if recorded is None or recorded.startswith(HASH_PREFIX):
                continue
            if recorded.split(":", 1)[0] == src.stamp.split(":", 1)[0]:
                if self.sources[key].get("uri") != src.uri:
                    logger.warning(
                        "taking %s as the file recorded for %s (%s): same size, and the entry "
                        "predates content hashes", src.uri, key, self.sources[key].get("uri"))
                else:
                    self._upgrades[key] = src
                out[key] = src.fingerprint
        return out

    def record(self, key: str, src: SourceInfo) -> None:
        """Record ``src`` (written and committed) under ``key``."""
        self.sources[key] = {
            "uri": src.uri,
            "fingerprint": src.fingerprint,
            "stamp": src.stamp,
            "written": datetime.now(UTC).isoformat(timespec="seconds"),
            "band_index": src.band_index,
        }

    def save(self, handle: StoreHandle) -> None:
        for key, src in self._upgrades.items():
            entry = self.sources.get(key)
            if entry is not None and not str(entry["fingerprint"]).startswith(HASH_PREFIX):
                entry.update(fingerprint=src.fingerprint, stamp=src.stamp)
        handle.write_json(MANIFEST_KEY, {"format": 1, "sources": self.sources})
