"""Band-math expressions: functions take exactly their arguments, and no input (huge numbers,
deep nesting, enormous sums) escapes as a raw Overflow/Memory/RecursionError.

Oracle: numpy on the real Sentinel-2 L2A bands of Luxembourg (terra), read with rasterio.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from parcelzarr.query._expr import parse_expression
from rasterio.features import geometry_mask

import parcelzarr as pz

from ._rasters import SHARED_DATA

LUX = SHARED_DATA / "terra-lux"


@pytest.fixture(scope="module")
def lux(tmp_path_factory: pytest.TempPathFactory) -> pz.ParcelStore:
    if not LUX.exists():
        pytest.skip("shared real data not available")
    url = str(tmp_path_factory.mktemp("lux") / "lux.zarr")
    pz.ingest(str(LUX / "sent2_L2A_2024-08-24.tif"), url, band="S2", time="2024-08-24",
              quiet=True)
    return pz.open_store(url)


def test_extra_function_argument_is_refused_not_used_as_output(lux: pz.ParcelStore) -> None:
    """``sqrt(B04, B08)`` once passed B08 as numpy's output buffer and gave 0.0 everywhere."""
    parcels = gpd.read_file(LUX / "lux.shp")
    with pytest.raises(ValueError, match="sqrt with 2 argument"):
        lux.zonal_stats(parcels, indices=["sqrt(B04, B08) - B08"], stats="mean")
    with pytest.raises(ValueError, match="minimum with 1 argument"):
        lux.zonal_stats(parcels, indices=["minimum(B04)"], stats="mean")
    # the one-argument form is computed, and matches numpy on the source bands
    df = lux.zonal_stats(parcels, indices=["sqrt(B04) - B08"], stats="count,mean")
    with rasterio.open(LUX / "sent2_L2A_2024-08-24.tif") as ds:
        b04, b08 = ds.read(3).astype(np.float64), ds.read(4).astype(np.float64)
        for i, geom in enumerate(parcels.geometry):
            inside = ~geometry_mask([geom], b04.shape, ds.transform)
            x = np.sqrt(b04[inside]) - b08[inside]
            x = x[np.isfinite(x)]
            assert df["count"][i] == x.size
            if x.size:
                assert df["mean"][i] == pytest.approx(x.mean(), rel=1e-6)
    assert (df["count"] > 0).sum() >= 5


@pytest.mark.parametrize("text", [
    "B04 * 1e999",                      # a float literal that is inf
    "B04 * " + "9" * 400,               # an int beyond float64
    "B04 ** " + "9" * 400,
    "B04 * " + "9" * 5000,              # beyond Python's int-string limit
    "-" * 100_000 + "B04",              # 100k unary minus signs
    "+".join(["B04"] * 100_000),        # a 100k-term sum
    "-" * 500 + "B04",                  # short, but nested 500 deep
    "+".join(["B04"] * 240),            # short, but 479 terms
    "(" * 300 + "B04" + ")" * 300,
])
def test_pathological_expressions_raise_a_clear_value_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"^expression ") as info:
        parse_expression(text)
    message = str(info.value)
    assert len(message) < 300 and "\n" not in message  # one line, the text shortened


@pytest.mark.parametrize("text", ["sqrt + B04", "B04(B08)", "sqrt(B04, out=B08)",
                                  "sqrt(*B04)", "abs()", "exp(B04, B04, B04)"])
def test_misused_functions_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        parse_expression(text)


def test_limits_leave_real_expressions_alone() -> None:
    e = parse_expression("2.5 * (B08 - B04) / (B08 + 6 * B04 - 7.5 * B02 + 1)")
    assert e.bands == ("B02", "B04", "B08")
    v = {"B02": np.array([0.05]), "B04": np.array([0.1]), "B08": np.array([0.4])}
    assert float(e(v)[0]) == pytest.approx(2.5 * 0.3 / (0.4 + 0.6 - 0.375 + 1))
    assert float(parse_expression("maximum(B04, B08) - minimum(B04, B08)")(v)[0]) == \
        pytest.approx(0.3)


def test_expression_error_through_the_cli(lux: pz.ParcelStore, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from parcelzarr.cli import main

    res = CliRunner().invoke(main, ["stats", lux.url, str(LUX / "lux.shp"), "--out",
                                    str(tmp_path / "o.csv"), "--indices",
                                    "sqrt(B04, B08) - B08", "--quiet"])
    assert res.exit_code == 2
    assert "sqrt with 2 argument" in res.output
    assert not (tmp_path / "o.csv").exists()
