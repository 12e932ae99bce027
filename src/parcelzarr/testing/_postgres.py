"""Run a throw-away PostgreSQL + PostGIS server for tests, as :class:`Azurite` runs a blob
service: a fresh cluster (``initdb``) in a temporary directory, ``postgres`` started as a
child process on a free loopback port with its unix socket in that directory, a database with
``CREATE EXTENSION postgis``; stopped (and the directory removed) by :meth:`stop`, by leaving
the ``with`` block, at interpreter exit and, on Linux, when the starting thread dies.

PostgreSQL refuses to run as root: when the tests run as root, the server runs as the
``postgres`` system user (Debian's packages create it), else ``nobody``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Self

from parcelzarr.errors import ParcelzarrError

from ._azurite import _die_with_parent, _free_port

__all__ = ["PostgresNotFoundError", "PostgresServer", "PostgresStartError", "find_postgres"]

_BIN_ENV = "PARCELZARR_PG_BIN"
_HOST = "127.0.0.1"


class PostgresNotFoundError(ParcelzarrError, FileNotFoundError):
    """PostgreSQL's server binaries or the PostGIS extension are not installed."""


class PostgresStartError(ParcelzarrError, RuntimeError):
    """The server binaries were found but the cluster did not start."""


def _has_postgis(bindir: Path) -> bool:
    try:
        share = subprocess.run([str(bindir / "pg_config"), "--sharedir"], capture_output=True,
                               text=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        share = f"/usr/share/postgresql/{bindir.parent.name}"  # Debian's layout
    return (Path(share) / "extension" / "postgis.control").is_file()


def find_postgres() -> Path:
    """The directory of ``initdb`` and ``postgres`` with PostGIS installed beside them.

    Looked for: ``PARCELZARR_PG_BIN``, the directory of ``pg_ctl`` on ``PATH``, then
    ``/usr/lib/postgresql/*/bin`` (newest first).

    Raises
    ------
    PostgresNotFoundError
        None found; the message says how to install them (``make install``).
    """
    candidates: list[Path] = []
    env = os.environ.get(_BIN_ENV)
    if env:
        candidates.append(Path(env))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                         key=lambda p: [int(x) if x.isdigit() else 0 for x in
                                        p.parent.name.split(".")], reverse=True)
    without_postgis = None
    for bindir in candidates:
        if all((bindir / exe).is_file() for exe in ("initdb", "postgres")):
            if _has_postgis(bindir):
                return bindir
            without_postgis = bindir
    if without_postgis is not None:
        raise PostgresNotFoundError(
            f"PostgreSQL in {without_postgis} has no PostGIS extension: run `make install` "
            "(it installs postgresql-NN-postgis-3 on Debian) or see the README")
    raise PostgresNotFoundError(
        "PostgreSQL server binaries (initdb, postgres) not found: run `make install` (Debian: "
        f"apt-get install postgresql postgis), or set {_BIN_ENV} to their directory")


_LIVE: weakref.WeakSet[PostgresServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for instance in list(_LIVE):
        instance.stop()


class PostgresServer:
    """A PostgreSQL + PostGIS server in a temporary directory.

    Password authentication (scram-sha-256) is required on the socket and on TCP, so tests
    exercise real credentials: :attr:`user` / :attr:`password` own :attr:`database`, which
    has PostGIS. :meth:`env` gives the libpq ``PG*`` variables that reach it.
    """

    user = "parcelzarr"
    database = "parcels"

    def __init__(self, *, startup_timeout: float = 60.0) -> None:
        self.password = "pz-" + secrets.token_hex(12)
        self._timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self.port: int | None = None
        self._lock = threading.Lock()

    @property
    def socket_dir(self) -> str:
        assert self._dir is not None, "not started"
        return str(self._dir / "sock")

    def env(self) -> dict[str, str]:
        """libpq environment variables reaching the server through its unix socket."""
        assert self.port is not None, "not started"
        return {"PGHOST": self.socket_dir, "PGPORT": str(self.port), "PGUSER": self.user,
                "PGPASSWORD": self.password, "PGDATABASE": self.database}

    def start(self) -> Self:
        """Create the cluster, start the server, create the PostGIS database. Idempotent."""
        with self._lock:
            if self._proc is not None:
                return self
            bindir = find_postgres()
            try:
                self._launch(bindir)
            except BaseException:
                self._cleanup()
                raise
            _LIVE.add(self)
            return self

    def _run_as(self) -> str | None:
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                pwd.getpwnam(name)
                return name
        raise PostgresStartError("running as root and no 'postgres' or 'nobody' user to run "
                                 "PostgreSQL as (it refuses root)")

    def _launch(self, bindir: Path) -> None:
        user = self._run_as()
        self._dir = Path(tempfile.mkdtemp(prefix="parcelzarr-pg-"))
        data, sock = self._dir / "data", self._dir / "sock"
        sock.mkdir()
        pwfile = self._dir / "pw"
        pwfile.write_text(self.password + "\n")
        if user is not None:
            ent = pwd.getpwnam(user)
            for p in (self._dir, sock, pwfile):
                os.chown(p, ent.pw_uid, ent.pw_gid)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env |= {"LC_ALL": "C", "LANG": "C"}
        init = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", self.user, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "-E", "UTF8", "--no-sync", "--no-instructions"],
            user=user, env=env, cwd=self._dir, capture_output=True, text=True,
            timeout=self._timeout, check=False)
        if init.returncode:
            raise PostgresStartError(f"initdb failed: {init.stderr.strip()[-800:]}")
        pwfile.unlink()
        for _ in range(3):  # the free port may be taken between probe and bind
            self.port = _free_port()
            log = (self._dir / "postgres.log").open("wb")
            try:
                self._proc = subprocess.Popen(
                    [str(bindir / "postgres"), "-D", str(data), "-p", str(self.port),
                     "-k", str(sock), "-c", f"listen_addresses={_HOST}", "-c", "fsync=off",
                     "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                    user=user, env=env, cwd=self._dir, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=_die_with_parent())
            finally:
                log.close()
            if self._wait_ready(bindir):
                break
            self._terminate()
        else:
            raise PostgresStartError(f"postgres did not start:\n{self._log_tail()}")
        self._create_database()

    def _wait_ready(self, bindir: Path) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            ready = subprocess.run([str(bindir / "pg_isready"), "-q", "-h", self.socket_dir,
                                    "-p", str(self.port)], check=False, timeout=30)
            if ready.returncode == 0:
                return True
            time.sleep(0.1)
        return False

    def _create_database(self) -> None:
        import psycopg

        def connect(dbname: str) -> psycopg.Connection[tuple[object, ...]]:
            return psycopg.connect(host=self.socket_dir, port=self.port, user=self.user,
                                   password=self.password, dbname=dbname, autocommit=True)

        with connect("postgres") as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        with connect(self.database) as conn:
            conn.execute("CREATE EXTENSION postgis")

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = (self._dir / "postgres.log").read_text(errors="replace")  # type: ignore[operator]
        except (OSError, TypeError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)  # fast shutdown
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)

    def _cleanup(self) -> None:
        self._terminate()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def stop(self) -> None:
        """Stop the server and remove its directory. Idempotent."""
        with self._lock:
            _LIVE.discard(self)
            self._cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:  # never the password
        return f"PostgresServer(port={self.port}, dir={self._dir})"
