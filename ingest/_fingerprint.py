"""Content fingerprints of sources: what makes a re-run skip a file it already ingested.

A source's fingerprint is the SHA-256 of its bytes, so a byte-identical copy (another path,
another modification time, another blob) is recognised as the file already ingested, and a
changed file as a different one. Hashing a file costs one read of it; a file whose stamp
(size and modification time, or ETag) is the one a manifest entry was hashed from is not read
again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import MutableMapping, Sequence

from ._sources import SourceInfo

__all__ = ["HASH_PREFIX", "content_hash", "resolve_fingerprints"]

logger = logging.getLogger(__name__)

HASH_PREFIX = "sha256:"
_BLOCK = 1 << 20


def content_hash(path: str) -> str:
    """``"sha256:<hex>"`` of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return HASH_PREFIX + digest.hexdigest()


def resolve_fingerprints(
    sources: Sequence[SourceInfo],
    known: MutableMapping[tuple[str, str], str],
) -> list[SourceInfo]:
    """The sources with their content fingerprint.

    ``known`` maps ``(uri or local path, stamp)`` to fingerprints already computed (from the
    manifest, or an earlier call); new ones are added to it.
    """
    out = []
    for src in sources:
        fingerprint = known.get((src.uri, src.stamp)) or known.get((src.local_path, src.stamp))
        if fingerprint is None:
            fingerprint = content_hash(src.local_path)
            logger.debug("hashed %s: %s", src.uri, fingerprint)
        known[(src.uri, src.stamp)] = known[(src.local_path, src.stamp)] = fingerprint
        out.append(dataclasses.replace(src, fingerprint=fingerprint))
    return out
