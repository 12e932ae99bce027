"""The distribution installs one import package, `parcelzarr`, and a `parcelzarr` command."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)


_LOADED = """
import json, sys
from pathlib import Path
import parcelzarr as pz
root = Path(sys.argv[1])
by_folder = {f: sorted(n for n, m in list(sys.modules.items())
                       if getattr(m, "__file__", None)
                       and Path(m.__file__).resolve().is_relative_to(root / f))
             for f in ("ingest", "query", "stores")}
print(json.dumps({"folders": by_folder, "callable": [callable(pz.ingest), callable(pz.compact),
                                                     callable(pz.open_store)]}))
"""


def test_only_parcelzarr_is_importable(tmp_path: Path) -> None:
    ok = _run("import inspect, parcelzarr as pz, parcelzarr.query, parcelzarr.stores;"
              "print(inspect.isfunction(pz.ingest), inspect.isfunction(pz.compact),"
              " type(pz.ingest) is type(len), pz.ingest.__module__)", tmp_path)
    assert ok.returncode == 0, ok.stderr
    # plain functions (not a module whose class was swapped to make it callable)
    assert ok.stdout.split() == ["True", "True", "False", "parcelzarr._ingest._api"]
    ok = subprocess.run([sys.executable, "-c", _LOADED, str(ROOT)], cwd=tmp_path,
                        capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
    loaded = json.loads(ok.stdout)
    assert loaded["callable"] == [True, True, True]  # pz.ingest(...), pz.compact(...)
    for folder, names in loaded["folders"].items():
        # `import parcelzarr` loads each top-level folder, only as part of parcelzarr
        assert names, f"nothing of {folder}/ was imported"
        assert all(n.startswith("parcelzarr.") for n in names), (folder, names)
    for bare in ("query", "ingest", "stores"):
        res = _run(f"import {bare}", tmp_path)
        assert res.returncode != 0
        assert "ModuleNotFoundError" in res.stderr


def test_cli_entry_point() -> None:
    exe = Path(sys.executable).parent / "parcelzarr"
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False)
    assert res.returncode == 0
    for cmd in ("ingest", "info", "stats", "demo"):
        assert cmd in res.stdout


@pytest.mark.slow
def test_wheel_has_no_bare_top_level_packages(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next(tmp_path.glob("parcelzarr-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if "/" in n and ".dist-info" not in n}
    assert tops == {"parcelzarr"}
    assert "parcelzarr/query/_engine.py" in names
    assert "parcelzarr/_ingest/_api.py" in names
    assert "parcelzarr/py.typed" in names
    assert "parcelzarr/stores/_retry.py" in names
    assert not any(n.endswith(".zarr") or "/demo.zarr/" in n for n in names)


def test_locked_npm_packages_admit_the_documented_node() -> None:
    """Every package in package-lock.json (Azurite and its dependencies) declares an
    ``engines.node`` range that admits the minimum Node.js the README promises, so
    ``npm ci`` on that Node prints no EBADENGINE warning. Ranges are checked with npm's own
    ``semver`` package (installed by ``npm ci``)."""
    node = shutil.which("node")
    semver = ROOT / "node_modules" / "semver"
    if node is None or not semver.is_dir():
        pytest.skip("needs node and `npm ci` (make install)")
    found = re.search(r"Node\.js ≥ ([0-9.]+)", (ROOT / "README.md").read_text())
    assert found, "README must state the minimum Node.js version"
    minimum = ".".join([*found.group(1).split("."), "0", "0"][:3])
    script = (
        "const semver = require(process.argv[1]); const lock = require(process.argv[2]);"
        "const bad = Object.entries(lock.packages).filter(([k, p]) => p.engines &&"
        " p.engines.node && !semver.satisfies(process.argv[3], p.engines.node))"
        ".map(([k, p]) => k + ' ' + p.engines.node);"
        "console.log(JSON.stringify(bad));"
    )
    res = subprocess.run([node, "-e", script, str(semver), str(ROOT / "package-lock.json"),
                          minimum], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(res.stdout) == [], f"packages that reject Node {minimum}"
