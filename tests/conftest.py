"""Shared fixtures: a real Azurite for the session, containers, a latency proxy, store URLs.

Azurite is started lazily, only by tests that ask for it (directly or through
``az_container``, ``azure_storage_options``, ``proxy`` or the ``azure`` case of
``store_url``). It needs ``npm ci`` to have installed ``node_modules/`` (``make install``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parcelzarr.testing import (
    Azurite,
    LatencyProxy,
    PostgresNotFoundError,
    PostgresServer,
    find_postgres,
)

StorageOptions = dict[str, Any]

# Superseded objects are deleted right after each commit unless a test says otherwise: the
# crash and compaction tests check that no object is left the committed metadata does not
# address. Tests of the grace period (test_snapshot_*.py) set it themselves.
os.environ.setdefault("PARCELZARR_SNAPSHOT_GRACE", "0")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--conformance-doc", default=None, metavar="PATH",
        help="write the conformance table of tests/test_conformance.py to PATH "
             "(make conformance: docs/conformance.md); run the whole module for a full table",
    )


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One Azurite blob service for the whole test session (in memory, free port)."""
    with Azurite() as az:
        yield az


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throw-away PostgreSQL + PostGIS server for the session (temporary cluster, free
    port, password authentication). Skipped, with the reason, only when the server binaries
    or PostGIS are not installed (`make install` installs them on Debian)."""
    try:
        find_postgres()
    except PostgresNotFoundError as exc:
        pytest.skip(str(exc))
    with PostgresServer() as server:
        yield server


@pytest.fixture
def az_container(azurite: Azurite) -> Iterator[str]:
    """A fresh, uniquely named, empty container; deleted after the test."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    azurite.create_container(name)
    yield name
    azurite.delete_container(name)


@pytest.fixture
def azure_storage_options(azurite: Azurite) -> StorageOptions:
    """adlfs ``storage_options`` (a connection string) reaching Azurite directly."""
    return azurite.storage_options()


@pytest.fixture(scope="session")
def _latency_proxy(azurite: Azurite) -> Iterator[LatencyProxy]:
    with LatencyProxy(azurite.blob_endpoint) as proxy:
        yield proxy


@pytest.fixture
def proxy(_latency_proxy: LatencyProxy) -> Iterator[LatencyProxy]:
    """The session's :class:`LatencyProxy` in front of Azurite, reset for this test.

    Delay 0, counters zero and no pending faults on entry; faults left over are dropped on
    exit. Reach Azurite through it with ``azurite.storage_options(proxy.endpoint)``.
    """
    _latency_proxy.delay_ms = 0.0
    _latency_proxy.clear_faults()
    _latency_proxy.reset_counters()
    yield _latency_proxy
    _latency_proxy.delay_ms = 0.0
    _latency_proxy.clear_faults()


@pytest.fixture(params=["local", pytest.param("azure", marks=pytest.mark.azure)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, StorageOptions | None]:
    """``(url, storage_options)`` of a not-yet-existing store, once per backend.

    ``local``: a path under ``tmp_path``, no storage options. ``azure``:
    ``az://<fresh container>/store.zarr`` on Azurite with its storage options.
    """
    if request.param == "local":
        return str(tmp_path / "store.zarr"), None
    azurite: Azurite = request.getfixturevalue("azurite")
    container: str = request.getfixturevalue("az_container")
    return f"az://{container}/store.zarr", azurite.storage_options()
