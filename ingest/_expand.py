"""Find the files behind sources: expand paths, folders, globs and ``az://`` URLs; fetch blobs
into the local cache (once per content stamp)."""

from __future__ import annotations

import glob as globlib
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from parcelzarr.stores import parse_location
from parcelzarr.stores._azure import redact
from parcelzarr.stores._errors import storage_error
from parcelzarr.stores._open import filesystem_for

from parcelzarr.errors import InvalidSourceError, SourceNotFoundError

__all__ = ["expand_sources", "fetch_source", "fetch_stamped"]


_GLOB_CHARS = set("*?[")


def expand_sources(
    sources: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    storage_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Expand paths, folders, URLs and globs into a sorted list of file URIs."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    found: list[str] = []
    for src in sources:
        text = os.fspath(src)
        loc = parse_location(text, glob=True)
        if loc.protocol == "file":
            if _GLOB_CHARS & set(text):
                matches = sorted(globlib.glob(os.path.expanduser(text), recursive=True))
            elif os.path.isdir(loc.path):
                matches = sorted(
                    str(p) for p in Path(loc.path).rglob("*") if p.suffix.lower() in
                    (".tif", ".tiff", ".jp2")
                )
            else:
                matches = [loc.path] if os.path.exists(loc.path) else []
            if not matches:
                raise SourceNotFoundError(
                    f"source {text!r} matches no file: check the path (globs need quotes in a "
                    "shell)"
                )
            found.extend(os.path.abspath(m) for m in matches)
        elif loc.protocol == "az":
            fs = filesystem_for(loc, storage_options)
            try:
                if _GLOB_CHARS & set(loc.path):
                    matches = sorted(fs.glob(loc.path))
                elif fs.isdir(loc.path):
                    matches = sorted(
                        p for p in fs.find(loc.path) if p.lower().endswith((".tif", ".tiff"))
                    )
                else:
                    matches = [loc.path] if fs.exists(loc.path) else []
            except OSError as exc:
                raise SourceNotFoundError(
                    f"cannot list {loc.url}: {redact(str(exc))[:200]}"
                ) from exc
            except Exception as exc:  # 403, dead service: one typed line
                err = storage_error(exc, where=loc.url, what="listing sources")
                if err is None:
                    raise
                raise err from exc
            if not matches:
                raise SourceNotFoundError(f"source {loc.url} matches no blob")
            found.extend(f"az://{m}" for m in matches)
        else:
            raise InvalidSourceError(f"sources must be local paths or az:// URLs, got {text!r}")
    return sorted(dict.fromkeys(found))


def fetch_source(uri: str, storage_options: Mapping[str, Any] | None, cache_dir: Path) -> str:
    """A local path holding ``uri`` (a blob is downloaded once into ``cache_dir``)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    return fetch_stamped(uri, storage_options, cache_dir)[0]


def fetch_stamped(uri: str, storage_options: Mapping[str, Any] | None,
                  cache_dir: Path) -> tuple[str, str]:
    """Local path and stamp of ``uri`` (blobs are downloaded once into ``cache_dir``)."""
    loc = parse_location(uri, glob=True)
    if loc.protocol == "file":
        st = os.stat(loc.path)
        return loc.path, f"{st.st_size}:{st.st_mtime_ns}"
    fs = filesystem_for(loc, storage_options)
    info = fs.info(loc.path)
    stamp = str(info.get("etag") or info.get("last_modified") or "")
    fingerprint = f"{info.get('size')}:{stamp}"
    digest = hashlib.sha1(f"{uri}|{fingerprint}".encode()).hexdigest()[:16]
    target = cache_dir / f"{digest}-{Path(loc.path).name}"
    if not target.exists():
        tmp = target.with_suffix(target.suffix + ".part")
        fs.get_file(loc.path, str(tmp))
        tmp.replace(target)
    return str(target), fingerprint
