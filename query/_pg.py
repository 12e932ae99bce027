"""PostgreSQL/PostGIS addresses: ``postgresql://...?table=NAME`` or ``?sql=SELECT...``.

Connection settings follow libpq: what the URL leaves out (host, port, user, password,
database) comes from the ``PG*`` environment variables (``PGHOST``, ``PGPORT``, ``PGUSER``,
``PGPASSWORD``, ``PGDATABASE``, ``PGSERVICE``, ...), ``~/.pgpass`` (``PGPASSFILE``) and
``pg_service.conf``; other libpq parameters (``sslmode``, ``host=/socket/dir``,
``connect_timeout``, ...) pass through the URL's query. A password written in the URL is used
but never shown: messages and logs carry :attr:`PgTarget.shown`, the URL without it, and
database errors are translated into one line (:class:`~parcelzarr.errors.DatabaseError`)
without statement parameters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from parcelzarr.errors import DatabaseError

__all__ = ["PgTarget", "connect", "is_postgres_url", "parse_pg_url", "psycopg",
           "quoted_table", "translated"]

_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
#: Query keys parcelzarr reads; every other key is a libpq connection parameter.
_OURS = ("table", "sql", "geometry")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def is_postgres_url(value: object) -> bool:
    """Whether ``value`` is a ``postgresql://`` (or ``postgres://``) URL."""
    return isinstance(value, str) and value.split("://", 1)[0].lower() in _SCHEMES and (
        "://" in value)


@dataclass(frozen=True)
class PgTarget:
    """A parsed PostgreSQL address.

    Attributes
    ----------
    table:
        ``(schema, name)`` of ``?table=[schema.]name`` (schema None: the search path).
    sql:
        The query of ``?sql=``.
    geometry:
        The geometry column named by ``?geometry=`` (default: the only one).
    shown:
        The URL for messages: no password, no query text.
    """

    table: tuple[str | None, str] | None
    sql: str | None
    geometry: str | None
    shown: str
    _connect: dict[str, Any] = field(repr=False, compare=False)

    def __repr__(self) -> str:
        return f"PgTarget({self.shown!r})"


def _split_table(value: str) -> tuple[str | None, str]:
    parts = value.split(".")
    if len(parts) > 2 or not all(_IDENT.match(p) for p in parts):
        raise ValueError(f"table={value!r}: give NAME or SCHEMA.NAME (letters, digits, _)")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def parse_pg_url(url: str) -> PgTarget:
    """Parse ``postgresql://[user[:password]@][host][:port]/[db]?table=NAME|sql=SELECT...``.

    Raises
    ------
    ValueError
        Not a PostgreSQL URL, both or neither of ``table``/``sql``, a repeated key, or a
        table name that is not an identifier.
    """
    if not is_postgres_url(url):
        raise ValueError("not a postgresql:// URL")
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"PostgreSQL URL repeats {', '.join(repeated)}: give each once")
    query = dict(pairs)
    table = query.pop("table", None)
    sql = query.pop("sql", None)
    geometry = query.pop("geometry", None)
    try:
        port = parts.port
    except ValueError:
        raise ValueError("PostgreSQL URL: the port is not a number") from None
    host = parts.hostname
    shown_host = (host or "") + (f":{port}" if port else "")
    user = unquote(parts.username) if parts.username else None
    database = unquote(parts.path.lstrip("/")) or None
    shown = (f"postgresql://{quote(user) + '@' if user else ''}{shown_host}/{database or ''}"
             + (f"?table={table}" if table is not None else "?sql=..." if sql else ""))
    if (table is None) == (sql is None):
        raise ValueError(f"{shown}: give exactly one of ?table=NAME or ?sql=SELECT...")
    if sql is not None:
        sql = sql.strip().rstrip(";").strip()
        if not sql:
            raise ValueError(f"{shown}: ?sql= is empty")
        if ";" in sql:  # it runs in a read-only transaction a second statement could end
            raise ValueError(f"{shown}: ?sql= takes one statement (a SELECT), without ';'")
    connect: dict[str, Any] = dict(query)
    for key, value in (("host", host), ("port", port), ("user", user), ("dbname", database)):
        if value is not None:
            connect[key] = str(value)
    if parts.password is not None:
        connect["password"] = unquote(parts.password)
    return PgTarget(table=None if table is None else _split_table(table), sql=sql,
                    geometry=geometry, shown=shown, _connect=connect)


def psycopg() -> Any:
    """The psycopg module, or an ImportError saying which extra installs it."""
    try:
        import psycopg as module
    except ImportError as exc:
        raise ImportError("postgresql:// URLs need psycopg: pip install 'parcelzarr[postgis]'"
                          ) from exc
    return module


def quoted_table(target: PgTarget) -> Any:
    """The table of ``target`` as a psycopg SQL identifier."""
    sql = psycopg().sql

    assert target.table is not None
    schema, name = target.table
    return sql.Identifier(schema, name) if schema else sql.Identifier(name)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


@contextmanager
def translated(target: PgTarget, doing: str) -> Iterator[None]:
    """Turn database driver errors into :class:`DatabaseError` naming ``doing`` and the
    password-free URL."""
    error = psycopg().Error
    try:
        yield
    except error as exc:
        raise DatabaseError(f"{doing} {target.shown}: {_one_line(exc)}") from exc


@contextmanager
def connect(target: PgTarget, doing: str) -> Iterator[Any]:
    """A psycopg connection to ``target`` (libpq fills in what the URL leaves out), in one
    transaction committed on success and rolled back on error."""
    with translated(target, doing):
        conn = psycopg().connect(**target._connect)
        try:
            with conn.transaction():
                yield conn
        finally:
            conn.close()
