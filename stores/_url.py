"""Parse store and source URLs into a protocol and a path (pure, no I/O)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["Location", "parse_location"]

Protocol = Literal["file", "az", "memory"]

_AZURE_SCHEMES = {"az", "abfs", "abfss"}
_KNOWN_SCHEMES = _AZURE_SCHEMES | {"file", "memory"}
# A "?" followed by key=value pairs: a query string, never a glob's one-character wildcard.
_QUERY = re.compile(r"\?[^/]*[=&]")


@dataclass(frozen=True)
class Location:
    """Where a store or source lives.

    Attributes
    ----------
    protocol:
        ``"file"`` (the embedded default), ``"az"`` (Azure Blob Storage) or ``"memory"``.
    path:
        Path inside the filesystem: an absolute local path, ``container/blob/path`` for
        Azure, ``/name`` for memory.
    """

    protocol: Protocol
    path: str

    @property
    def url(self) -> str:
        """Canonical, credential-free URL."""
        if self.protocol == "file":
            return self.path
        return f"{self.protocol}://{self.path.lstrip('/')}"

    @property
    def container(self) -> str:
        """Azure container name (first path component)."""
        return self.path.split("/", 1)[0]

    def __str__(self) -> str:
        return self.url


def _extra_part(rest: str, *, glob: bool) -> str | None:
    """Which URL part beyond scheme, container and path ``rest`` carries, if any."""
    if "#" in rest:
        return "fragment ('#...')"
    if ";" in rest:
        return "parameters (';...')"
    if "?" in rest and (not glob or _QUERY.search(rest)):
        return "query string ('?...')"
    netloc = rest.partition("/")[0]
    if ":" in netloc.partition("@")[0] and "@" in netloc:
        return "user name and password ('user:...@')"
    return None


def parse_location(url: str | os.PathLike[str], *, glob: bool = False) -> Location:
    """Parse a local path, ``file://``, ``az://container/path`` or ``memory://name``.

    URLs (``az://``, ``abfs[s]://``, ``file://``, ``memory://``) must not carry a query string,
    a fragment, ``;`` parameters or a password: a SAS token or any other secret is never
    carried inside a URL (and so never logged, printed or turned into a blob name); pass it
    as ``storage_options={"sas_token": ...}`` instead. The refusal never repeats the URL.
    With ``glob`` (source patterns), a ``?`` not followed by ``key=value`` is a glob's
    one-character wildcard. Local paths without a scheme are file names, taken as they are.

    Examples
    --------
    >>> parse_location("az://imagery/stores/county.zarr").container
    'imagery'
    """
    if isinstance(url, os.PathLike):
        return Location("file", str(Path(url).expanduser().resolve()))
    if not isinstance(url, str) or not url:
        raise TypeError(f"store URL must be a non-empty string or path, got {type(url).__name__}")
    if "://" not in url:
        return Location("file", str(Path(url).expanduser().resolve()))
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme not in _KNOWN_SCHEMES:
        shown = scheme if scheme.isalnum() and len(scheme) <= 10 else "?"
        raise ValueError(
            f"unsupported URL scheme {shown!r}: use a local path, az://container/path or "
            "memory://name"
        )
    extra = _extra_part(rest, glob=glob)
    if extra is not None:
        raise ValueError(
            f"{scheme}:// URLs must not carry a {extra}, such as a SAS token; it is not "
            "repeated here. Give a SAS token as the sas_token storage option (CLI: "
            "--storage-option), or set AZURE_STORAGE_SAS_TOKEN"
        )
    netloc, _, path = rest.partition("/")
    if scheme == "file":
        return Location("file", str(Path(rest).expanduser().resolve()))
    if scheme in _AZURE_SCHEMES:
        if "@" in netloc:  # abfs://container@account.dfs.core.windows.net/path
            netloc = netloc.split("@", 1)[0]
        if not netloc:
            raise ValueError(f"Azure URL {url!r} names no container: use az://container/path")
        return Location("az", f"{netloc}/{path.lstrip('/')}".rstrip("/"))
    return Location("memory", "/" + rest.strip("/"))
