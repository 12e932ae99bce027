"""Twenty concurrent readers of one store (local and Azurite): every result is exact.

Half the readers share one ``ParcelStore`` handle (threads of one notebook or service), half
open their own. Oracle: rasterio reads of the source GeoTIFFs with rasterio's
``geometry_mask`` (pixel-centre rule), never parcelzarr.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.features import geometry_mask

import parcelzarr as pz

from ._rasters import make_parcels, make_scene

SHAPE = (300, 320)
READERS = 20


def _oracle(tifs: list[Path], parcels: Any) -> pd.DataFrame:
    rows = []
    for tif in tifs:
        band = tif.stem.split("_")[2]
        with rasterio.open(tif) as src:
            data, transform, nodata = src.read(1), src.transform, src.nodata
        for pid, geom in zip(parcels.index, parcels.geometry, strict=True):
            inside = ~geometry_mask([geom], data.shape, transform)
            v = data[inside & (data != nodata)].astype(np.float64)
            rows.append({"parcel_id": pid, "band": band, "count": v.size,
                         "mean": v.mean() if v.size else np.nan,
                         "std": v.std() if v.size else np.nan})
    return pd.DataFrame(rows).set_index(["parcel_id", "band"]).sort_index()


def _poll(store: pz.ParcelStore, parcels: Any) -> pd.DataFrame:
    df = store.zonal_stats(parcels, stats=["count", "mean", "std"], quiet=True)
    return df.set_index(["parcel_id", "band"])[["count", "mean", "std"]].sort_index()


def _run_readers(url: str, options: dict[str, Any] | None, tifs: list[Path]) -> None:
    parcels = make_parcels(SHAPE, n=40)
    want = _oracle(tifs, parcels)
    assert (want["count"] > 0).sum() > 20  # most parcels hold data: the check has teeth
    shared = pz.open_store(url, storage_options=options)

    def reader(i: int) -> pd.DataFrame:
        store = shared if i % 2 else pz.open_store(url, storage_options=options)
        return _poll(store, parcels)

    with ThreadPoolExecutor(READERS) as pool:
        results = list(pool.map(reader, range(READERS)))
    assert len(results) == READERS
    for got in results:
        assert got.index.equals(want.index)
        np.testing.assert_array_equal(got["count"].to_numpy(), want["count"].to_numpy())
        for col in ("mean", "std"):
            np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float),
                                       rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=col)


def test_twenty_concurrent_readers_local(tmp_path: Path) -> None:
    tifs = make_scene(tmp_path / "src", shape=SHAPE, bands=["B04", "B08"])
    url = str(tmp_path / "c.zarr")
    pz.ingest([str(p) for p in tifs], url, quiet=True, chunk_size=64)
    _run_readers(url, None, tifs)


@pytest.mark.azure
def test_twenty_concurrent_readers_azurite(tmp_path: Path, azurite: Any,
                                           az_container: str) -> None:
    tifs = make_scene(tmp_path / "src", shape=SHAPE, bands=["B04", "B08"])
    url = f"az://{az_container}/c.zarr"
    pz.ingest([str(p) for p in tifs], url, storage_options=azurite.storage_options(),
              quiet=True, chunk_size=64)
    _run_readers(url, azurite.storage_options(), tifs)
