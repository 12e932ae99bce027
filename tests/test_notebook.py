"""docs/analysis.ipynb runs top to bottom (nbclient, a real kernel) and draws its figures."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "analysis.ipynb"


def test_analysis_notebook_runs_and_shows_figures(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARCELZARR_CACHE_DIR", str(tmp_path / "cache"))  # the kernel inherits it
    nb = nbformat.read(NOTEBOOK, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    seconds = time.perf_counter() - t0
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(figures) >= 2, [o.output_type for o in outputs]  # time series and map
    assert (tmp_path / "stores" / "season.zarr").is_dir()
    assert seconds < 120, f"the notebook took {seconds:.0f} s"
