"""Crash growth and compaction at every write boundary with a grace period: a reader that
holds the previous version's metadata reads it whole at every crash point, after the re-run,
and until a writer after the grace deletes the superseded objects.

Uses the deterministic crash enumeration of ``test_ingest_faults.py`` (same sources, same
rasterio oracle); there the grace is 0 (objects deleted right after each commit).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import zarr

from .test_ingest_faults import (
    SCENARIOS,
    _check_grid,
    _copy,
    _crash_at,
    _run,
    _runs,
    check_committed,
    folder,
    orphans,
)

__all__ = ["folder"]  # the module fixture, shared

RELAYOUTS = ["westward growth into a committed date", "compaction",
             "westward growth of a compacted store"]


def _retired(url: str) -> set[str]:
    """Objects listed as retired (kept for readers of older versions)."""
    import json

    record = Path(url) / "parcelzarr-retired.json"
    if not record.exists():
        return set()
    out = set()
    for e in json.loads(record.read_text())["retired"]:
        base = Path(url) / e["path"]
        if e["sep"] == ".":
            out |= {p.relative_to(url).as_posix() for p in base.glob("c.*")}
        else:
            out |= {p.relative_to(url).as_posix() for p in base.glob("c/**/*") if p.is_file()}
    return out | {"parcelzarr-retired.json"}


def _old_reads(old: zarr.Group, runs: list[list], folder: Path) -> None:
    for grid in sorted({s.grid for run in runs for s in run}):
        group = old[grid]
        assert isinstance(group, zarr.Group)
        _check_grid(group, grid, runs, folder)


@pytest.mark.parametrize("scenario", RELAYOUTS)
def test_previous_version_stays_readable_at_every_write_boundary(
        scenario: str, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARCELZARR_SNAPSHOT_GRACE", "3600")
    setup, step = SCENARIOS[scenario]
    base = str(tmp_path / "base.zarr")
    for s in setup:
        _run(s, base, folder)
    before = _runs(setup)
    after = _runs([*setup, step])
    dry = str(tmp_path / "dry.zarr")
    _copy(base, dry)
    boundaries = _crash_at(None, step, dry, folder).count
    for n in range(1, boundaries + 1):
        url = str(tmp_path / f"crash{n}.zarr")
        _copy(base, url)
        old = zarr.open_group(url, mode="r", use_consolidated=True)  # a reader's version
        _crash_at(n, step, url, folder)
        _old_reads(old, before, folder)
        _run(step, url, folder)  # re-run: recovery keeps what the old version reads
        _old_reads(old, before, folder)
        check_committed(url, after, folder)
        assert set(orphans(url)) <= _retired(url), n
        shutil.rmtree(url)
    # a writer after the grace deletes every superseded object
    monkeypatch.setenv("PARCELZARR_SNAPSHOT_GRACE", "0")
    _run(("compact", 8), dry, folder)
    check_committed(dry, after, folder)
    assert orphans(dry) == []
