"""An HTTP/1.1 reverse proxy that adds latency, counts traffic and injects faults.

Put in front of Azurite, it makes each request cost a cloud-like round trip, so that request
counts show up in timings, and it counts what crossed the wire (requests, body bytes each
way) independently of the client under test. For retry tests it fails the next *n* matching
requests, or a random fraction of them, with a 503/500, a connection reset, a hang or a
truncated response body.

It relays raw HTTP/1.1 over asyncio streams in a background thread with its own event loop:
each client connection gets one upstream connection, requests are parsed just enough to
find their boundaries (``Content-Length`` or chunked bodies, keep-alive), and bytes are
forwarded unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self, get_args
from urllib.parse import urlsplit

__all__ = ["FaultKind", "LatencyProxy", "ProxyStats"]

FaultKind = Literal["503", "500", "reset", "timeout", "hang", "truncate"]

_HEAD_LIMIT = 1 << 20  # StreamReader limit: largest request/response head accepted
_READ_SIZE = 1 << 18  # body relay piece size
_ERROR_CODES = {"503": (503, "Service Unavailable", "ServerBusy", "The server is busy."),
                "500": (500, "Internal Server Error", "InternalError",
                        "The server encountered an internal error.")}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """Traffic counted at the proxy.

    ``requests`` counts every request received, including those answered with an injected
    fault; ``bytes_in`` / ``bytes_out`` count request / response *body* bytes (decoded
    size for chunked bodies; heads excluded). Subtract two snapshots to get a difference.
    """

    requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    faults_injected: int = 0

    def __sub__(self, other: ProxyStats) -> ProxyStats:
        return ProxyStats(
            self.requests - other.requests,
            self.bytes_in - other.bytes_in,
            self.bytes_out - other.bytes_out,
            self.faults_injected - other.faults_injected,
        )


@dataclass(slots=True)
class _FaultRule:
    remaining: int
    kind: FaultKind
    methods: frozenset[str]
    match: re.Pattern[bytes] | None = None
    rate: float | None = None  # a standing rule: each matching request fails with this chance
    rng: random.Random | None = None

    def applies(self, method: str, target: bytes) -> bool:
        if method not in self.methods:
            return False
        if self.match is not None and not self.match.search(target):
            return False
        if self.rate is not None:
            assert self.rng is not None
            return self.rng.random() < self.rate
        return self.remaining > 0


class _UpstreamClosedError(ConnectionError):
    """The upstream connection closed before sending any byte of a response."""


class _Head:
    """A parsed request or response head: start line plus the few headers that matter."""

    __slots__ = ("chunked", "close", "content_length", "expect_continue", "raw", "start")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        lines = raw.split(b"\r\n")
        self.start = lines[0]
        self.content_length: int | None = None
        self.chunked = False
        self.close = False
        self.expect_continue = False
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            key = name.strip().lower()
            if key == b"content-length":
                self.content_length = int(value.strip())
            elif key == b"transfer-encoding":
                self.chunked = b"chunked" in value.lower()
            elif key == b"connection":
                self.close = b"close" in value.lower()
            elif key == b"expect":
                self.expect_continue = b"100-continue" in value.lower()

    def without_expect(self) -> bytes:
        lines = self.raw.split(b"\r\n")
        kept = [ln for ln in lines if not ln.lower().startswith(b"expect:")]
        return b"\r\n".join(kept)


async def _relay_body(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter | None,
    head: _Head,
    count: Callable[[int], None],
) -> None:
    """Copy one message body from ``reader`` to ``writer`` (or discard it).

    ``count`` is called with the size of each piece *before* it is written, so a client
    that has received a whole body always finds it in the counters.
    """
    if head.chunked:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if writer is not None:
                writer.write(size_line)
            if size == 0:  # trailers, then the empty line
                while True:
                    line = await reader.readuntil(b"\r\n")
                    if writer is not None:
                        writer.write(line)
                    if line == b"\r\n":
                        break
                break
            count(size)
            await _copy_exact(reader, writer, size + 2)  # data + CRLF
        if writer is not None:
            await writer.drain()
        return
    await _copy_exact(reader, writer, head.content_length or 0, count)


def _no_count(n: int) -> None:
    pass


async def _copy_exact(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter | None,
    n: int,
    count: Callable[[int], None] = _no_count,
) -> None:
    while n > 0:
        data = await reader.read(min(n, _READ_SIZE))
        if not data:
            raise asyncio.IncompleteReadError(b"", n)
        n -= len(data)
        count(len(data))
        if writer is not None:
            writer.write(data)
            await writer.drain()


def _abort(writer: asyncio.StreamWriter | None, *, reset: bool = False) -> None:
    if writer is None:
        return
    if reset:  # SO_LINGER 0: close() sends RST instead of FIN
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _error_response(kind: Literal["503", "500"], *, head_only: bool = False) -> bytes:
    """An Azure-style error response; for a HEAD request the head alone (HTTP forbids a body:
    the client would read it as the start of the next response on the connection)."""
    status, reason, code, message = _ERROR_CODES[kind]
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}\n"
        "RequestId:00000000-0000-0000-0000-000000000000\n"
        f"Time:{time.strftime('%Y-%m-%dT%H:%M:%S.0000000Z', time.gmtime())}</Message></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"x-ms-error-code: {code}\r\n"
        "x-ms-request-id: 00000000-0000-0000-0000-000000000000\r\n"
        "\r\n"
    ).encode()
    return head if head_only else head + body


class LatencyProxy:
    """A latency-adding, counting, fault-injecting reverse proxy on ``127.0.0.1``.

    Parameters
    ----------
    upstream
        The blob endpoint to forward to, e.g. ``azurite.blob_endpoint``
        (``http://127.0.0.1:PORT/devstoreaccount1``). Only ``http`` is supported.
    delay_ms
        Delay added once per request before forwarding it; settable at runtime.
    timeout_s
        How long a ``"timeout"`` fault holds a request before closing the connection
        (a ``"hang"`` holds it until the client gives up or the proxy stops).

    Examples
    --------
    adlfs reads a blob in two requests, its properties then its bytes (the example starts
    Azurite, so the doctest run skips it)

    >>> import adlfs
    >>> from parcelzarr.testing import Azurite, LatencyProxy
    >>> with Azurite() as az, LatencyProxy(az.blob_endpoint, delay_ms=20) as proxy:
    ...     az.create_container("demo")
    ...     fs = adlfs.AzureBlobFileSystem(**az.storage_options(proxy.endpoint))
    ...     fs.pipe("demo/blob", b"x")
    ...     proxy.reset_counters()
    ...     (fs.cat("demo/blob"), proxy.snapshot().requests)  # doctest: +SKIP
    (b'x', 2)
    """

    def __init__(self, upstream: str, *, delay_ms: float = 0.0, timeout_s: float = 10.0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self._up_host = parts.hostname
        self._up_port = parts.port or 80
        self._path = parts.path.rstrip("/")
        self.delay_ms = float(delay_ms)
        self.timeout_s = float(timeout_s)
        self._lock = threading.Lock()
        self._faults: deque[_FaultRule] = deque()
        self._requests = self._bytes_in = self._bytes_out = self._faults_injected = 0
        self._in_flight = self._peak_in_flight = 0
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # -- public API ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        if self._port is None:
            raise RuntimeError("LatencyProxy is not running: call start() or use `with`")
        return self._port

    @property
    def endpoint(self) -> str:
        """Blob endpoint through the proxy: ``http://127.0.0.1:PORT/devstoreaccount1``."""
        return f"http://127.0.0.1:{self.port}{self._path}"

    @property
    def requests(self) -> int:
        """Requests received (including faulted ones)."""
        return self._requests

    @property
    def bytes_in(self) -> int:
        """Request body bytes received from clients."""
        return self._bytes_in

    @property
    def bytes_out(self) -> int:
        """Response body bytes sent to clients."""
        return self._bytes_out

    @property
    def faults_injected(self) -> int:
        """Requests answered with an injected fault."""
        return self._faults_injected

    @property
    def pending_faults(self) -> int:
        """Faults still queued by :meth:`inject_faults` (standing :meth:`fault_rate` rules
        are not counted)."""
        with self._lock:
            return sum(rule.remaining for rule in self._faults if rule.rate is None)

    def snapshot(self) -> ProxyStats:
        """All counters, read together."""
        with self._lock:
            return ProxyStats(
                self._requests, self._bytes_in, self._bytes_out, self._faults_injected
            )

    @property
    def peak_in_flight(self) -> int:
        """Most requests the proxy was relaying at once since the last reset."""
        with self._lock:
            return self._peak_in_flight

    def reset_counters(self) -> None:
        """Set all counters to zero (pending faults are kept)."""
        with self._lock:
            self._requests = self._bytes_in = self._bytes_out = self._faults_injected = 0
            self._peak_in_flight = self._in_flight

    def inject_faults(
        self,
        n: int,
        kind: FaultKind = "503",
        methods: Iterable[str] = ("GET",),
        *,
        match: str | None = None,
    ) -> None:
        """Make the next ``n`` requests whose method is in ``methods`` fail as ``kind``.

        ``"503"``/``"500"`` answer with an Azure-style XML error (``ServerBusy`` /
        ``InternalError``) and keep the connection; ``"reset"`` closes the client connection
        abruptly (TCP RST); ``"timeout"`` holds the request for ``timeout_s`` then closes;
        ``"hang"`` never answers (the connection stays open until the client closes it or
        the proxy stops); ``"truncate"`` forwards the request (so the service acts on it),
        relays the response head and half of its body, then closes the connection (a
        response without a body is dropped whole, after the service has answered).
        ``match`` is a regular expression searched in the request target (path and query),
        e.g. ``r"/c/"`` for zarr chunk keys only. Calls queue up: rules are consumed in the
        order given.
        """
        rule = self._rule(kind, methods, match)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rule.remaining = n
        with self._lock:
            self._faults.append(rule)

    def fault_rate(
        self,
        rate: float,
        kind: FaultKind = "503",
        methods: Iterable[str] = ("GET",),
        *,
        match: str | None = None,
        seed: int = 0,
    ) -> None:
        """Make each later request whose method is in ``methods`` (and whose target matches
        ``match``) fail as ``kind`` with probability ``rate``, until :meth:`clear_faults`.

        Draws come from a generator seeded with ``seed``, so a sequential client sees the
        same faults on every run. Queued :meth:`inject_faults` rules are tried first.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        rule = self._rule(kind, methods, match)
        rule.rate = float(rate)
        rule.rng = random.Random(seed)
        with self._lock:
            self._faults.append(rule)

    @staticmethod
    def _rule(kind: FaultKind, methods: Iterable[str], match: str | None) -> _FaultRule:
        if kind not in get_args(FaultKind):
            raise ValueError(f"kind must be one of {get_args(FaultKind)}, got {kind!r}")
        if isinstance(methods, str):
            raise TypeError("methods must be a collection of HTTP methods, not a string")
        pattern = None if match is None else re.compile(match.encode())
        return _FaultRule(0, kind, frozenset(m.upper() for m in methods), pattern)

    def clear_faults(self) -> None:
        """Drop all pending faults."""
        with self._lock:
            self._faults.clear()

    def start(self) -> Self:
        """Start listening (in a background thread). Idempotent."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(
                        self._handle, "127.0.0.1", 0, limit=_HEAD_LIMIT, backlog=1024
                    )
                )
                self._port = int(self._server.sockets[0].getsockname()[1])
            except BaseException as e:
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="parcelzarr-latency-proxy", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = self._loop = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close the listener and all connections, and end the thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError, TimeoutError):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = self._server = None
        self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"port={self._port}" if self._port else "stopped"
        return (
            f"<LatencyProxy {where} delay_ms={self.delay_ms:g} -> {self._up_host}:{self._up_port}>"
        )

    # -- event loop side -----------------------------------------------------------------

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            _abort(writer)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _take_fault(self, method: str, target: bytes) -> FaultKind | None:
        with self._lock:
            self._requests += 1
            counted = sorted(self._faults, key=lambda r: r.rate is not None)  # queued first
            for rule in counted:
                if rule.applies(method, target):
                    if rule.rate is None:
                        rule.remaining -= 1
                    self._faults_injected += 1
                    kind = rule.kind
                    break
            else:
                return None
            while self._faults and self._faults[0].rate is None and self._faults[0].remaining == 0:
                self._faults.popleft()
            return kind

    def _count_in(self, n: int) -> None:
        with self._lock:
            self._bytes_in += n

    def _count_out(self, n: int) -> None:
        with self._lock:
            self._bytes_out += n

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # client closed between requests
                up, keep = await self._exchange(reader, writer, raw, up)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, OSError):  # fmt: skip
            return  # a broken or malformed exchange ends this connection only
        except asyncio.CancelledError:
            # Cancelled by stop(). This is the connection's top-level task: ending it
            # normally keeps asyncio's stream callback from logging the cancellation.
            return
        finally:
            if up is not None:
                _abort(up[1])
            self._writers.discard(writer)
            _abort(writer)
            self._tasks.discard(task)

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        raw: bytes,
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
    ) -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None, bool]:
        """Relay one request and its response; return the upstream and keep-alive flag."""
        request = _Head(raw)
        method = request.start.split(b" ", 1)[0].decode("ascii", "replace").upper()
        target = request.start.split(b" ")[1] if request.start.count(b" ") >= 2 else b""
        fault = self._take_fault(method, target)
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        try:
            return await self._relay(reader, writer, raw, up, request, method, fault)
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        raw: bytes,
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
        request: _Head,
        method: str,
        fault: FaultKind | None,
    ) -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None, bool]:
        if self.delay_ms > 0 and fault not in ("timeout", "hang"):
            await asyncio.sleep(self.delay_ms / 1000)
        if request.expect_continue:  # answer it here so the body is not held back
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            raw = request.without_expect()

        if fault == "reset":
            _abort(writer, reset=True)
            return up, False
        if fault == "timeout":
            await asyncio.sleep(self.timeout_s)
            return up, False
        if fault == "hang":  # read (and drop) whatever comes until the client gives up
            while await reader.read(_READ_SIZE):
                pass
            return up, False
        if fault in ("503", "500"):
            await _relay_body(reader, None, request, self._count_in)
            writer.write(_error_response(fault, head_only=method == "HEAD"))
            await writer.drain()
            return up, not request.close

        if up is not None and (up[0].at_eof() or up[1].is_closing()):
            _abort(up[1])
            up = None
        bodyless = not request.chunked and not request.content_length
        for attempt in range(2):
            if up is None:
                up = await asyncio.open_connection(self._up_host, self._up_port, limit=_HEAD_LIMIT)
                up_sock = up[1].get_extra_info("socket")
                if up_sock is not None:
                    up_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up_reader, up_writer = up
            up_writer.write(raw)
            await _relay_body(reader, up_writer, request, self._count_in)
            await up_writer.drain()
            try:
                response = await self._response_head(
                    up_reader, None if fault == "truncate" else writer)
            except _UpstreamClosedError:
                # A kept-alive upstream connection closed under us: a request without a
                # body can be resent once on a fresh connection.
                _abort(up_writer)
                up = None
                if attempt == 0 and bodyless:
                    continue
                raise
            break
        assert up is not None
        up_reader, up_writer = up
        no_body = method == "HEAD" or response.start[9:12] in (b"204", b"304")
        if fault == "truncate":
            await self._truncated_body(up_reader, writer, response, no_body)
            _abort(up_writer)
            return None, False
        if no_body:
            pass
        elif response.chunked or response.content_length is not None:
            await _relay_body(up_reader, writer, response, self._count_out)
        else:  # body delimited by the upstream closing the connection
            while data := await up_reader.read(_READ_SIZE):
                self._count_out(len(data))
                writer.write(data)
                await writer.drain()
            response.close = True
        await writer.drain()
        if response.close:
            _abort(up_writer)
            return None, False
        return up, not request.close

    async def _truncated_body(
        self,
        up_reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        response: _Head,
        no_body: bool,
    ) -> None:
        """Send ``response``'s head and the first half of its body, then cut the connection
        (send nothing at all when the response has no body)."""
        if no_body or (not response.chunked and not response.content_length):
            return
        writer.write(response.raw)
        if response.chunked:
            size_line = await up_reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            writer.write(size_line)
            half = size // 2
        else:
            half = (response.content_length or 0) // 2
        await _copy_exact(up_reader, writer, half, self._count_out)
        await writer.drain()
        _abort(writer)

    @staticmethod
    async def _response_head(
        up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None
    ) -> _Head:
        """Read the final response head (forwarding any 1xx heads) and forward it (unless
        ``writer`` is None: the caller then decides what to send)."""
        first = True
        while True:
            try:
                raw = await up_reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as e:
                if first and not e.partial:
                    raise _UpstreamClosedError from e
                raise
            except ConnectionResetError as e:
                if first:
                    raise _UpstreamClosedError from e
                raise
            first = False
            head = _Head(raw)
            if head.start[9:10] == b"1":
                if head.start[9:12] != b"100" and writer is not None:  # ours was already sent
                    writer.write(raw)
                continue
            if writer is not None:
                writer.write(raw)
            return head
