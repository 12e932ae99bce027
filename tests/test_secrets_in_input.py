"""Secrets given in the wrong place are refused without being repeated: a query string,
fragment or ``;`` parameters in a store URL (issue 9, item 12), and an account key given
where a storage option name belongs (item 11)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from parcelzarr.stores import parse_location

import parcelzarr as pz
from parcelzarr.cli import main

MARK = "Zq7SECRETmarker9xW"  # stands for a token, signature or account key
KEY = f"{MARK}Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHB=="


@pytest.mark.parametrize("url", [
    f"az://c/s.zarr?sv=2024&sig={MARK}",
    f"az://c/s.zarr?token={MARK}",
    f"az://c/s.zarr#sig={MARK}",
    f"az://c/s.zarr;sig={MARK}",
    f"az://c/s.zarr?%73ig={MARK}",
    f"abfs://c@acct.dfs.core.windows.net/s.zarr?x={MARK}",
    f"az://user:{MARK}@c/s.zarr",
    f"memory://s?sig={MARK}",
    f"file:///tmp/s.zarr?sig={MARK}",
    f"az://c/s.zarr?{MARK}",
])
def test_store_urls_with_query_fragment_or_params_are_refused_unrepeated(url: str) -> None:
    with pytest.raises(ValueError, match="must not carry a") as info:
        parse_location(url)
    assert MARK not in str(info.value)
    with pytest.raises(ValueError, match="must not carry a") as info:  # so does open_store
        pz.open_store(url)
    assert MARK not in str(info.value)


@pytest.mark.parametrize("url", [f"az://c/x.tif?token={MARK}", f"az://c/x.tif#{MARK}",
                                 f"az://c/x.tif;sig={MARK}", f"az://c/*.tif?%73ig={MARK}"])
def test_source_urls_with_a_query_are_refused_but_glob_wildcards_are_not(url: str) -> None:
    with pytest.raises(ValueError, match="must not carry a") as info:
        parse_location(url, glob=True)
    assert MARK not in str(info.value)
    loc = parse_location("az://c/T16TCK_*_B0?_10m.tif", glob=True)
    assert loc.path == "c/T16TCK_*_B0?_10m.tif"


def test_local_file_names_keep_their_characters(tmp_path: Path) -> None:
    for name in ("a#1.zarr", "b;2.zarr", "c?.zarr"):
        assert parse_location(str(tmp_path / name)).path == str(tmp_path / name)


@pytest.mark.parametrize("args", [
    ["info", f"az://c/s.zarr?token={MARK}"],
    ["info", f"az://c/s.zarr#sig={MARK}"],
    ["stats", f"az://c/s.zarr;sig={MARK}", "p.gpkg", "--out", "o.csv"],
    ["ingest", "x.tif", "--store", f"az://c/s.zarr?%73ig={MARK}"],
    ["ingest", f"az://c/x.tif?token={MARK}", "--store", "s.zarr"],
])
def test_cli_refuses_urls_with_secrets_without_printing_them(args: list[str]) -> None:
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert "must not carry a" in res.output
    assert MARK not in res.output


@pytest.mark.parametrize("store", ["az://c/s.zarr", "local"])
def test_bare_key_given_as_storage_option_is_not_printed(store: str, tmp_path: Path) -> None:
    """``--storage-option KEY==``: the key parses as an option *name* with value ``=``."""
    url = str(tmp_path / "s.zarr") if store == "local" else store
    for extra in ([], ["--storage-option", "account_name=devstoreaccount1"]):
        res = CliRunner().invoke(main, ["info", url, "--storage-option", KEY, *extra])
        assert res.exit_code == 2, res.output
        assert "not option names" in res.output
        assert MARK not in res.output
    res = CliRunner().invoke(main, ["info", url, "--storage-option", KEY.rstrip("=")])
    assert res.exit_code == 2
    assert "expected NAME=VALUE" in res.output
    assert MARK not in res.output


def test_bare_key_as_option_name_in_python_is_not_repeated(tmp_path: Path) -> None:
    for url in ("az://c/s.zarr", str(tmp_path / "s.zarr")):
        with pytest.raises(TypeError, match="not option names") as info:
            pz.open_store(url, storage_options={"account_name": "devstoreaccount1",
                                                KEY[:-2]: "="})
        assert MARK not in str(info.value)


def test_obstore_names_only_known_unsupported_options() -> None:
    with pytest.raises(TypeError, match="client_secret") as info:
        pz.open_store("az://c/s.zarr", storage_options={
            "account_name": "devstoreaccount1", "client_secret": MARK,
            "zq7secretmarker": "x", "transport": "obstore"})
    assert MARK not in str(info.value)
    assert "zq7secretmarker" not in str(info.value)
    assert "1 other" in str(info.value)
