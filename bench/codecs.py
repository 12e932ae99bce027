"""Codec choice on real Sentinel-2 DNs: decode speed vs stored size (and encode speed).

    .venv/bin/python bench/codecs.py [--tif PATH] [--chunk 256] [--rounds 15]

Data: every full ``--chunk``² block of every band of a real Sentinel-2 uint16 GeoTIFF (default
``../shared/data/rsgislib-aber/sen2_20210527_aber_rebuilt.tif``: 10 bands of Aberystwyth,
2021-05-27). Each codec encodes and decodes the blocks one by one on one thread (Blosc's
internal threads off: the query engine decodes chunks in its own worker threads), as numcodecs
does inside zarr's codec pipeline; codecs take turns for ``--rounds`` rounds and each keeps
its fastest pass (encoding: of the first 3 rounds). Speeds are MB of
raw pixels per second; size is stored bytes as % of raw. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import rasterio
from numcodecs import LZ4, Blosc, Zstd

DEFAULT_TIF = (Path(__file__).resolve().parents[2] / "shared" / "data" / "rsgislib-aber"
               / "sen2_20210527_aber_rebuilt.tif")

SH, BIT, NO = Blosc.SHUFFLE, Blosc.BITSHUFFLE, Blosc.NOSHUFFLE
CODECS: list[tuple[str, Any]] = [
    ("blosc zstd-5 shuffle (default)", Blosc("zstd", 5, SH)),
    ("blosc zstd-1 shuffle", Blosc("zstd", 1, SH)),
    ("blosc zstd-3 shuffle", Blosc("zstd", 3, SH)),
    ("blosc zstd-9 shuffle", Blosc("zstd", 9, SH)),
    ("blosc zstd-1 bitshuffle", Blosc("zstd", 1, BIT)),
    ("blosc zstd-5 bitshuffle", Blosc("zstd", 5, BIT)),
    ("blosc lz4-5 shuffle", Blosc("lz4", 5, SH)),
    ("blosc lz4-5 bitshuffle", Blosc("lz4", 5, BIT)),
    ("blosc lz4hc-5 shuffle", Blosc("lz4hc", 5, SH)),
    ("blosc blosclz-5 shuffle", Blosc("blosclz", 5, SH)),
    ("zstd-1 (no shuffle)", Zstd(1)),
    ("zstd-3 (no shuffle)", Zstd(3)),
    ("zstd-9 (no shuffle)", Zstd(9)),
    ("lz4 (no shuffle)", LZ4()),
]


def blocks(tif: Path, chunk: int) -> list[np.ndarray]:
    """Every full ``chunk``² block of every band, C-contiguous."""
    with rasterio.open(tif) as ds:
        data = ds.read()
    _, h, w = data.shape
    return [np.ascontiguousarray(band[r:r + chunk, c:c + chunk])
            for band in data for r in range(0, h - chunk + 1, chunk)
            for c in range(0, w - chunk + 1, chunk)]


def measure(codecs: list[tuple[str, Any]], data: list[np.ndarray], rounds: int
            ) -> dict[str, dict[str, float]]:
    """Encode and decode MB/s (raw) and stored size (% of raw) of each codec on ``data``.

    Codecs take turns, round after round, and each keeps its fastest pass: load from other
    jobs on the machine then hits every codec alike.
    """
    raw = sum(b.nbytes for b in data)
    enc = {}
    for name, codec in codecs:
        enc[name] = [codec.encode(b) for b in data]
        for b, e in zip(data, enc[name], strict=True):  # lossless, or the figures mean nothing
            out = np.frombuffer(codec.decode(e), dtype=b.dtype).reshape(b.shape)
            assert np.array_equal(out, b), name
    t_enc = dict.fromkeys(enc, np.inf)
    t_dec = dict.fromkeys(enc, np.inf)
    for i in range(rounds):
        for name, codec in codecs:
            t0 = time.perf_counter()
            for e in enc[name]:
                codec.decode(e)
            t_dec[name] = min(t_dec[name], time.perf_counter() - t0)
            if i < 3:  # encoding (ingest) is secondary here, and slow at high levels
                t0 = time.perf_counter()
                for b in data:
                    codec.encode(b)
                t_enc[name] = min(t_enc[name], time.perf_counter() - t0)
    return {name: {"encode_MBps": raw / t_enc[name] / 1e6, "decode_MBps": raw / t_dec[name] / 1e6,
                   "size_pct": 100 * sum(len(e) for e in enc[name]) / raw} for name in enc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tif", type=Path, default=DEFAULT_TIF)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    numcodecs.blosc.set_nthreads(1)
    numcodecs.blosc.use_threads = False
    data = blocks(args.tif, args.chunk)
    raw = sum(b.nbytes for b in data)
    print(f"{len(data)} blocks of {args.chunk}² uint16 ({raw / 1e6:.1f} MB raw) from "
          f"{args.tif.name}, numcodecs {numcodecs.__version__}, best of {args.rounds} rounds\n")
    print("| codec | stored % of raw | decode MB/s | encode MB/s |\n|---|--:|--:|--:|")
    for name, m in measure(CODECS, data, args.rounds).items():
        print(f"| {name} | {m['size_pct']:.1f} | {m['decode_MBps']:,.0f} | "
              f"{m['encode_MBps']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
