"""Machine and version information for the report."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil

__all__ = ["environment"]

_REPO = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_sha() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=_REPO,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=_REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty.strip() else "")


def _pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _azurite_version() -> str:
    path = _REPO / "node_modules" / "azurite" / "package.json"
    try:
        return str(json.loads(path.read_text())["version"])
    except (OSError, KeyError, ValueError):
        return "unknown"


def environment() -> dict[str, Any]:
    """Cores, RAM, CPU model, OS, and the versions that matter for the numbers."""
    import rasterio

    return {
        "machine": {
            "cores": os.cpu_count(),
            "ram_gb": round(psutil.virtual_memory().total / 1e9, 1),
            "cpu": _cpu_model(),
            "os": platform.platform(),
        },
        "versions": {
            "python": sys.version.split()[0],
            "parcelzarr": f"{_pkg('parcelzarr')} @ {_git_sha()}",
            "zarr": _pkg("zarr"),
            "numpy": _pkg("numpy"),
            "rasterio": rasterio.__version__,
            "gdal": rasterio.__gdal_version__,
            "adlfs": _pkg("adlfs"),
            "azure-storage-blob": _pkg("azure-storage-blob"),
            "azurite": _azurite_version(),
        },
    }
