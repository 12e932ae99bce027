"""The test/benchmark infrastructure itself: real Azurite, and the latency proxy."""

from __future__ import annotations

import asyncio
import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import adlfs
import fsspec
import pytest
from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    ExponentialRetry,
    generate_blob_sas,
)
from azure.storage.blob.aio import ExponentialRetry as AsyncExponentialRetry
from fsspec.asyn import sync

from parcelzarr.testing import Azurite, LatencyProxy, ProxyStats

pytestmark = pytest.mark.azure


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _fs(storage_options: dict[str, Any]) -> adlfs.AzureBlobFileSystem:
    return adlfs.AzureBlobFileSystem(**storage_options, skip_instance_cache=True)


def _upload(azurite: Azurite, container: str, name: str, data: bytes) -> None:
    with BlobServiceClient.from_connection_string(azurite.connection_string) as client:
        client.get_blob_client(container, name).upload_blob(data)


def _sas_path(azurite: Azurite, container: str, blob: str, **perms: bool) -> str:
    """``/devstoreaccount1/container/blob?sas`` for raw HTTP requests."""
    sas = generate_blob_sas(
        azurite.account_name,
        container,
        blob,
        account_key=azurite.account_key,
        permission=BlobSasPermissions(**perms),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    return f"/{azurite.account_name}/{container}/{blob}?{sas}"


async def _gather_cat(fs: adlfs.AzureBlobFileSystem, paths: list[str]) -> list[bytes]:
    return list(await asyncio.gather(*(fs._cat_file(path) for path in paths)))


@pytest.fixture
def via_proxy(azurite: Azurite, proxy: LatencyProxy) -> adlfs.AzureBlobFileSystem:
    """adlfs reaching Azurite through the proxy."""
    return _fs(azurite.storage_options(proxy.endpoint))


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Azure SDK retries without its 15 s back-off (the waiting is not under test).

    adlfs builds its async client without a way to pass a retry policy, so the default
    policy's back-off is patched instead.
    """
    monkeypatch.setattr(AsyncExponentialRetry, "get_backoff_time", lambda self, settings: 0.05)


@pytest.fixture
def conn(proxy: LatencyProxy) -> Iterator[http.client.HTTPConnection]:
    """A raw keep-alive HTTP connection to the proxy."""
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    yield c
    c.close()


# -- Azurite ------------------------------------------------------------------------------


def test_azurite_endpoint_and_connection_details(azurite: Azurite) -> None:
    assert azurite.running
    assert _listening(azurite.port)
    assert azurite.blob_endpoint == f"http://127.0.0.1:{azurite.port}/devstoreaccount1"
    assert azurite.account_name == "devstoreaccount1"
    assert f"BlobEndpoint={azurite.blob_endpoint};" in azurite.connection_string
    assert azurite.storage_options() == {"connection_string": azurite.connection_string}
    routed = azurite.storage_options("http://127.0.0.1:1/devstoreaccount1")
    assert "BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;" in routed["connection_string"]
    assert azurite.blob_endpoint not in routed["connection_string"]


def test_adlfs_roundtrip(az_container: str, azure_storage_options: dict[str, Any]) -> None:
    fs = _fs(azure_storage_options)
    data = os.urandom(100_000)
    fs.pipe_file(f"{az_container}/dir/blob.bin", data)
    assert fs.cat_file(f"{az_container}/dir/blob.bin") == data
    assert fs.ls(f"{az_container}/dir", detail=False) == [f"{az_container}/dir/blob.bin"]


def test_second_instance_gets_free_port_and_stops_cleanly(azurite: Azurite) -> None:
    with Azurite() as other:
        port, pid = other.port, other.pid
        assert pid is not None
        assert port != azurite.port
        assert _listening(port)
        other.create_container("scratch")
    assert not other.running
    assert not _pid_alive(pid)
    assert not _listening(port)
    other.stop()  # idempotent
    assert _listening(azurite.port)  # the session's instance is untouched


# -- proxy: forwarding and counting ---------------------------------------------------------


def test_proxy_endpoint(azurite: Azurite, proxy: LatencyProxy) -> None:
    assert proxy.endpoint == f"http://127.0.0.1:{proxy.port}/devstoreaccount1"
    assert proxy.port != azurite.port
    assert proxy.snapshot() == ProxyStats()


def test_proxy_counts_requests_and_bytes_exactly(
    azurite: Azurite,
    proxy: LatencyProxy,
    az_container: str,
    via_proxy: adlfs.AzureBlobFileSystem,
) -> None:
    size, reads = 300_000, 7
    data = os.urandom(size)
    path = f"{az_container}/counted.bin"

    before = proxy.snapshot()
    via_proxy.pipe_file(path, data)
    upload = proxy.snapshot() - before
    assert upload.bytes_in == size
    assert upload.requests >= 1

    before = proxy.snapshot()
    for _ in range(reads):
        assert via_proxy.cat_file(path) == data
    read = proxy.snapshot() - before
    assert read.requests == reads
    assert read.bytes_out >= reads * size
    assert read.bytes_in == 0
    assert read.faults_injected == 0

    proxy.reset_counters()
    assert proxy.snapshot() == ProxyStats()
    assert (proxy.requests, proxy.bytes_in, proxy.bytes_out) == (0, 0, 0)


def test_proxy_relays_listings_and_missing_blobs(
    proxy: LatencyProxy, az_container: str, via_proxy: adlfs.AzureBlobFileSystem
) -> None:
    for i in range(3):
        via_proxy.pipe_file(f"{az_container}/ls/{i}.bin", bytes([i]) * 10)
    assert sorted(via_proxy.ls(f"{az_container}/ls", detail=False)) == [
        f"{az_container}/ls/{i}.bin" for i in range(3)
    ]
    with pytest.raises(FileNotFoundError):
        via_proxy.cat_file(f"{az_container}/ls/missing.bin")
    assert via_proxy.info(f"{az_container}/ls/1.bin")["size"] == 10  # HEAD-style request


def test_proxy_many_concurrent_connections(
    azure_storage_options: dict[str, Any],
    proxy: LatencyProxy,
    az_container: str,
    via_proxy: adlfs.AzureBlobFileSystem,
) -> None:
    n, size, delay = 96, 64 * 1024, 0.050
    blobs = {f"{az_container}/c/{i}.bin": os.urandom(size) for i in range(n)}
    _fs(azure_storage_options).pipe(blobs)
    proxy.delay_ms = delay * 1000
    proxy.reset_counters()
    start = time.perf_counter()
    # adlfs's sync cat() of many paths reads them one by one: gather its async _cat_file.
    out = sync(via_proxy.loop, _gather_cat, via_proxy, list(blobs))
    elapsed = time.perf_counter() - start
    assert out == list(blobs.values())
    assert proxy.snapshot() == ProxyStats(requests=n, bytes_out=n * size)
    # The delays overlapped: many requests were in flight together (a count, not a timing,
    # so the check holds on a loaded machine), and the whole took far less than in series.
    assert proxy.peak_in_flight >= n // 4
    assert elapsed < n * delay


class _ChunkedEcho(BaseHTTPRequestHandler):
    """Upstream answering a PUT with its (chunked) body, echoed back chunked, kept alive."""

    protocol_version = "HTTP/1.1"

    def do_PUT(self) -> None:
        body = b""
        while size := int(self.rfile.readline().split(b";")[0], 16):
            body += self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline() != b"\r\n":  # trailers
            pass
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(0, len(body), 30_000):
            piece = body[i : i + 30_000]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_proxy_relays_chunked_bodies_both_ways() -> None:
    # Azurite refuses chunked uploads, so a small echo server stands in for it.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChunkedEcho)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        upstream = f"http://127.0.0.1:{server.server_address[1]}/devstoreaccount1"
        with LatencyProxy(upstream) as p:
            conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
            for _ in range(2):  # the connection stays usable after a chunked exchange
                pieces = [os.urandom(1000), os.urandom(70_000), os.urandom(5)]
                data = b"".join(pieces)
                conn.request("PUT", "/devstoreaccount1/x", body=iter(pieces), encode_chunked=True)
                response = conn.getresponse()
                assert response.status == 200
                assert response.read() == data
            conn.close()
            assert p.snapshot() == ProxyStats(
                requests=2, bytes_in=2 * len(data), bytes_out=2 * len(data)
            )
    finally:
        server.shutdown()
        server.server_close()


def test_proxy_adds_delay_per_request(
    azurite: Azurite,
    proxy: LatencyProxy,
    az_container: str,
    via_proxy: adlfs.AzureBlobFileSystem,
) -> None:
    path = f"{az_container}/slow.bin"
    _upload(azurite, az_container, "slow.bin", b"x" * 1000)
    via_proxy.cat_file(path)  # connect outside the timed part
    proxy.delay_ms = 60
    reads = 5
    start = time.perf_counter()
    for _ in range(reads):
        via_proxy.cat_file(path)
    elapsed = time.perf_counter() - start
    assert elapsed >= reads * 0.060
    proxy.delay_ms = 0
    start = time.perf_counter()
    for _ in range(reads):
        via_proxy.cat_file(path)
    assert time.perf_counter() - start < elapsed


# -- proxy: fault injection ----------------------------------------------------------------


def test_injected_503_seen_by_raw_request(
    azurite: Azurite, proxy: LatencyProxy, az_container: str, conn: http.client.HTTPConnection
) -> None:
    _upload(azurite, az_container, "raw.bin", b"payload")
    path = _sas_path(azurite, az_container, "raw.bin", read=True)
    proxy.inject_faults(1, "503")
    assert proxy.pending_faults == 1

    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    assert response.status == 503
    assert response.getheader("x-ms-error-code") == "ServerBusy"
    assert b"<Code>ServerBusy</Code>" in body

    conn.request("GET", path)  # same keep-alive connection, fault used up
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == b"payload"
    assert proxy.snapshot() == ProxyStats(requests=2, bytes_out=7, faults_injected=1)
    assert proxy.pending_faults == 0


def test_injected_head_fault_has_no_body(
    azurite: Azurite, proxy: LatencyProxy, az_container: str
) -> None:
    """A HEAD response carries no body (RFC 9110): an injected 503 to a HEAD must not send
    one, or the client reads it as the next response on the keep-alive connection.
    (http.client closes the connection after any HEAD, so this speaks HTTP on a socket.)"""
    _upload(azurite, az_container, "head.bin", b"payload")
    path = _sas_path(azurite, az_container, "head.bin", read=True)
    proxy.inject_faults(1, "503", methods=("HEAD",))
    host = f"Host: 127.0.0.1:{proxy.port}\r\n"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        stream = sock.makefile("rb")
        sock.sendall(f"HEAD {path} HTTP/1.1\r\n{host}\r\n".encode())
        head = [stream.readline()]
        while head[-1] not in (b"\r\n", b""):
            head.append(stream.readline())
        assert head[0].startswith(b"HTTP/1.1 503")
        sock.sendall(f"GET {path} HTTP/1.1\r\n{host}\r\n".encode())
        status = stream.readline()  # the GET's status line, not a left-over error body
        assert status.startswith(b"HTTP/1.1 200"), status[:60]
    assert proxy.faults_injected == 1


def test_injected_faults_match_methods_only(
    azurite: Azurite, proxy: LatencyProxy, az_container: str, conn: http.client.HTTPConnection
) -> None:
    _upload(azurite, az_container, "m.bin", b"abc")
    proxy.inject_faults(1, "500", methods=("PUT",))
    conn.request("GET", _sas_path(azurite, az_container, "m.bin", read=True))
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"abc")
    conn.request(
        "PUT",
        _sas_path(azurite, az_container, "m.bin", write=True),
        body=b"xyz",
        headers={"x-ms-blob-type": "BlockBlob"},
    )
    response = conn.getresponse()
    assert b"<Code>InternalError</Code>" in response.read()
    assert response.status == 500
    assert proxy.faults_injected == 1
    assert proxy.bytes_in == 3


def test_injected_reset_seen_by_raw_request(
    azurite: Azurite, proxy: LatencyProxy, az_container: str, conn: http.client.HTTPConnection
) -> None:
    _upload(azurite, az_container, "reset.bin", b"payload")
    proxy.inject_faults(1, "reset")
    conn.request("GET", _sas_path(azurite, az_container, "reset.bin", read=True))
    with pytest.raises(ConnectionError):  # RST: reset or remote-disconnected
        conn.getresponse()
    assert proxy.faults_injected == 1


def test_injected_timeout_holds_then_closes(
    azurite: Azurite, proxy: LatencyProxy, az_container: str, conn: http.client.HTTPConnection
) -> None:
    _upload(azurite, az_container, "hang.bin", b"payload")
    proxy.timeout_s = 0.3
    try:
        proxy.inject_faults(1, "timeout")
        start = time.perf_counter()
        conn.request("GET", _sas_path(azurite, az_container, "hang.bin", read=True))
        with pytest.raises(ConnectionError):
            conn.getresponse()
        assert time.perf_counter() - start >= 0.3
    finally:
        proxy.timeout_s = 10.0


def test_injected_hang_never_answers(
    azurite: Azurite, proxy: LatencyProxy, az_container: str, conn: http.client.HTTPConnection
) -> None:
    _upload(azurite, az_container, "hung.bin", b"payload")
    proxy.timeout_s = 0.1  # a hang ignores it: it holds until the client gives up
    try:
        proxy.inject_faults(1, "hang")
        conn.timeout = 0.6
        conn.request("GET", _sas_path(azurite, az_container, "hung.bin", read=True))
        start = time.perf_counter()
        with pytest.raises(TimeoutError):
            conn.getresponse()
        assert time.perf_counter() - start >= 0.5
    finally:
        proxy.timeout_s = 10.0


def test_injected_truncate_cuts_the_body(
    azurite: Azurite, proxy: LatencyProxy, az_container: str, conn: http.client.HTTPConnection
) -> None:
    data = os.urandom(10_000)
    _upload(azurite, az_container, "cut.bin", data)
    proxy.inject_faults(1, "truncate")
    conn.request("GET", _sas_path(azurite, az_container, "cut.bin", read=True))
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Length") == str(len(data))
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    assert cut.value.partial == data[: len(data) // 2]


def test_injected_truncate_of_a_write_drops_the_answer_after_the_write(
    azurite: Azurite, proxy: LatencyProxy, az_container: str, conn: http.client.HTTPConnection
) -> None:
    proxy.inject_faults(1, "truncate", methods=("PUT",))
    conn.request("PUT", _sas_path(azurite, az_container, "w.bin", write=True), body=b"xyz",
                 headers={"x-ms-blob-type": "BlockBlob"})
    with pytest.raises(ConnectionError):  # no response head at all
        conn.getresponse()
    with BlobServiceClient.from_connection_string(azurite.connection_string) as client:
        assert client.get_blob_client(az_container, "w.bin").download_blob().readall() == b"xyz"


def test_fault_rate_is_seeded_and_matches_targets(
    azurite: Azurite, proxy: LatencyProxy, az_container: str
) -> None:
    for name in ("a.bin", "c/0.bin"):
        _upload(azurite, az_container, name, b"x")

    def statuses(seed: int) -> list[int]:
        proxy.clear_faults()
        proxy.fault_rate(0.5, "503", match=r"/c/", seed=seed)
        out = []
        for _ in range(20):
            for name in ("a.bin", "c/0.bin"):
                path = _sas_path(azurite, az_container, name, read=True)
                c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
                c.request("GET", path)
                out.append(c.getresponse().status)
                c.close()
        return out

    first, again = statuses(7), statuses(7)
    assert first == again
    assert all(s == 200 for s in first[0::2])  # a.bin never matches
    assert 3 <= first[1::2].count(503) <= 17
    assert proxy.pending_faults == 0  # a standing rate is not a queued fault


@pytest.mark.usefixtures("fast_retries")
@pytest.mark.parametrize("kind", ["503", "500", "reset"])
def test_adlfs_retries_through_faults(
    azurite: Azurite,
    proxy: LatencyProxy,
    az_container: str,
    via_proxy: adlfs.AzureBlobFileSystem,
    kind: str,
) -> None:
    data = os.urandom(50_000)
    _upload(azurite, az_container, "retry.bin", data)
    proxy.inject_faults(2, kind)  # type: ignore[arg-type]
    assert via_proxy.cat_file(f"{az_container}/retry.bin") == data
    stats = proxy.snapshot()
    assert stats.faults_injected == 2
    assert stats.requests == 3
    assert proxy.pending_faults == 0


def test_sdk_retries_through_faults(
    azurite: Azurite, proxy: LatencyProxy, az_container: str
) -> None:
    data = os.urandom(10_000)
    _upload(azurite, az_container, "sdk.bin", data)
    proxy.inject_faults(1, "503")
    proxy.inject_faults(1, "reset")
    retry = ExponentialRetry(initial_backoff=0, increment_base=0, random_jitter_range=0)
    conn_str = azurite.storage_options(proxy.endpoint)["connection_string"]
    with BlobServiceClient.from_connection_string(conn_str, retry_policy=retry) as client:
        assert client.get_blob_client(az_container, "sdk.bin").download_blob().readall() == data
    assert proxy.faults_injected == 2


def test_inject_faults_rejects_bad_input(proxy: LatencyProxy) -> None:
    with pytest.raises(ValueError, match="kind"):
        proxy.inject_faults(1, "404")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="methods"):
        proxy.inject_faults(1, "503", methods="GET")
    with pytest.raises(ValueError, match="rate"):
        proxy.fault_rate(1.5, "503")
    assert proxy.pending_faults == 0


# -- proxy: lifecycle ----------------------------------------------------------------------


def test_proxy_stop_closes_listener_and_thread(azurite: Azurite) -> None:
    with LatencyProxy(azurite.blob_endpoint) as p:
        port = p.port
        thread = p._thread
        host = urlsplit(p.endpoint)
        assert (host.hostname, host.port) == ("127.0.0.1", port)
        keep = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        keep.request("GET", "/devstoreaccount1?comp=list")
        keep.getresponse().read()  # leaves an open keep-alive connection behind
    assert thread is not None
    assert not thread.is_alive()
    assert not _listening(port)
    keep.close()
    p.stop()  # idempotent


def test_proxy_rejects_non_http_upstream() -> None:
    with pytest.raises(ValueError, match="http"):
        LatencyProxy("https://example.invalid/devstoreaccount1")


def test_store_url_is_writable(store_url: tuple[str, dict[str, Any] | None]) -> None:
    url, storage_options = store_url
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    assert not fs.exists(path)
    fs.makedirs(path, exist_ok=True)
    fs.pipe_file(f"{path}/zarr.json", b"{}")
    assert fs.cat_file(f"{path}/zarr.json") == b"{}"
