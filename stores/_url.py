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
_SAS = re.compile(r"\?(?:.*&)?(?:sig|sv|se|sp|st|spr|srt|ss|skoid)=", re.IGNORECASE)


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

    def child(self, name: str) -> Location:
        """The location of ``name`` below this one."""
        return Location(self.protocol, f"{self.path.rstrip('/')}/{name.lstrip('/')}")

    def __str__(self) -> str:
        return self.url


def parse_location(url: str | os.PathLike[str]) -> Location:
    """Parse a local path, ``file://``, ``az://container/path`` or ``memory://name``.

    URLs carrying a SAS token (``?sv=...&sig=...``) are rejected, so that a token is never
    carried inside a URL (and so never logged): pass it as
    ``storage_options={"sas_token": ...}`` instead. A bare ``?`` is a glob character.

    Examples
    --------
    >>> parse_location("az://imagery/stores/county.zarr").container
    'imagery'
    """
    if isinstance(url, os.PathLike):
        return Location("file", str(Path(url).expanduser().resolve()))
    if not isinstance(url, str) or not url:
        raise TypeError(f"store URL must be a non-empty string or path, got {url!r}")
    if "://" not in url:
        return Location("file", str(Path(url).expanduser().resolve()))
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if _SAS.search(rest):
        raise ValueError(
            "store URLs must not carry a SAS token (credentials belong in storage options, "
            "e.g. --storage-option sas_token=...)"
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
    if scheme == "memory":
        return Location("memory", "/" + rest.strip("/"))
    raise ValueError(
        f"unsupported URL scheme {scheme!r} in {url!r}: use a local path, az://container/path "
        "or memory://name"
    )
