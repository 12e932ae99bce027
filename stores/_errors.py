"""Storage errors in, parcelzarr errors out: one line naming the store, the cause and the fix.

Transports raise many types (obstore's ``GenericError`` with a multi-page debug dump, azure-core
``HttpResponseError``, aiohttp and ``OSError``s). :func:`translate` maps the ones retrying
cannot fix to the :mod:`parcelzarr.errors` family (which also inherits the builtins, so
``except PermissionError`` / ``except OSError`` keep working); the caller raises the result
``from`` the original, which stays available as ``__cause__``. Missing keys are a declared
case that zarr handles (a fill value), so ``FileNotFoundError`` is left alone, and so are HTTP
404/409/412 answers to conditional requests (the writer lock waits on a 409 held lease).
"""

from __future__ import annotations

import asyncio
import errno as _errno
import re

from parcelzarr.errors import (
    ParcelzarrError,
    StoreAccessDeniedError,
    StoreIOError,
    StoreUnreachableError,
    StoreWriteError,
)

from ._azure import redact

__all__ = ["describe", "is_transient", "one_line", "storage_error", "translate", "unwrap"]

_FULL = {_errno.ENOSPC, _errno.EDQUOT, _errno.EFBIG}
_DENIED_NAMES = {"PermissionDeniedError", "UnauthenticatedError", "ClientAuthenticationError"}
_STORAGE_MODULES = ("obstore", "azure.", "aiohttp")
#: Not found, conflict (exists already, lease held), precondition failed: answers to
#: conditional requests, left to the caller (e.g. the writer lock waits on a held lease).
_DECLARED_STATUS = frozenset({404, 409, 412})


def one_line(text: object, limit: int = 240) -> str:
    """``text`` on one line: obstore's debug dump dropped, whitespace collapsed, secrets
    redacted, at most ``limit`` characters."""
    flat = " ".join(str(text).split("Debug source", 1)[0].split())
    flat = redact(flat)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def describe(exc: BaseException) -> str:
    """``Type: message`` of ``exc`` on one line (for logs and error messages)."""
    return one_line(f"{type(exc).__name__}: {exc}")


def unwrap(exc: BaseException) -> BaseException:
    """The storage error inside a plain ``RuntimeError`` wrapper (adlfs raises
    ``RuntimeError("Failed to remove ...") from e``), else ``exc`` itself."""
    while type(exc) is RuntimeError and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def translate(exc: BaseException, *, store: str, what: str, write: bool) -> Exception | None:
    """The parcelzarr error for a storage failure retrying cannot fix, or None when ``exc``
    should propagate unchanged (already ours, a missing key, or not a storage error).

    ``store`` is the credential-free URL of the store (or source), ``what`` the key or
    operation, ``write`` whether the request was a write (or delete).
    """
    exc = unwrap(exc)
    if isinstance(exc, ParcelzarrError):
        return None
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return None
    name = type(exc).__name__
    module = type(exc).__module__
    status = _status(exc)
    if status in _DECLARED_STATUS:  # outcomes of conditional requests: the caller decides
        return None
    if name in _DENIED_NAMES or status in (401, 403):
        return StoreAccessDeniedError(
            f"access to {store} was denied ({what}: {describe(exc)}): check the "
            "credentials (account key, SAS token with its permissions and expiry, or the "
            "identity's role on the container)"
        )
    if isinstance(exc, OSError) and not module.startswith(_STORAGE_MODULES):
        return _local(exc, store=store, what=what, write=write)
    if module.startswith(_STORAGE_MODULES):
        return StoreIOError(f"storage request for {what} in {store} failed: {describe(exc)}")
    return None


_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


_OBSTORE_TRANSIENT = re.compile(
    r"\b(408|429|500|502|503|504)\b|error sending request|connection (?:reset|closed|refused)"
    r"|timed out|timeout|incomplete|broken pipe|server busy|body error|error decoding response"
    r"|end of file|deadline has elapsed",
    re.IGNORECASE,
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a storage error worth retrying."""
    exc = unwrap(exc)
    if isinstance(exc, ParcelzarrError):  # already final (e.g. retries exhausted)
        return False
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return False
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, ConnectionError)):
        return True
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    if isinstance(status, int):
        return status in _TRANSIENT_STATUS
    name = type(exc).__name__
    if name == "GenericError" and type(exc).__module__.startswith("obstore"):
        # obstore reports HTTP and connection failures as GenericError with the cause in text
        text = str(exc).split("Debug source", 1)[0]
        return bool(_OBSTORE_TRANSIENT.search(text))
    # azure-core and aiohttp transport errors, matched by name so neither is a hard import.
    return name in {
        "ServiceRequestError",
        "ServiceResponseError",
        "ServiceRequestTimeoutError",
        "ServiceResponseTimeoutError",
        "ClientConnectionError",
        "ClientOSError",
        "ServerDisconnectedError",
        "ClientPayloadError",
        "IncompleteReadError",
    }


def storage_error(exc: BaseException, *, where: str, what: str) -> Exception | None:
    """The parcelzarr error for a failed read of ``where`` through a client that retried on
    its own (source listings and downloads): :class:`StoreUnreachableError` for transient
    failures, else :func:`translate`'s answer (None: let ``exc`` propagate)."""
    if is_transient(exc):
        return StoreUnreachableError(
            f"cannot reach {where} ({what}: {describe(unwrap(exc))}): check the network and "
            "the account endpoint, then retry"
        )
    return translate(exc, store=where, what=what, write=False)


def _local(exc: OSError, *, store: str, what: str, write: bool) -> Exception:
    """A local file system error (disk full, read-only, permissions) as one clear line."""
    reason = exc.strerror or describe(exc)
    verb = "write" if write else "read"
    err: OSError
    if exc.errno in _FULL:
        err = StoreWriteError(
            f"store {store} is full ({reason}) writing {what}: free space or choose another "
            "store, then run the same command again (committed data is intact; ingest "
            "resumes where it stopped)"
        )
    elif exc.errno == _errno.EROFS:
        err = StoreWriteError(
            f"store {store} is on a read-only file system ({reason}) writing {what}: remount "
            "it read-write or choose another store"
        )
    elif isinstance(exc, PermissionError):
        err = StoreAccessDeniedError(
            f"no permission to {verb} {what} in store {store} ({reason}): fix the "
            "directory's permissions or choose another store"
        )
    else:
        err = StoreIOError(f"cannot {verb} {what} in store {store}: {describe(exc)}")
    err.errno = exc.errno
    return err
