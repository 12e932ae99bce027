"""Run a real Azurite blob emulator (npm package ``azurite``) for tests and benchmarks.

Azurite is started as a child process on a free loopback port with its own temporary
workspace, and is reached through adlfs exactly as production Azure Blob Storage is.
The process is stopped (whole process group) by :meth:`Azurite.stop`, by leaving the
``with`` block, at interpreter exit, and, on Linux, when the starting thread dies.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

from parcelzarr.errors import ParcelzarrError
from parcelzarr.stores._azure import AZURITE_ACCOUNT, AZURITE_KEY

__all__ = [
    "ACCOUNT_KEY",
    "ACCOUNT_NAME",
    "Azurite",
    "AzuriteNotFoundError",
    "AzuriteStartError",
    "find_azurite",
]

#: The account every Azurite instance serves and its well-known (public) key: one definition,
#: in :mod:`parcelzarr.stores`, which also lets that account in without a key.
ACCOUNT_NAME = AZURITE_ACCOUNT
ACCOUNT_KEY = AZURITE_KEY

_BIN_ENV = "PARCELZARR_AZURITE_BIN"
_EXE = "azurite-blob"
_HOST = "127.0.0.1"


class AzuriteNotFoundError(ParcelzarrError, FileNotFoundError):
    """The ``azurite-blob`` executable could not be found."""


class AzuriteStartError(ParcelzarrError, RuntimeError):
    """Azurite was found but did not start (or did not start listening in time)."""


def _candidates_from(start: Path) -> Iterator[Path]:
    for folder in (start, *start.parents):
        yield folder / "node_modules" / ".bin" / _EXE


def find_azurite() -> Path:
    """Locate the ``azurite-blob`` executable.

    Looked for, in order: the ``PARCELZARR_AZURITE_BIN`` environment variable,
    ``node_modules/.bin/azurite-blob`` in this file's folder or any parent, the same
    under the current directory or any parent, then ``PATH``.

    Raises
    ------
    AzuriteNotFoundError
        If none exists; the message says how to install it (``npm ci``).
    """
    env = os.environ.get(_BIN_ENV)
    if env:
        path = Path(env)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise AzuriteNotFoundError(f"{_BIN_ENV}={env!r} is not an executable file")
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for candidate in _candidates_from(start):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    found = shutil.which(_EXE)
    if found:
        return Path(found)
    raise AzuriteNotFoundError(
        f"{_EXE} not found: run `npm ci` in the parcelzarr repository (it installs the pinned "
        f"azurite into node_modules/), or set {_BIN_ENV} to the executable's path"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent thread dies.

    Covers what ``atexit`` cannot: the test process being killed. Only used from the main
    thread, because the kernel ties the signal to the thread that forked.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec


# Instances still running; stopped at interpreter exit. Weak so a forgotten instance is
# still collected (its finalizer stops it too).
_LIVE: weakref.WeakSet[Azurite] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for instance in list(_LIVE):
        instance.stop()


class Azurite:
    """An Azurite blob service on ``127.0.0.1`` at a free port.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with Azurite() as az:
            az.create_container("data")
            fs = adlfs.AzureBlobFileSystem(**az.storage_options())

    Parameters
    ----------
    executable
        Path of ``azurite-blob``; found by :func:`find_azurite` when omitted.
    in_memory
        Keep blobs in memory (faster) instead of in the temporary workspace.
    startup_timeout
        Seconds to wait for the port to answer.
    """

    account_name: str = ACCOUNT_NAME
    account_key: str = ACCOUNT_KEY

    def __init__(
        self,
        *,
        executable: str | os.PathLike[str] | None = None,
        in_memory: bool = True,
        startup_timeout: float = 30.0,
    ) -> None:
        self._executable = Path(executable) if executable is not None else None
        self._in_memory = in_memory
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._port: int | None = None
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
        """Start Azurite and wait until it accepts connections. Idempotent."""
        with self._lock:
            if self._proc is not None:
                return self
            executable = self._executable or find_azurite()
            last_error: AzuriteStartError | None = None
            for _ in range(3):  # the free port may be taken between probe and bind
                try:
                    self._launch(executable)
                except AzuriteStartError as e:
                    last_error = e
                    self._cleanup()
                    continue
                _LIVE.add(self)
                return self
            assert last_error is not None
            raise last_error

    def _launch(self, executable: Path) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="parcelzarr-azurite-"))
        self._port = port = _free_port()
        args = [
            str(executable),
            "--blobHost", _HOST,
            "--blobPort", str(port),
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
            "--disableTelemetry",
            # Idle client connections stay usable (Azurite's default is 5 s).
            "--blobKeepAliveTimeout", "600",
        ]  # fmt: skip
        # Azurite (3.35 and later) refuses --location together with --inMemoryPersistence; the
        # workspace then only holds the log (and is Azurite's working directory).
        args += ["--inMemoryPersistence"] if self._in_memory else ["--location", str(self._workdir)]
        log = (self._workdir / "azurite.log").open("wb")
        try:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._workdir,
                start_new_session=True,  # own process group: stop() kills node and children
                preexec_fn=_die_with_parent(),
            )
        except OSError as e:
            raise AzuriteStartError(f"could not run {executable}: {e}") from e
        finally:
            log.close()
        deadline = time.monotonic() + self._startup_timeout
        while not _port_answers(port):
            if self._proc.poll() is not None:
                raise AzuriteStartError(
                    f"azurite exited with code {self._proc.returncode}:\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                raise AzuriteStartError(
                    f"azurite did not listen on {_HOST}:{port} within "
                    f"{self._startup_timeout:g} s:\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def _log_tail(self, lines: int = 30) -> str:
        if self._workdir is None:
            return ""
        try:
            text = (self._workdir / "azurite.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the Azurite process group and remove the workspace. Idempotent."""
        with self._lock:
            _LIVE.discard(self)
            self._cleanup()

    def _cleanup(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            self._kill(proc)
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; make sure nothing else of its group survives.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None:
            self._cleanup()

    def __repr__(self) -> str:
        state = f"port={self._port}" if self.running else "stopped"
        return f"<Azurite {state}>"

    # -- connection details --------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the Azurite process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the running Azurite, else ``None``."""
        return self._proc.pid if self._proc is not None else None

    @property
    def port(self) -> int:
        """The blob service port on ``127.0.0.1``."""
        if self._proc is None or self._port is None:
            raise RuntimeError("Azurite is not running: call start() or use `with Azurite()`")
        return self._port

    @property
    def blob_endpoint(self) -> str:
        """``http://127.0.0.1:PORT/devstoreaccount1``."""
        return f"http://{_HOST}:{self.port}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        """An Azure Storage connection string for this instance."""
        return self._connection_string(self.blob_endpoint)

    def _connection_string(self, endpoint: str) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={endpoint};"
        )

    def storage_options(self, endpoint: str | None = None) -> dict[str, str]:
        """``storage_options`` for adlfs / fsspec (``az://`` URLs).

        Parameters
        ----------
        endpoint
            Blob endpoint to use instead of Azurite's own, e.g. a
            :class:`~parcelzarr.testing.LatencyProxy` ``endpoint`` in front of it.
        """
        return {"connection_string": self._connection_string(endpoint or self.blob_endpoint)}

    def create_container(self, name: str, *, exist_ok: bool = False) -> None:
        """Create a blob container (synchronous azure-storage-blob client)."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(self.connection_string) as client:
            try:
                client.create_container(name)
            except ResourceExistsError:
                if not exist_ok:
                    raise

    def delete_container(self, name: str) -> None:
        """Delete a blob container and everything in it."""
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(self.connection_string) as client:
            client.delete_container(name)
