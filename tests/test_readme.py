"""The README's notebook workflow (issue 12: ten lines or fewer) runs as written, in a fresh
folder, and draws the time series and the map it promises: the plotted lines are the
parcels' rows of the long frame of the same query. (The cube's values themselves are checked
against xvec's own zonal_stats in tests/test_query_cube.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet() -> str:
    text = README.read_text()
    found = re.search(r"### Interactive analysis[^\n]*\n+```python\n(.*?)```", text, re.S)
    assert found, "README lost its notebook workflow snippet"
    return found.group(1)


def test_readme_snippet_is_ten_lines_or_fewer() -> None:
    assert len(_snippet().strip().splitlines()) <= 10


def test_readme_snippet_runs_and_draws_a_time_series_and_a_map(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PARCELZARR_CACHE_DIR", str(tmp_path / "cache"))
    plt.close("all")
    scope: dict[str, object] = {}
    exec(compile(_snippet(), str(README), "exec"), scope)  # the README's own code
    figures = [plt.figure(n) for n in plt.get_fignums()]
    try:
        assert len(figures) >= 1
        axes = [ax for f in figures for ax in f.axes]
        lines = [ln for ax in axes for ln in ax.get_lines()]
        assert len(lines) == 3  # one NDVI time series per parcel asked for
        assert any(ax.collections for ax in axes)  # the map's parcel polygons
        cube, county = scope["cube"], scope["county"]
        import parcelzarr as pz

        long = pz.open_store("stores/season.zarr").zonal_stats(
            county, id_column="parcel_id", indices=["ndvi"], stats=["mean"])
        for pid in (2, 3, 4):
            series = cube["mean"].sel(band="ndvi", parcel_id=pid).to_numpy()  # type: ignore[index]
            mine = long[long["parcel_id"] == pid].sort_values("time")["mean"].to_numpy()
            np.testing.assert_allclose(series, mine, rtol=1e-12)
        plotted = np.sort(np.concatenate([ln.get_ydata() for ln in lines]))
        expected = np.sort(long[long["parcel_id"].isin([2, 3, 4])]["mean"].to_numpy())
        np.testing.assert_allclose(plotted, expected, rtol=1e-12)
    finally:
        plt.close("all")
