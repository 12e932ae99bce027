"""Sources are recognised by their content (SHA-256), not by size and modification time.

A byte-identical copy of an ingested file (another path, another mtime, or a blob) is the
file already ingested; a changed file is refused; manifests written before content hashes
stay readable. Hashes are checked with :mod:`hashlib` on the files themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest

import parcelzarr as pz
from parcelzarr.errors import IngestConflictError

from ._rasters import scene_data, write_tif
from .test_ingest_tiles import object_stamps

NAME = "T16TBK_20240601T100000_B04_10m.tif"


def _manifest(url: str, opts: Any) -> dict[str, Any]:
    if url.startswith("az://"):
        fs = fsspec.filesystem("az", skip_instance_cache=True, **opts)
        raw = fs.cat_file(f"{url[5:]}/parcelzarr-manifest.json")
    else:
        raw = (Path(url) / "parcelzarr-manifest.json").read_bytes()
    return dict(json.loads(raw)["sources"])


def test_identical_copy_is_skipped_changed_file_refused(tmp_path: Path,
                                                        store_url: tuple[str, Any]) -> None:
    url, opts = store_url
    (tmp_path / "a").mkdir()
    original = write_tif(tmp_path / "a" / NAME, scene_data((200, 200), 1))
    pz.ingest([str(original)], url, storage_options=opts, quiet=True)
    entry = next(iter(_manifest(url, opts).values()))
    assert entry["fingerprint"] == "sha256:" + hashlib.sha256(original.read_bytes()).hexdigest()

    (tmp_path / "b").mkdir()
    copy = tmp_path / "b" / NAME
    shutil.copyfile(original, copy)
    os.utime(copy, ns=(1_000_000_000, 1_000_000_000))  # another mtime
    stamps = object_stamps(url, opts)
    report = pz.ingest([str(copy)], url, storage_options=opts, quiet=True)
    assert report.sources_written == 0 and report.sources_skipped == 1
    assert "nothing to do" in str(report)
    assert object_stamps(url, opts) == stamps

    (tmp_path / "c").mkdir()
    changed = write_tif(tmp_path / "c" / NAME, scene_data((200, 200), 2))
    with pytest.raises(IngestConflictError, match="different content"):
        pz.ingest([str(changed)], url, storage_options=opts, quiet=True)
    assert object_stamps(url, opts) == stamps


def test_copy_of_an_ingested_blob_is_skipped(tmp_path: Path, azurite: Any,
                                              az_container: str) -> None:
    """Blob sources are hashed from their downloaded bytes: a local copy of an ingested blob
    (another URI, another ETag) is recognised."""
    local = write_tif(tmp_path / NAME, scene_data((200, 200), 3))
    opts = azurite.storage_options()
    fs = fsspec.filesystem("az", skip_instance_cache=True, **opts)
    fs.put_file(str(local), f"{az_container}/scenes/{NAME}")
    url = str(tmp_path / "store.zarr")
    first = pz.ingest([f"az://{az_container}/scenes/{NAME}"], url, quiet=True,
                      source_storage_options=opts)
    assert first.sources_written == 1
    again = pz.ingest([str(local)], url, quiet=True)
    assert again.sources_written == 0 and again.sources_skipped == 1


def test_manifest_without_content_hashes_stays_readable(tmp_path: Path) -> None:
    """An entry of the old form (``"size:mtime"``) matches a file of the same size, is
    upgraded to a content hash when the manifest is next written, and a file of another size
    is refused."""
    src = write_tif(tmp_path / NAME, scene_data((200, 200), 4))
    url = str(tmp_path / "old.zarr")
    pz.ingest([str(src)], url, quiet=True)
    path = Path(url) / "parcelzarr-manifest.json"
    doc = json.loads(path.read_text())
    (key, entry), = doc["sources"].items()
    st = src.stat()
    doc["sources"][key] = {"uri": entry["uri"], "fingerprint": f"{st.st_size}:{int(st.st_mtime)}",
                           "written": entry["written"]}  # as parcelzarr 0.1 wrote it
    path.write_text(json.dumps(doc))
    os.utime(src, ns=(2_000_000_000, 2_000_000_000))  # touched since: old scheme would refuse
    assert pz.ingest([str(src)], url, quiet=True).sources_skipped == 1

    later = write_tif(tmp_path / "T16TBK_20240611T100000_B04_10m.tif", scene_data((200, 200), 5))
    pz.ingest([str(src), str(later)], url, quiet=True)
    upgraded = json.loads(path.read_text())["sources"][key]
    assert upgraded["fingerprint"] == "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()

    (tmp_path / "bigger").mkdir()
    bigger = write_tif(tmp_path / "bigger" / NAME, scene_data((220, 220), 4))
    doc = json.loads(path.read_text())
    doc["sources"][key]["fingerprint"] = f"{st.st_size}:{int(st.st_mtime)}"
    path.write_text(json.dumps(doc))
    with pytest.raises(IngestConflictError, match="different content"):
        pz.ingest([str(bigger)], url, quiet=True)
    ds = pz.open_store(url).to_xarray()
    assert ds.sizes["time"] == 2
    assert np.asarray(ds.B04.isel(time=0)).any()
