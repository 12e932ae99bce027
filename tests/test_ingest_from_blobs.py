"""Ingest sources that live in Azure Blob Storage (az:// URLs and globs), through Azurite."""

from __future__ import annotations

from pathlib import Path

import adlfs
import numpy as np
import pytest
import rasterio
import xarray as xr

import parcelzarr as pz
from parcelzarr.testing import Azurite

from ._rasters import make_scene

pytestmark = pytest.mark.azure


def test_ingest_az_glob_into_az_store(tmp_path: Path, azurite: Azurite, az_container: str) -> None:
    scene = make_scene(tmp_path / "scene", shape=(300, 280), bands=("B04", "B08"))
    fs = adlfs.AzureBlobFileSystem(**azurite.storage_options())
    for path in scene:
        fs.put_file(str(path), f"{az_container}/s2/{path.name}")
    opts = azurite.storage_options()
    url = f"az://{az_container}/stores/county.zarr"
    report = pz.ingest(f"az://{az_container}/s2/*_B0?_10m.tif", url, storage_options=opts,
                       quiet=True)
    assert report.sources_written == 2
    store = pz.open_store(url, storage_options=opts)
    assert store.bands == ["B04", "B08"]
    ds = xr.open_zarr(store._handle.store, group="utm16n/10m", mask_and_scale=False)
    for path in scene:
        band = path.name.split("_")[2]
        with rasterio.open(path) as src:
            sub = ds[band].sel(x=slice(src.bounds.left, src.bounds.right),
                               y=slice(src.bounds.top, src.bounds.bottom))
            np.testing.assert_array_equal(sub[0].values, src.read(1))
    # the manifest records the blob URLs; a second run is a no-op
    again = pz.ingest(f"az://{az_container}/s2/*.tif", url, storage_options=opts, quiet=True)
    assert again.sources_written == 0
    assert again.sources_skipped == 2
    store.close()


def test_missing_blob_is_reported(azurite: Azurite, az_container: str) -> None:
    from parcelzarr.errors import SourceNotFoundError

    with pytest.raises(SourceNotFoundError, match="matches no blob"):
        pz.ingest(f"az://{az_container}/nope/T16TCK_20240615T165849_B04_10m.tif",
                  f"az://{az_container}/s.zarr", storage_options=azurite.storage_options())
