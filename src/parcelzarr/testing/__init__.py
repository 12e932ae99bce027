"""Test and benchmark support: a real Azurite emulator and a latency proxy in front of it,
and a throw-away PostgreSQL + PostGIS server (:class:`PostgresServer`).

Shipped inside the package (like ``zarr.testing``) so the test suite, the benchmarks and
downstream users start Azure-like storage the same way::

    from parcelzarr.testing import Azurite, LatencyProxy

    with Azurite() as az, LatencyProxy(az.blob_endpoint, delay_ms=20) as proxy:
        az.create_container("data")
        storage_options = az.storage_options(proxy.endpoint)  # for adlfs / fsspec

``CrashingStore``/``crashing_stores`` crash writers deterministically at any write boundary.
Azurite comes from npm (``npm ci`` in the repository installs the pinned version).
Nothing here runs at import time.
"""

from parcelzarr.testing._azurite import (
    ACCOUNT_KEY,
    ACCOUNT_NAME,
    Azurite,
    AzuriteNotFoundError,
    AzuriteStartError,
    find_azurite,
)
from parcelzarr.testing._faults import CrashingStore, FaultPlan, SimulatedCrash, crashing_stores
from parcelzarr.testing._postgres import (
    PostgresNotFoundError,
    PostgresServer,
    PostgresStartError,
    find_postgres,
)
from parcelzarr.testing._proxy import FaultKind, LatencyProxy, ProxyStats

__all__ = [
    "ACCOUNT_KEY",
    "ACCOUNT_NAME",
    "Azurite",
    "AzuriteNotFoundError",
    "AzuriteStartError",
    "CrashingStore",
    "FaultKind",
    "FaultPlan",
    "LatencyProxy",
    "PostgresNotFoundError",
    "PostgresServer",
    "PostgresStartError",
    "ProxyStats",
    "SimulatedCrash",
    "crashing_stores",
    "find_azurite",
    "find_postgres",
]
