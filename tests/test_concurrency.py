"""``gather_bounded``: the one bounded fan-out of storage calls; and rasterization's warning
filter exists only while rasterizing (no import-time global filter)."""

from __future__ import annotations

import asyncio
import threading
import warnings

import numpy as np
import pytest
import shapely
from affine import Affine

from parcelzarr._concurrency import gather_bounded


def _tracked(limit: int | None, n: int) -> tuple[list[int], int]:
    in_flight = peak = 0

    async def call(i: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001 * (n - i))  # later calls finish first
        in_flight -= 1
        return i * i

    got = asyncio.run(gather_bounded([lambda i=i: call(i) for i in range(n)], limit=limit))
    return got, peak


def test_results_in_order_and_at_most_limit_in_flight() -> None:
    got, peak = _tracked(3, 20)
    assert got == [i * i for i in range(20)]
    assert peak == 3


def test_default_limit_is_the_concurrency_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARCELZARR_CONCURRENCY", "5")
    _, peak = _tracked(None, 30)
    assert peak == 5


def test_first_error_propagates() -> None:
    async def fail() -> int:
        raise OSError("boom")

    async def ok() -> int:
        return 1

    with pytest.raises(OSError, match="boom"):
        asyncio.run(gather_bounded([ok, fail, ok], limit=2))
    with pytest.raises(ValueError, match="at least 1"):
        asyncio.run(gather_bounded([ok], limit=0))


def test_rasterize_leaves_no_warning_filter_behind() -> None:
    from parcelzarr.query import _rasterize
    from rasterio.errors import NotGeoreferencedWarning

    def ours() -> list[object]:
        return [f for f in warnings.filters if f[2] is NotGeoreferencedWarning]

    assert ours() == []  # importing the module installs nothing
    geoms = np.array([shapely.box(0, 0, 40, 40)])
    out: list[np.ndarray] = []

    def work() -> None:
        for _ in range(20):
            out.append(_rasterize._burn(geoms, np.array([7]), Affine(1, 0, 0, 0, -1, 64),
                                        (64, 64), False))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ours() == []
    # oracle: the box covers rows 24..63 and columns 0..39 of the 64 x 64 raster
    expected = np.zeros((64, 64), dtype=np.int32)
    expected[24:, :40] = 7
    assert len(out) == 80
    assert all(np.array_equal(o.reshape(64, 64), expected) for o in out)
