"""Fault matrix, credential leakage: a secret never appears in output, logs, tracebacks or the
store, whatever path the CLI takes.

The secrets are real: an account SAS for Azurite (its signature is the marker) used for the
happy path (ingest, info, stats on az://), and a marker account key (wrong, so Azurite answers
403) for the failure paths: 403, an unreachable endpoint, secrets in the URL, secrets given
as option names or values. Every run is a real ``parcelzarr`` process with ``-vv`` (debug
logs) and, where it fails, again with ``--debug`` (tracebacks); every byte it prints and every
file of the store (local and every blob of the container) and of the cache is searched.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, quote

import pytest
from azure.storage.blob import (
    AccountSasPermissions,
    BlobServiceClient,
    ResourceTypes,
    generate_account_sas,
)
from parcelzarr.stores._azure import AZURITE_ACCOUNT, AZURITE_KEY

from parcelzarr.testing import Azurite

from ._rasters import make_parcels, make_scene

pytestmark = pytest.mark.azure


def _forms(secret: str) -> list[str]:
    """The secret as it could appear: raw, URL-quoted, and a distinctive 16-char slice."""
    return sorted({secret, quote(secret, safe=""), secret[:16]}, key=len)


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "parcelzarr.cli", "-vv", *args], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def _search(texts: dict[str, str], files: dict[str, bytes], secrets: list[str]) -> list[str]:
    found = []
    for secret in secrets:
        for form in _forms(secret):
            found += [f"{name}: {form[:6]}..." for name, t in texts.items() if form in t]
            found += [f"file {name}: {form[:6]}..." for name, b in files.items()
                      if form.encode() in b]
    return found


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _blobs(azurite: Azurite, container: str) -> dict[str, bytes]:
    with BlobServiceClient.from_connection_string(azurite.connection_string) as client:
        cc = client.get_container_client(container)
        return {f"az://{container}/{b.name}": cc.download_blob(b.name).readall()
                for b in cc.list_blobs()}


def test_no_secret_leaks_through_cli_paths(azurite: Azurite, az_container: str,
                                           tmp_path: Path) -> None:
    sas = generate_account_sas(
        AZURITE_ACCOUNT, AZURITE_KEY, resource_types=ResourceTypes(service=True, container=True,
                                                                   object=True),
        permission=AccountSasPermissions(read=True, write=True, delete=True, list=True,
                                         add=True, create=True),
        expiry=datetime.now(UTC) + timedelta(hours=1))
    signature = parse_qs(sas)["sig"][0]
    sas_conn = (f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={sas}")
    bad_key = base64.b64encode(b"PZLEAK" + uuid.uuid4().bytes * 3).decode()
    secrets = [signature, sas, bad_key]

    scene = make_scene(tmp_path / "scene", shape=(300, 320), bands=("B04", "B08"))
    parcels = tmp_path / "parcels.gpkg"
    make_parcels(shape=(300, 320), n=20).to_file(parcels)
    cache = tmp_path / "cache"
    base = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_STORAGE")}
    base |= {"PARCELZARR_CACHE_DIR": str(cache), "PYTHONWARNINGS": "default"}
    good = base | {"AZURE_STORAGE_CONNECTION_STRING": sas_conn}
    wrong_key = base | {"AZURE_STORAGE_CONNECTION_STRING": (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={bad_key};"
        f"BlobEndpoint={azurite.blob_endpoint};")}
    unreachable = base | {"AZURE_STORAGE_CONNECTION_STRING": (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={bad_key};"
        "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;")}
    url = f"az://{az_container}/store.zarr"
    out = tmp_path / "stats.csv"
    out_adlfs = tmp_path / "stats-adlfs.csv"
    local = tmp_path / "local.zarr"
    runs: list[tuple[str, list[str], dict[str, str], int]] = [
        # happy paths, credentials from the environment and from options
        ("ingest", ["ingest", *map(str, scene), "--store", url, "--quiet"], good, 0),
        ("info", ["info", url], good, 0),
        ("info --json", ["info", url, "--json"], good, 0),
        ("stats", ["stats", url, str(parcels), "--out", str(out), "--quiet"], good, 0),
        ("stats adlfs", ["stats", url, str(parcels), "--out", str(out_adlfs), "--quiet",
                         "--storage-option", "transport=adlfs"], good, 0),
        ("info option", ["info", url, "--storage-option", f"connection_string={sas_conn}"],
         base, 0),
        ("ingest local", ["ingest", *map(str, scene), "--store", str(local), "--quiet"], base,
         0),
        # failures
        ("403 info", ["info", url], wrong_key, 2),
        ("403 stats", ["stats", url, str(parcels), "--out", str(tmp_path / "403.csv")],
         wrong_key, 2),
        ("403 ingest", ["ingest", str(scene[0]), "--store", url + "2", "--quiet"], wrong_key,
         2),
        ("403 adlfs", ["info", url, "--storage-option", "transport=adlfs"], wrong_key, 2),
        ("unreachable", ["info", url], unreachable, 2),
        ("unreachable ingest", ["ingest", str(scene[0]), "--store", url, "--quiet"],
         unreachable, 2),
        ("url query", ["info", f"{url}?{sas}"], good, 2),
        ("url fragment", ["info", f"{url}#sig={signature}"], good, 2),
        ("source url", ["ingest", f"az://{az_container}/x.tif?{sas}", "--store", str(local)],
         good, 2),
        ("bare key", ["info", url, "--storage-option", f"{bad_key}"], base, 2),
        ("key as name", ["info", url, "--storage-option", f"{bad_key}="], base, 2),
        ("key on local", ["info", str(local), "--storage-option", f"account_key={bad_key}"],
         base, 2),
        ("sas on local", ["info", str(local), "--storage-option", f"sas_token={sas}"], base,
         2),
        ("unknown option", ["info", url, "--storage-option", f"account_kee={bad_key}",
                            "--storage-option", f"account_name={AZURITE_ACCOUNT}"], base, 2),
        ("no store", ["info", f"az://{az_container}/missing.zarr"], good, 2),
    ]
    # The two ingests first (the other runs read their stores), then every other run and
    # the --debug re-run of each failure at once: separate processes, separate outputs.
    jobs = {(name, False): (args, env) for name, args, env, _ in runs}
    jobs |= {(name, True): (["--debug", *args], env) for name, args, env, code in runs if code}
    first = [("ingest", False), ("ingest local", False)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(zip(first, pool.map(lambda k: _run(*jobs[k], tmp_path), first),
                        strict=True))
        rest = [k for k in jobs if k not in done]
        done |= dict(zip(rest, pool.map(lambda k: _run(*jobs[k], tmp_path), rest),
                         strict=True))
    texts: dict[str, str] = {}
    for name, _, _, code in runs:
        res = done[(name, False)]
        assert res.returncode == code, (name, res.stdout[-500:], res.stderr[-1500:])
        texts[f"{name} stdout"] = res.stdout
        texts[f"{name} stderr"] = res.stderr
        if code:  # the same failure with tracebacks
            dbg = done[(name, True)]
            assert dbg.returncode != 0
            texts[f"{name} --debug"] = dbg.stdout + dbg.stderr
    files = _tree(tmp_path / "local.zarr") | _tree(cache) | _blobs(azurite, az_container)
    files |= {str(p): p.read_bytes() for p in (out, out_adlfs)}
    assert any(k.endswith("zarr.json") for k in files) and len(files) > 20
    assert sum("Traceback" in t for t in texts.values()) >= 5  # the tracebacks were seen
    leaks = _search(texts, files, secrets)
    assert not leaks, leaks
