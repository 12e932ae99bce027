"""Turn a URL plus storage options into a zarr store (and an fsspec filesystem)."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import threading
import weakref
from collections.abc import Mapping
from typing import Any, Literal

import fsspec
from zarr.abc.store import Store
from zarr.buffer import default_buffer_prototype
from zarr.storage import FsspecStore, LocalStore, MemoryStore

from parcelzarr import _config
from parcelzarr._zarr_compat import sync, zarr_loop, zarr_loop_if_running
from parcelzarr.errors import CredentialsError, ParcelzarrError, StoreUnreachableError

from ._azure import azure_options, check_option_names, redact
from ._errors import describe, is_transient
from ._obstore import obstore_store
from ._quiesce import settle
from ._retry import IOCounters, ResilientStore, RetryPolicy
from ._url import Location, parse_location

Transport = Literal["adlfs", "obstore"]
#: Default transport for reading az:// stores, chosen by bench/query.py (bench/RESULTS.md).
DEFAULT_READ_TRANSPORT: Transport = "obstore"

__all__ = [
    "DEFAULT_READ_TRANSPORT",
    "StoreHandle",
    "azure_filesystem",
    "choose_transport",
    "filesystem_for",
    "open_store_handle",
]

logger = logging.getLogger(__name__)

_MEMORY_STORES: dict[str, dict[str, Any]] = {}
_MEMORY_LOCK = threading.Lock()


def _reject_options(location: Location, storage_options: Mapping[str, Any] | None) -> None:
    if storage_options:
        check_option_names(storage_options)
        raise TypeError(
            f"storage options {sorted(storage_options)} do not apply to {location.protocol} "
            "stores; they are for az:// URLs"
        )


def choose_transport(requested: str | None, *, read_only: bool) -> Transport:
    """The transport for an ``az://`` store: ``requested`` (the ``transport`` storage option),
    else ``PARCELZARR_TRANSPORT``, else obstore for reads (measured faster, see
    bench/RESULTS.md) and adlfs for writes."""
    value = requested or _config.transport()
    if value is None:
        if not read_only:
            return "adlfs"
        try:
            import obstore  # noqa: F401
        except ImportError:  # pragma: no cover - obstore is a dependency; keep adlfs working
            return "adlfs"
        return DEFAULT_READ_TRANSPORT
    if value not in ("adlfs", "obstore"):
        raise ValueError(f"transport {value!r} is unknown: use 'adlfs' or 'obstore'")
    return value  # type: ignore[return-value]


def _raw_store(
    location: Location, storage_options: Mapping[str, Any] | None, *, read_only: bool
) -> Store:
    if location.protocol == "file":
        _reject_options(location, storage_options)
        return LocalStore(location.path, read_only=read_only)
    if location.protocol == "memory":
        _reject_options(location, storage_options)
        with _MEMORY_LOCK:
            data = _MEMORY_STORES.setdefault(location.path, {})
        return MemoryStore(data, read_only=read_only)
    options = dict(storage_options or {})
    transport = choose_transport(options.pop("transport", None), read_only=read_only)
    if transport == "obstore":
        return obstore_store(location.path, azure_options(options), read_only=read_only)
    return FsspecStore(azure_filesystem(options), path=location.path, read_only=read_only)


def azure_filesystem(storage_options: Mapping[str, Any] | None) -> Any:
    """An async adlfs filesystem bound to zarr's event loop (closed at exit), without the
    Azure SDK's own retries."""
    options = {k: v for k, v in (storage_options or {}).items() if k != "transport"}
    # A writer (and its recovery) must see the store as it is: no cached listings.
    options.setdefault("use_listings_cache", False)
    # Bind the filesystem to zarr's event loop, where all of its requests run.
    fs = fsspec.filesystem(
        "az", asynchronous=True, skip_instance_cache=True, loop=zarr_loop(),
        **azure_options(options),
    )
    _track(fs)
    _tune_sdk(fs, retries=0)
    return fs


def _tune_sdk(fs: Any, *, retries: int) -> None:
    """Give an adlfs filesystem's Azure client the ``PARCELZARR_*`` connect and read timeouts
    (azure-core's defaults: 20 s and 60 s) and at most ``retries`` quick retries (its default
    backs off 15 s, 18 s, 24 s). Zarr stores get none: transient errors are retried in one
    place, by :class:`ResilientStore`, whatever the transport."""
    client = getattr(fs, "service_client", None)
    policy = getattr(getattr(client, "_config", None), "retry_policy", None)
    if policy is not None and hasattr(policy, "total_retries"):
        policy.total_retries = retries
        for name in ("connect_retries", "read_retries", "status_retries"):
            if hasattr(policy, name):
                setattr(policy, name, retries)
        if hasattr(policy, "initial_backoff"):  # waits 0.5, 2, 2.75, 3.9, 5.6 s (+-0.5)
            policy.initial_backoff, policy.increment_base = 0.5, 1.5
            policy.random_jitter_range = 0.5
    transport = getattr(getattr(client, "_pipeline", None), "_transport", None)
    connection = getattr(transport, "connection_config", None)
    if connection is not None and hasattr(connection, "read_timeout"):
        connection.timeout = _config.connect_timeout()
        connection.read_timeout = _config.read_timeout()


# Open async adlfs filesystems, by identity (they compare equal by options). adlfs closes its
# client in a weakref finalizer that runs at exit on a loop that is no longer running; we detach
# it and close the clients ourselves, on zarr's loop, from an exit hook registered after it.
_OPEN: dict[int, Any] = {}
_HOOKED = False


def _track(fs: Any) -> None:
    _detach_finalizers(fs)
    _OPEN[id(fs)] = fs
    _hook_exit()


def _hook_exit() -> None:
    """Register :func:`_close_all` once, after zarr's own exit hook (so it runs first)."""
    global _HOOKED
    if not _HOOKED:
        atexit.register(_close_all)
        _HOOKED = True


def _close_fs(fs: Any) -> None:
    """Close an async adlfs filesystem's client on zarr's loop, then drop its finalizers."""
    client = getattr(fs, "service_client", None)
    if client is not None:
        try:
            sync(client.close())
        except Exception as exc:  # closing is best effort; never mask the caller's error
            logger.debug("closing Azure client: %s", redact(str(exc)))
    _detach_finalizers(fs)
    _OPEN.pop(id(fs), None)


def _detach_finalizers(obj: object) -> None:
    """Drop adlfs's exit-time finalizers for ``obj`` once we closed it ourselves."""
    for fin in list(weakref.finalize._registry):  # type: ignore[attr-defined]
        info = fin.peek()
        if info is not None and info[0] is obj:
            fin.detach()


def _close_all() -> None:  # runs before zarr stops its loop (atexit is last-in, first-out)
    _cancel_pending()
    for fs in list(_OPEN.values()):
        _close_fs(fs)
    settle()  # obstore's threads out of Python before finalization (see ._quiesce)


def _cancel_pending() -> None:
    """End requests still running on zarr's loop at exit (e.g. the other chunks of an ingest
    that failed) quietly instead of leaving them to be destroyed pending: give them 2 s to
    finish (after a failure the store's circuit breaker fails them at once), then cancel."""
    if zarr_loop_if_running() is None:
        return

    async def cancel() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=2)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1)

    try:
        sync(cancel(), timeout=5)
    except Exception as exc:  # best effort at exit; never mask the caller's error
        logger.debug("cancelling pending storage tasks: %s", exc)


def filesystem_for(
    location: Location, storage_options: Mapping[str, Any] | None = None
) -> fsspec.AbstractFileSystem:
    """A synchronous fsspec filesystem for ``location`` (used to list and fetch sources)."""
    if location.protocol == "file":
        _reject_options(location, storage_options)
        return fsspec.filesystem("file")
    if location.protocol == "memory":
        _reject_options(location, storage_options)
        return fsspec.filesystem("memory")
    options = {k: v for k, v in (storage_options or {}).items() if k != "transport"}
    fs = fsspec.filesystem("az", skip_instance_cache=True, **azure_options(options))
    _tune_sdk(fs, retries=min(3, _config.retries()))
    return fs


class StoreHandle:
    """An opened store location: the zarr store plus small JSON documents beside the data.

    The zarr store retries transient errors and counts requests and bytes
    (:attr:`counters`). The repr names only the URL, never credentials.
    """

    def __init__(
        self,
        location: Location,
        store: ResilientStore,
    ) -> None:
        self.location = location
        self.store = store
        self._closed = False

    @property
    def url(self) -> str:
        """Canonical URL of the store (credential-free)."""
        return self.location.url

    @property
    def counters(self) -> IOCounters:
        """Requests and bytes moved through this handle."""
        return self.store.counters

    def __repr__(self) -> str:
        return f"StoreHandle({self.url!r})"

    def close(self) -> None:
        """Close network clients (Azure); the handle must not be used afterwards."""
        if self._closed:
            return
        self._closed = True
        fs = getattr(self.store.inner, "fs", None)
        if fs is not None:
            _close_fs(fs)

    def __enter__(self) -> StoreHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_json(self, key: str) -> Any | None:
        """The JSON document at ``key``, or None when it does not exist."""
        buf = sync(self.store.get(key, default_buffer_prototype()))
        if buf is None:
            return None
        return json.loads(buf.to_bytes())

    def write_json(self, key: str, value: Any) -> None:
        """Write ``value`` as JSON at ``key`` (one object, replaced whole)."""
        data = json.dumps(value, indent=1, sort_keys=True).encode()
        sync(self.store.set(key, default_buffer_prototype().buffer.from_bytes(data)))

    def exists(self, key: str) -> bool:
        """Whether an object exists at ``key``."""
        return bool(sync(self.store.exists(key)))

    def check_reachable(self) -> None:
        """Fail with :class:`StoreUnreachableError` (within ``PARCELZARR_UNREACHABLE_AFTER``
        seconds) if the service does not answer, :class:`StoreAccessDeniedError` if it
        refuses the credentials."""
        try:
            sync(self.store.exists("zarr.json"))
        except ParcelzarrError:
            raise
        except Exception as exc:
            if _denied(exc):
                # the client's own message may quote the request (and a SAS in it): not
                # chained, only logged redacted
                logger.debug("store %s refused the credentials: %s", self.url,
                             redact(str(exc))[:500])
                raise CredentialsError(
                    f"store {self.url} refused the credentials (HTTP 401/403): check the "
                    "account key, SAS token or connection string, its expiry and permissions"
                ) from None
            if is_transient(exc) or isinstance(exc, OSError):
                raise StoreUnreachableError(
                    f"store {self.url} is unreachable ({describe(exc)}): check the account "
                    "endpoint and network, then retry"
                ) from exc
            raise


_DENIED = {"PermissionDeniedError", "UnauthenticatedError", "ClientAuthenticationError"}


def _denied(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is the service refusing the credentials."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        status = getattr(cur, "status_code", None) or getattr(cur, "status", None)
        if type(cur).__name__ in _DENIED or status in (401, 403):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def open_store_handle(
    url: str | Location,
    storage_options: Mapping[str, Any] | None = None,
    *,
    read_only: bool = False,
    retry: RetryPolicy | None = None,
) -> StoreHandle:
    """Open the store at ``url`` for zarr.

    Parameters
    ----------
    url:
        Local path (the embedded default), ``az://container/path`` or ``memory://name``.
    storage_options:
        Passed to adlfs unchanged for ``az://`` (see :func:`azure_options`); rejected for
        local and memory stores. The extra key ``transport`` (``"adlfs"`` or ``"obstore"``)
        picks the client; see :func:`choose_transport`.
    read_only:
        Open without write access.
    retry:
        Timeouts, retries and hedging of requests; the default comes from the
        ``PARCELZARR_*`` settings (5 retries with backoff, 60 s at most per operation).
    """
    location = url if isinstance(url, Location) else parse_location(url)
    raw = _raw_store(location, storage_options, read_only=read_only)
    _hook_exit()
    return StoreHandle(location, ResilientStore(raw, policy=retry, label=location.url))
