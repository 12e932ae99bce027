"""stores/: URL parsing, credentials, redaction, retries (through real Azurite + fault proxy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from parcelzarr.stores import RetryPolicy, open_store_handle, parse_location
from parcelzarr.stores._azure import AZURITE_KEY, azure_options, redact
from parcelzarr.stores._errors import is_transient

import parcelzarr as pz
from parcelzarr.errors import CredentialsError, StoreNotFoundError, StoreUnreachableError
from parcelzarr.testing import Azurite, LatencyProxy

from ._rasters import make_parcels, make_scene


@pytest.mark.parametrize(
    ("url", "protocol", "path"),
    [
        ("az://imagery/stores/a.zarr", "az", "imagery/stores/a.zarr"),
        ("abfs://imagery/a.zarr", "az", "imagery/a.zarr"),
        ("abfs://imagery@acct.dfs.core.windows.net/a.zarr", "az", "imagery/a.zarr"),
        ("memory://x/y", "memory", "/x/y"),
    ],
)
def test_parse_location(url: str, protocol: str, path: str) -> None:
    loc = parse_location(url)
    assert (loc.protocol, loc.path) == (protocol, path)


def test_parse_local_and_bad_urls(tmp_path: Path) -> None:
    assert parse_location(str(tmp_path / "s.zarr")).path == str(tmp_path / "s.zarr")
    assert parse_location(f"file://{tmp_path}/s.zarr").protocol == "file"
    with pytest.raises(ValueError, match="unsupported URL scheme"):
        parse_location("s3://bucket/x")
    with pytest.raises(ValueError, match="SAS token"):
        parse_location("az://c/x?sig=secret")
    with pytest.raises(ValueError, match="names no container"):
        parse_location("az:///x")


def test_missing_azure_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME",
                "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(CredentialsError, match="AZURE_STORAGE_CONNECTION_STRING"):
        pz.open_store("az://container/store.zarr")
    with pytest.raises(CredentialsError):
        pz.ingest("az://container/x.tif", "az://container/store.zarr")


def test_azurite_account_needs_no_key() -> None:
    opts = azure_options({"account_name": "devstoreaccount1"})
    assert opts["account_key"] == AZURITE_KEY
    assert azure_options({"account_name": "acct", "sas_token": "t"}) == {
        "account_name": "acct", "sas_token": "t"}


def test_redact_removes_secrets() -> None:
    text = ("DefaultEndpointsProtocol=http;AccountName=a;AccountKey=c2VjcmV0;BlobEndpoint=x "
            "https://a.blob.core.windows.net/c/b?sv=1&sig=abc%2Fdef {'account_key': 'k3y'}")
    out = redact(text)
    for secret in ("c2VjcmV0", "abc%2Fdef", "k3y"):
        assert secret not in out


def test_local_store_rejects_storage_options(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="do not apply"):
        open_store_handle(str(tmp_path / "s.zarr"), {"account_name": "x"})


def test_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError, match="parcelzarr ingest"):
        pz.open_store(str(tmp_path / "nothing.zarr"))


def test_transient_classification() -> None:
    class HttpError(Exception):
        def __init__(self, status: int) -> None:
            super().__init__(f"status {status}")
            self.status_code = status

    assert is_transient(HttpError(503)) and is_transient(HttpError(500))
    assert not is_transient(HttpError(404)) and not is_transient(HttpError(403))
    assert is_transient(ConnectionResetError()) and is_transient(TimeoutError())
    assert not is_transient(FileNotFoundError()) and not is_transient(ValueError())


@pytest.mark.azure
def test_unreachable_store_is_reported(azurite: Azurite) -> None:
    opts = azurite.storage_options(endpoint="http://127.0.0.1:9/devstoreaccount1")
    quick = RetryPolicy(attempts=2, base_delay=0.01)
    handle = open_store_handle("az://c/s.zarr", opts, retry=quick)
    with pytest.raises(StoreUnreachableError) as err:
        handle.check_reachable()
    assert AZURITE_KEY not in str(err.value)
    handle.close()


@pytest.mark.azure
@pytest.mark.parametrize("kind", ["503", "500", "reset"])
def test_transient_errors_are_retried_and_results_exact(
    tmp_path: Path, azurite: Azurite, az_container: str, proxy: LatencyProxy, kind: str
) -> None:
    scene = make_scene(tmp_path / "scene", shape=(300, 320))
    opts = azurite.storage_options(endpoint=proxy.endpoint)
    url = f"az://{az_container}/s.zarr"
    pz.ingest([str(p) for p in scene], url, storage_options=opts, quiet=True)
    parcels = make_parcels(shape=(300, 320), n=20)
    clean = pz.open_store(url, storage_options=opts).zonal_stats(parcels, bands="B04")
    store = pz.open_store(url, storage_options=opts)
    store._handle.store.policy = RetryPolicy(attempts=8, base_delay=0.01, max_delay=0.05)
    proxy.inject_faults(5, kind=kind)
    faulty = store.zonal_stats(parcels, bands="B04")
    assert proxy.faults_injected >= 5
    np.testing.assert_array_equal(clean["count"].to_numpy(), faulty["count"].to_numpy())
    np.testing.assert_allclose(clean["mean"].to_numpy(), faulty["mean"].to_numpy(),
                               equal_nan=True)


