"""Azurite's CPU per GET against the number of blobs it holds.

The emulator shares this machine's cores with the client in every benchmark, so its cost per
request is part of every Azurite figure. This measures it alone: one Azurite (in memory), the
same 1,000 GETs of 500 64 kB blobs, 32 in flight, after the account has grown to each count
(the extra blobs are 1 kB and never read). Usage::

    .venv/bin/python bench/azurite_blobs.py [--counts 500,2000,8000,16000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import psutil
from azure.storage.blob.aio import BlobServiceClient

from parcelzarr.testing import Azurite

READ_SET = 500
GETS = 1000


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children."""
    proc = psutil.Process(pid)
    total = sum(proc.cpu_times()[:2])
    return total + sum(sum(c.cpu_times()[:2]) for c in proc.children(recursive=True))


async def _measure(counts: list[int]) -> None:
    body = os.urandom(65536)
    with Azurite() as az:
        assert az.pid is not None
        async with BlobServiceClient.from_connection_string(az.connection_string) as svc:
            cc = svc.get_container_client("blobs")
            await cc.create_container()
            sem = asyncio.Semaphore(32)

            async def put(i: int) -> None:
                async with sem:
                    await cc.upload_blob(f"b/{i}", body if i < READ_SET else body[:1024],
                                         overwrite=True)

            async def get(i: int) -> None:
                async with sem:
                    await (await cc.download_blob(f"b/{i % READ_SET}")).readall()

            have = 0
            for count in sorted(counts):
                await asyncio.gather(*(put(i) for i in range(have, count)))
                have = count
                await asyncio.gather(*(get(i) for i in range(100)))  # warm
                cpu0, t0 = _cpu_s(az.pid), time.perf_counter()
                await asyncio.gather(*(get(i) for i in range(GETS)))
                wall, cpu = time.perf_counter() - t0, _cpu_s(az.pid) - cpu0
                print(f"{count:6d} blobs: {GETS} GETs in {wall:.2f} s, Azurite CPU {cpu:.2f} s "
                      f"({1000 * cpu / GETS:.1f} ms per GET)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", default="500,2000,8000,16000",
                   help="comma-separated blob counts, ascending")
    args = p.parse_args()
    asyncio.run(_measure([int(v) for v in args.counts.split(",")]))


if __name__ == "__main__":
    main()
