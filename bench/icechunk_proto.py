"""Prototype: Icechunk against parcelzarr's own commit protocol (docs/snapshots.md).

Not part of the package and not run by the tests: Icechunk is not a dependency. Run it in a
scratch virtual environment::

    python -m venv /tmp/icevenv && /tmp/icevenv/bin/pip install icechunk zarr obstore
    /tmp/icevenv/bin/python bench/icechunk_proto.py \
        [--azurite http://127.0.0.1:PORT/devstoreaccount1 --container NAME]

What it measures, for one band of ``T`` dates on a ``N``² px grid in 256² px chunks (blosc
zstd, the project's codec), written once as plain Zarr v3 and once as an Icechunk repository:

* per-chunk read latency: every chunk read alone, one after the other (median and p95);
* a batched read of the whole array (all chunks concurrently, zarr's own async);
* snapshot isolation: a reader session opened on one commit keeps reading it while a writer
  rewrites every chunk and commits;
* on Azurite (``--azurite``): the same reads through obstore (plain Zarr) and through
  Icechunk's Azure backend pointed at the emulator.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

ACCOUNT = "devstoreaccount1"
KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")


def _data(t: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(500, 6000, size=(t, n, n), dtype="uint16")


def _write(store: Any, data: np.ndarray) -> None:
    arr = zarr.create_array(store, name="B04", shape=data.shape, dtype=data.dtype,
                            chunks=(1, 256, 256), compressors=[BloscCodec(cname="zstd",
                                                                          clevel=5)],
                            fill_value=0, zarr_format=3)
    arr[:] = data


def _per_chunk(store: Any, data: np.ndarray) -> dict[str, float]:
    arr = zarr.open_array(store, path="B04", mode="r")
    t, n, _ = data.shape
    times = []
    for k in range(t):
        for i in range(0, n, 256):
            for j in range(0, n, 256):
                t0 = time.perf_counter()
                block = arr[k, i:i + 256, j:j + 256]
                times.append(time.perf_counter() - t0)
                assert block[0, 0] == data[k, i, j]
    t0 = time.perf_counter()
    whole = arr[:]
    batched = time.perf_counter() - t0
    assert np.array_equal(whole, data)
    times.sort()
    return {"chunks": len(times), "median_ms": 1e3 * statistics.median(times),
            "p95_ms": 1e3 * times[int(0.95 * len(times))], "batched_s": batched}


def _icechunk_isolation(storage: Any, data: np.ndarray) -> dict[str, Any]:
    import icechunk

    repo = icechunk.Repository.create(storage)
    session = repo.writable_session("main")
    _write(session.store, data)
    first = session.commit("first")
    reader = repo.readonly_session(snapshot_id=first)
    writer = repo.writable_session("main")
    arr = zarr.open_array(writer.store, path="B04", mode="r+")
    arr[:] = data + 1
    writer.commit("second")
    old = zarr.open_array(reader.store, path="B04", mode="r")[:]
    new = zarr.open_array(repo.readonly_session("main").store, path="B04", mode="r")[:]
    return {"old_session_reads_old": bool(np.array_equal(old, data)),
            "new_session_reads_new": bool(np.array_equal(new, data + 1))}


def _icechunk_store(storage: Any, data: np.ndarray) -> Any:
    import icechunk

    repo = icechunk.Repository.create(storage)
    session = repo.writable_session("main")
    t0 = time.perf_counter()
    _write(session.store, data)
    session.commit("bench")
    write_s = time.perf_counter() - t0
    return repo.readonly_session("main").store, write_s


def run(t: int, n: int, azurite: str | None, container: str) -> dict[str, Any]:
    import icechunk

    data = _data(t, n)
    out: dict[str, Any] = {"icechunk": icechunk.__version__, "zarr": zarr.__version__,
                           "shape": list(data.shape)}
    with tempfile.TemporaryDirectory() as tmp:
        local = zarr.storage.LocalStore(Path(tmp) / "plain.zarr")
        t0 = time.perf_counter()
        _write(local, data)
        out["local_plain"] = {"write_s": time.perf_counter() - t0, **_per_chunk(local, data)}
        store, write_s = _icechunk_store(
            icechunk.local_filesystem_storage(str(Path(tmp) / "ice")), data)
        out["local_icechunk"] = {"write_s": write_s, **_per_chunk(store, data)}
        out["local_isolation"] = _icechunk_isolation(
            icechunk.local_filesystem_storage(str(Path(tmp) / "ice2")), data[:1])
    if azurite:
        out.update(_azure(azurite, container, data))
    return out


def _azure(endpoint: str, container: str, data: np.ndarray) -> dict[str, Any]:
    import icechunk
    from obstore.store import AzureStore
    from zarr.storage import ObjectStore

    cfg = {"account_name": ACCOUNT, "account_key": KEY, "endpoint": endpoint,
           "allow_http": "true"}
    out: dict[str, Any] = {}
    run = f"run{int(time.time())}"
    plain = ObjectStore(AzureStore(container, prefix=f"{run}/plain.zarr", **cfg))
    t0 = time.perf_counter()
    _write(plain, data)
    out["azurite_plain_obstore"] = {"write_s": time.perf_counter() - t0,
                                    **_per_chunk(plain, data)}
    # A custom endpoint works as object_store's ``azure_storage_endpoint`` (with
    # ``azure_allow_http``); ``azure_storage_use_emulator`` alone means 127.0.0.1:10000
    # unless AZURITE_BLOB_STORAGE_URL says otherwise.
    ice_cfg = {"azure_storage_endpoint": endpoint, "azure_allow_http": "true"}
    try:
        storage = icechunk.azure_storage(account=ACCOUNT, container=container, prefix=f"{run}/ice",
                                         access_key=KEY, config=ice_cfg)
        store, write_s = _icechunk_store(storage, data)
        out["azurite_icechunk"] = {"write_s": write_s, **_per_chunk(store, data)}
        out["azurite_isolation"] = _icechunk_isolation(icechunk.azure_storage(
            account=ACCOUNT, container=container, prefix=f"{run}/ice2", access_key=KEY,
            config=ice_cfg), data[:1])
    except Exception as exc:  # the finding is the error itself
        out["azurite_icechunk"] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", type=int, default=4)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--azurite", default=None, help="blob endpoint of a running Azurite")
    parser.add_argument("--container", default="ice", help="an existing container there")
    args = parser.parse_args()
    print(json.dumps(run(args.dates, args.size, args.azurite, args.container), indent=2))


if __name__ == "__main__":
    main()
