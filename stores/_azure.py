"""Azure credentials: from storage options or the usual environment variables.

Options pass through to :class:`adlfs.AzureBlobFileSystem` unchanged; this module only checks
that *some* credential source exists (so that a missing one fails fast with a clear message
instead of a slow DefaultAzureCredential chain) and fills in the well-known Azurite key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from parcelzarr.errors import CredentialsError

__all__ = ["AZURITE_ACCOUNT", "AZURITE_KEY", "azure_options", "check_option_names", "redact"]

AZURITE_ACCOUNT = "devstoreaccount1"
#: The public, documented key of the Azurite emulator's default account (not a secret).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

_ENV_KEYS = (
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_NAME",
)
_CREDENTIAL_OPTIONS = (
    "account_key",
    "sas_token",
    "credential",
    "client_id",
    "anon",
    "connection_string",
)
_SECRET_PATTERNS = [
    re.compile(r"(AccountKey=)[^;\s'\"]+", re.IGNORECASE),
    re.compile(r"(SharedAccessSignature=)[^;\s'\"]+", re.IGNORECASE),
    re.compile(r"([?&]sig=)[^&\s'\"]+", re.IGNORECASE),
    re.compile(r"(['\"]?(?:account_key|sas_token|client_secret|credential)['\"]?\s*[:=]\s*['\"]?)"
               r"[^,'\"\s}]+", re.IGNORECASE),
]


#: What a storage option name looks like (adlfs parameter names): anything else is most
#: likely a value, such as an account key passed without ``account_key=``.
_OPTION_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def check_option_names(storage_options: Mapping[Any, Any] | None) -> None:
    """Refuse storage option names that are not names (lower-case letters, digits, ``_``).

    A bare account key or token given where a name belongs (``--storage-option KEY==``)
    would otherwise be echoed by the client's "unexpected option" error; the refusal never
    repeats the names or values.

    Raises
    ------
    TypeError
        When a name is not a string of that form.
    """
    bad = sum(1 for k in (storage_options or {})
              if not (isinstance(k, str) and _OPTION_NAME.fullmatch(k)))
    if bad:
        raise TypeError(
            f"{bad} storage option name(s) are not option names (names are lower-case "
            "letters, digits and _, e.g. account_key); they are not repeated here in case they "
            "are secrets: was a key or token given without NAME= in front of it?"
        )


def redact(text: str) -> str:
    """Remove account keys, SAS signatures and secrets from ``text`` (for logs and errors)."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1***", text)
    return text


def azure_options(storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Options for :class:`adlfs.AzureBlobFileSystem`, checked for a credential source.

    Credentials come, in this order, from ``storage_options`` (``connection_string``,
    ``account_name`` with ``account_key`` / ``sas_token`` / ``credential`` / service principal
    ``client_id``+``client_secret``+``tenant_id``, or ``anon=True``), then from the environment
    variables adlfs reads (``AZURE_STORAGE_CONNECTION_STRING``, ``AZURE_STORAGE_ACCOUNT_NAME``
    with ``AZURE_STORAGE_ACCOUNT_KEY`` / ``AZURE_STORAGE_SAS_TOKEN`` / ``AZURE_STORAGE_CLIENT_*``
    or, with only an account name, Azure's default credential chain such as a managed identity).
    The Azurite account ``devstoreaccount1`` needs no key: its public one is filled in.

    Raises
    ------
    CredentialsError
        When neither the options nor the environment name an account.
    TypeError
        When an option name is not a name (see :func:`check_option_names`).
    """
    check_option_names(storage_options)
    options = dict(storage_options or {})
    has_option_credential = any(k in options for k in _CREDENTIAL_OPTIONS)
    account = options.get("account_name") or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
    if not has_option_credential and not account and not any(os.environ.get(k) for k in _ENV_KEYS):
        raise CredentialsError(
            "no Azure credentials found: set AZURE_STORAGE_CONNECTION_STRING, or "
            "AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN, "
            "or pass storage options (CLI: --storage-option account_name=... "
            "--storage-option account_key=...)"
        )
    if (
        options.get("account_name") == AZURITE_ACCOUNT
        and "connection_string" not in options
        and not any(k in options for k in ("account_key", "sas_token", "credential"))
    ):
        options["account_key"] = AZURITE_KEY
    return options
