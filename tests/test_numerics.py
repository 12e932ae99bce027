"""The pure numerics, unit-tested directly (no store, no I/O): the streaming per-parcel
reductions merged across chunk splits (Chan's parallel update), the sort paths of the exact
median and percentiles, band-math expressions, time selection, Sentinel-2 name parsing and
STAC items.

Oracles: numpy on the concatenated values, Python's own ``eval`` of the same expression text,
pandas' partial-string date indexing, pystac, and the ESA product naming convention.
"""

from __future__ import annotations

import itertools
import re
from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from parcelzarr._ingest._names import boa_offset, parse_s2_name
from parcelzarr._ingest._stac import parse_stac
from parcelzarr.query._expr import parse_expression
from parcelzarr.query._select import select_times
from parcelzarr.query._stats import Partials, exact_stats, parse_stats, weighted_quantiles

SIMPLE = parse_stats("count,sum,mean,std,min,max,range")

# -- Chan's parallel update across chunk splits ------------------------------------------------


def _split_and_add(partials: Partials, parcels: np.ndarray, values: np.ndarray,
                   cuts: list[int], weights: np.ndarray | None = None) -> None:
    """Feed ``(parcels, values)`` to ``partials`` in pieces cut at ``cuts``, each piece sorted
    by parcel as the engine hands a chunk over."""
    bounds = [0, *sorted(c % (parcels.size + 1) for c in cuts), parcels.size]
    for a, b in itertools.pairwise(bounds):
        order = np.argsort(parcels[a:b], kind="stable")
        w = None if weights is None else weights[a:b][order]
        partials.add_sorted(parcels[a:b][order], values[a:b][order], w)


def _numpy_stats(parcels: np.ndarray, values: np.ndarray, n: int,
                 weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    out = {k: np.full(n, np.nan) for k in ("sum", "mean", "std", "min", "max", "range")}
    out["count"] = np.zeros(n)
    for i in range(n):
        v = values[parcels == i].astype(np.float64)
        if not v.size:
            continue
        w = np.ones(v.size) if weights is None else weights[parcels == i]
        mean = np.average(v, weights=w)
        out["count"][i] = w.sum()
        out["sum"][i] = (w * v).sum()
        out["mean"][i] = mean
        out["std"][i] = np.sqrt(np.average((v - mean) ** 2, weights=w))
        out["min"][i], out["max"][i] = v.min(), v.max()
        out["range"][i] = v.max() - v.min()
    return out


_DTYPES = st.sampled_from(["uint8", "uint16", "int16", "float32", "float64"])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.data(), dtype=_DTYPES, n=st.integers(1, 6),
       size=st.integers(1, 300), cuts=st.lists(st.integers(0, 10_000), max_size=6))
def test_chan_merge_across_chunk_splits_equals_numpy_on_the_concatenation(
        data: st.DataObject, dtype: str, n: int, size: int, cuts: list[int]) -> None:
    parcels = data.draw(hnp.arrays(np.int64, size, elements=st.integers(0, n - 1)))
    if np.dtype(dtype).kind == "f":
        elements = st.floats(-1e4, 1e4, width=np.dtype(dtype).itemsize * 8)
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
    values = data.draw(hnp.arrays(dtype, size, elements=elements))
    partials = Partials(n)
    _split_and_add(partials, parcels, values, cuts)
    got = partials.result(SIMPLE, np.arange(n))
    expect = _numpy_stats(parcels, values, n)
    for name in SIMPLE.names:
        np.testing.assert_allclose(got[name], expect[name], rtol=1e-9, atol=1e-6,
                                   equal_nan=True, err_msg=name)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data(), n=st.integers(1, 5), size=st.integers(1, 200),
       cuts=st.lists(st.integers(0, 10_000), max_size=6))
def test_weighted_chan_merge_equals_numpy_weighted_moments(
        data: st.DataObject, n: int, size: int, cuts: list[int]) -> None:
    parcels = data.draw(hnp.arrays(np.int64, size, elements=st.integers(0, n - 1)))
    values = data.draw(hnp.arrays(np.uint16, size, elements=st.integers(0, 10_000)))
    weights = data.draw(hnp.arrays(np.float64, size, elements=st.floats(0.01, 1.0)))
    partials = Partials(n, weighted=True)
    _split_and_add(partials, parcels, values, cuts, weights)
    got = partials.result(SIMPLE, np.arange(n))
    expect = _numpy_stats(parcels, values, n, weights)
    for name in SIMPLE.names:
        np.testing.assert_allclose(got[name], expect[name], rtol=1e-9, atol=1e-9,
                                   equal_nan=True, err_msg=name)


@given(data=st.data(), n=st.integers(1, 5), size=st.integers(1, 200),
       cuts=st.lists(st.integers(0, 10_000), max_size=6))
def test_raster_weighted_moments_equal_exactextracts_rules(
        data: st.DataObject, n: int, size: int, cuts: list[int]) -> None:
    """weighted_* across chunk splits: numpy's weighted moments, with exactextract's rules
    (a NaN weight spoils its parcel, weights of 0 count nothing, all-0 weights: NaN mean)."""
    parcels = data.draw(hnp.arrays(np.int64, size, elements=st.integers(0, n - 1)))
    values = data.draw(hnp.arrays(np.float64, size, elements=st.floats(-1e3, 1e3)))
    cw = data.draw(hnp.arrays(np.float64, size, elements=st.sampled_from(
        [0.0, 0.25, 1.0, 3.5, 120.0, np.nan])))
    spec = parse_stats("weighted_sum,weighted_mean,weighted_variance,weighted_stdev")
    partials = Partials(n, raster_weights=True)
    bounds = [0, *sorted(c % (size + 1) for c in cuts), size]
    for a, b in itertools.pairwise(bounds):
        order = np.argsort(parcels[a:b], kind="stable")
        p, v, w = parcels[a:b][order], values[a:b][order], cw[a:b][order]
        partials.add_sorted(p, v)
        partials.add_weighted(p, v, w)
    got = partials.result(spec, np.arange(n))
    for i in range(n):
        here = parcels == i
        v, w = values[here], cw[here]
        if not here.any():
            expect = dict.fromkeys(spec.names, np.nan)
        else:
            total = w.sum()
            mean = (v * w).sum() / total if total != 0 else np.nan
            var = (w * (v - mean) ** 2).sum() / total if total != 0 else np.nan
            expect = {"weighted_sum": (v * w).sum(), "weighted_mean": mean,
                      "weighted_variance": var, "weighted_stdev": np.sqrt(var)}
        for name in spec.names:
            np.testing.assert_allclose(got[name][i], expect[name], rtol=1e-7, atol=1e-6,
                                       equal_nan=True, err_msg=f"{name} parcel {i}")


def test_chan_merge_keeps_std_accurate_far_from_zero() -> None:
    """Values 1e9 + small noise, one pixel per chunk: a sum-of-squares formula loses every
    digit of the variance here; the parallel update must not."""
    rng = np.random.default_rng(0)
    values = 1e9 + rng.normal(0, 1e-3, 5000)
    parcels = np.zeros(values.size, dtype=np.int64)
    partials = Partials(1)
    for k in range(values.size):
        partials.add_sorted(parcels[k:k + 1], values[k:k + 1])
    got = partials.result(parse_stats("std,mean"), np.arange(1))
    naive = np.sqrt(max(np.mean(values * values) - np.mean(values) ** 2, 0.0))
    assert abs(naive - values.std()) > values.std()  # the case does discriminate
    # each update rounds the mean to 1e9's spacing (1.2e-7): 1e-3 of a 1e-3 std is left
    np.testing.assert_allclose(got["std"], [values.std()], rtol=1e-3)
    np.testing.assert_allclose(got["mean"], [values.mean()], rtol=1e-15)


def test_parcel_without_pixels_gets_count_zero_and_nan() -> None:
    partials = Partials(3)
    partials.add_sorted(np.array([0, 0, 2]), np.array([1.0, 3.0, 5.0]))
    got = partials.result(SIMPLE, np.arange(3))
    assert got["count"].tolist() == [2, 0, 1]
    for name in ("sum", "mean", "std", "min", "max", "range"):
        assert np.isnan(got[name][1]) and not np.isnan(got[name][[0, 2]]).any(), name


# -- exact median and percentiles: every sort path --------------------------------------------

_QS = (0.0, 10.0, 25.0, 33.3, 75.0, 90.0, 100.0)


def _check_exact(parcels: np.ndarray, values: np.ndarray, n: int) -> None:
    got = exact_stats(parcels, values, n, _QS, median=True)
    assert set(got) == {"median", *(f"percentile_{q:g}" for q in _QS)}
    for i in range(n):
        v = values[parcels == i].astype(np.float64)
        for q, name in [(50.0, "median"), *((q, f"percentile_{q:g}") for q in _QS)]:
            want = np.percentile(v, q) if v.size else np.nan
            np.testing.assert_allclose(got[name][i], want, rtol=1e-12, atol=0,
                                       equal_nan=True, err_msg=f"{name} of parcel {i}")


@pytest.mark.parametrize(("dtype", "lo", "hi"), [
    ("uint8", 0, 255),                       # packed int64 key
    ("uint16", 0, 65535),
    ("int16", -32768, 32767),                # negative values shifted by the minimum
    ("int32", -(2**31), 2**31 - 1),          # the full int32 range still packs
    ("uint32", 0, 2**32 - 1),
    ("int64", -(2**40), 2**40),              # range beyond 2**32: lexsort
])
def test_exact_quantiles_integer_sort_paths(dtype: str, lo: int, hi: int) -> None:
    rng = np.random.default_rng(1)
    n, size = 7, 4000
    parcels = rng.integers(0, n - 1, size)  # parcel n - 1 stays empty
    values = rng.integers(lo, hi, size, dtype=dtype, endpoint=True)
    values[:2] = (lo, hi)  # the extremes of the range
    _check_exact(parcels, values, n)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exact_quantiles_float_sort_paths(dtype: str) -> None:
    """float32 is packed through an order-preserving map of its bit patterns (negative
    numbers, -0.0, subnormals and huge magnitudes included); float64 uses lexsort."""
    rng = np.random.default_rng(2)
    n, size = 5, 3000
    parcels = rng.integers(0, n, size)
    values = (rng.standard_normal(size) * 10.0 ** rng.integers(-3, 6, size)).astype(dtype)
    values[:6] = [-0.0, 0.0, -3.4e38, 3.4e38, 1e-40, -1e-40]
    _check_exact(parcels, values, n)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.data(), dtype=st.sampled_from(["uint16", "int16", "float32", "float64"]),
       n=st.integers(1, 5), size=st.integers(0, 120))
def test_exact_quantiles_property(data: st.DataObject, dtype: str, n: int, size: int) -> None:
    parcels = data.draw(hnp.arrays(np.int64, size, elements=st.integers(0, n - 1)))
    if np.dtype(dtype).kind == "f":
        elements = st.floats(-1e6, 1e6, width=np.dtype(dtype).itemsize * 8)
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
    values = data.draw(hnp.arrays(dtype, size, elements=elements))
    _check_exact(parcels, values, n)


def test_weighted_quantiles_with_equal_weights_are_numpys() -> None:
    """Distinct values with equal weights: exactextract's weighted rule is numpy's linear
    rule (ties are merged first, so they are kept out here)."""
    rng = np.random.default_rng(3)
    n, size = 6, 2000
    parcels = rng.integers(0, n - 1, size)  # parcel n - 1 stays empty
    values = rng.permutation(size).astype(np.float64) / 7.0  # no ties
    got = weighted_quantiles(parcels, values, np.full(size, 0.5), n, [50.0, 10.0, 90.0])
    for i in range(n):
        v = values[parcels == i]
        for k, q in enumerate((50.0, 10.0, 90.0)):
            want = np.percentile(v, q) if v.size else np.nan
            np.testing.assert_allclose(got[k][i], want, rtol=1e-12, equal_nan=True)


# -- expressions: Python evaluates the same text with numpy -----------------------------------

_NS = {"sqrt": np.sqrt, "abs": np.abs, "log": np.log, "exp": np.exp,
       "minimum": np.minimum, "maximum": np.maximum}


def _exprs() -> st.SearchStrategy[str]:
    leaf = st.one_of(st.sampled_from(["B02", "B04", "B08", "SCL_1"]),
                     st.floats(0.01, 100, allow_nan=False).map(lambda f: f"{f:.3g}"),
                     st.integers(0, 9).map(str))

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*", "/"]), inner).map(
                lambda t: f"{t[0]} {t[1]} {t[2]}"),
            inner.map(lambda e: f"({e})"),
            inner.map(lambda e: f"-{e}"),
            inner.map(lambda e: f"{e} ** 2"),
            st.tuples(st.sampled_from(["sqrt", "abs", "log", "exp"]), inner).map(
                lambda t: f"{t[0]}({t[1]})"),
            st.tuples(st.sampled_from(["minimum", "maximum"]), inner, inner).map(
                lambda t: f"{t[0]}({t[1]}, {t[2]})"),
        )

    return st.recursive(leaf, extend, max_leaves=8)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(text=_exprs())
def test_expressions_evaluate_as_python_does(text: str) -> None:
    """Precedence, associativity, unary minus against ``**`` and the functions: the parser
    must compute what Python computes for the same text."""
    rng = np.random.default_rng(4)
    arrays = {b: rng.uniform(0.0, 1.0, 16) for b in ("B02", "B04", "B08", "SCL_1")}
    with np.errstate(all="ignore"):
        # numbers as float64 scalars, as the parser reads them (1 / 0 is inf, not an error)
        oracle = re.sub(r"(?<![\w.])(\d+(?:\.\d*)?(?:e[+-]?\d+)?)", r"_f(\1)", text)
        want = np.asarray(eval(oracle, {"__builtins__": {}}, _NS | arrays | {"_f": np.float64}),
                          dtype=np.float64)
        named = {b for b in arrays if b in text}
        if not named:
            with pytest.raises(ValueError, match="names no band"):
                parse_expression(text)
            return
        expr = parse_expression(text)
        got = expr(arrays)
    np.testing.assert_allclose(np.broadcast_to(got, want.shape), want, rtol=1e-12,
                               equal_nan=True)
    assert set(expr.bands) == named


# -- time selection: pandas' partial-string indexing is the oracle ----------------------------

_TIMES = np.array(["2023-12-31T23:59:59", "2024-01-01T00:00:00", "2024-02-29T10:00:00",
                   "2024-05-01T00:00:00", "2024-05-31T23:59:59", "2024-06-15T16:58:49",
                   "2024-07-31T12:00:00", "2024-08-01T00:00:00", "2025-01-10T10:00:00"],
                  dtype="datetime64[s]")


@pytest.mark.parametrize("sel", [
    "2024", "2024-05", "2024-02-29", "2024-06-15", "2023", "2026",
    "2024-05/2024-07", "2024-02/2024-05-31", "2024-01-01/2024-01-01",
    "/2024-05", "2024-07/", "2024-06-15T16:58:49",
])
def test_time_strings_select_what_pandas_selects(sel: str) -> None:
    s = pd.Series(np.arange(_TIMES.size), index=pd.DatetimeIndex(_TIMES))
    if "/" in sel:
        a, b = sel.split("/")
        want = s.loc[(a or None):(b or None)].to_numpy()
    elif "T" in sel:
        want = s[s.index == pd.Timestamp(sel)].to_numpy()
    else:
        want = s.loc[sel:sel].to_numpy()  # the whole period, empty when none
    np.testing.assert_array_equal(select_times(_TIMES, sel), want)


def test_time_objects_and_lists() -> None:
    s = pd.Series(np.arange(_TIMES.size), index=pd.DatetimeIndex(_TIMES))
    np.testing.assert_array_equal(select_times(_TIMES, 2024), s.loc["2024"].to_numpy())
    np.testing.assert_array_equal(select_times(_TIMES, date(2024, 5, 31)),
                                  s.loc["2024-05-31"].to_numpy())
    np.testing.assert_array_equal(select_times(_TIMES, datetime(2024, 6, 15, 16, 58, 49)),
                                  [5])
    np.testing.assert_array_equal(select_times(_TIMES, slice("2024-05", "2024-07")),
                                  s.loc["2024-05":"2024-07"].to_numpy())
    np.testing.assert_array_equal(select_times(_TIMES, ["2025", "2023", "2024-05"]),
                                  np.sort(np.r_[s.loc["2025"], s.loc["2023"],
                                                s.loc["2024-05"]]))
    np.testing.assert_array_equal(select_times(_TIMES, None), np.arange(_TIMES.size))
    with pytest.raises(ValueError, match="cannot read time"):
        select_times(_TIMES, "2024-13")
    with pytest.raises(TypeError, match="time must be"):
        select_times(_TIMES, 3.5)  # type: ignore[arg-type]


# -- Sentinel-2 names: ESA's product naming convention ----------------------------------------

@pytest.mark.parametrize(("path", "band", "tile", "when", "offset"), [
    # L2A SAFE, baseline 04.00 (N0400): BOA_ADD_OFFSET -1000
    ("S2B_MSIL2A_20220309T101839_N0400_R065_T32TQM_20220309T132226.SAFE/GRANULE/"
     "L2A_T32TQM_A026170_20220309T102416/IMG_DATA/R10m/T32TQM_20220309T101839_B04_10m.jp2",
     "B04", "T32TQM", datetime(2022, 3, 9, 10, 18, 39), -1000),
    # baseline 02.14 before the offset existed
    ("S2A_MSIL2A_20200615T165901_N0214_R069_T16TCK_20200615T213522.SAFE/GRANULE/"
     "L2A_T16TCK_A025985_20200615T170532/IMG_DATA/R20m/T16TCK_20200615T165901_SCL_20m.jp2",
     "SCL", "T16TCK", datetime(2020, 6, 15, 16, 59, 1), 0),
    # no baseline in the name: decided by the date (04.00 from 2022-01-25)
    ("T16TCK_20240615T165849_B8A_20m.tif", "B8A", "T16TCK", datetime(2024, 6, 15, 16, 58, 49),
     -1000),
    ("T16TCK_20211231T165849_B02_10m.tif", "B02", "T16TCK", datetime(2021, 12, 31, 16, 58, 49),
     0),
    # Element 84 / AWS COG layout: a folder per product, the band as the file name
    ("sentinel-s2-l2a-cogs/16/T/CK/2024/6/S2A_16TCK_20240615_0_L2A/B08.tif", "B08", "T16TCK",
     datetime(2024, 6, 15), -1000),
])
def test_s2_names(path: str, band: str, tile: str, when: datetime, offset: int) -> None:
    name = parse_s2_name(path)
    assert name is not None
    assert (name.band, name.tile, name.time) == (band, tile, when)
    assert boa_offset(name) == offset


@pytest.mark.parametrize("path", ["worldcover_2021.tif", "T16TCK_20240615T165849_B13_10m.tif",
                                  "T16TCK_2024061_B04_10m.tif", "B04.tif.aux.xml/x.tif"])
def test_non_s2_names_are_not_parsed(path: str) -> None:
    assert parse_s2_name(path) is None


# -- STAC: pystac reads the same document -----------------------------------------------------

def test_stac_items_read_as_pystac_reads_them() -> None:
    pystac = pytest.importorskip("pystac")
    items = []
    for k, day in enumerate(("2024-06-15T16:58:49.024000Z", "2024-06-20T16:58:51Z")):
        item = pystac.Item(id=f"S2A_T16TCK_{k}", geometry=None, bbox=None,
                           datetime=datetime.fromisoformat(day.replace("Z", "+00:00")),
                           properties={"s2:mgrs_tile": "16TCK",
                                       "s2:processing_baseline": "05.10"})
        item.add_asset("B04", pystac.Asset(href=f"../cogs/{k}/B04.tif", extra_fields={
            "raster:bands": [{"scale": 0.0001, "offset": -0.1, "nodata": 0}]}))
        item.add_asset("B08", pystac.Asset(href=f"az://imagery/{k}/B08.tif"))
        item.add_asset("visual", pystac.Asset(href=f"{k}/TCI.tif"))  # not a band: skipped
        items.append(item)
    collection = pystac.ItemCollection(items)
    base = "/data/stac/items.json"
    got = list(parse_stac(collection.to_dict(transform_hrefs=False), base))
    assert len(got) == 4
    for asset in got:
        item = next(i for i in items if asset.href.endswith(f"{i.id[-1]}/{asset.band}.tif"))
        want = item.assets[asset.band]
        assert asset.time == item.datetime.replace(tzinfo=None)
        assert asset.tile == "T" + item.properties["s2:mgrs_tile"]
        assert asset.baseline == item.properties["s2:processing_baseline"].replace(".", "")
        href = want.href if "://" in want.href else pystac.utils.make_absolute_href(
            want.href, base)
        assert asset.href == href
        bands = want.extra_fields.get("raster:bands")
        assert (asset.scale, asset.offset) == (
            (bands[0]["scale"], bands[0]["offset"]) if bands else (None, None))
