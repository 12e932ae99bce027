"""``Tiles``: the chunk and window arithmetic of grids, arrays and queries, checked pixel by
pixel against a brute-force labelling of every pixel with its chunk (numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from parcelzarr._grid import GridSpec, Tiles


def _chunk_labels(shape: tuple[int, int], chunk: tuple[int, int]) -> tuple[np.ndarray, ...]:
    rows, cols = np.indices(shape)
    return rows // chunk[0], cols // chunk[1]


@pytest.mark.parametrize(("shape", "chunk"), [((600, 500), (256, 256)), ((7, 13), (3, 5)),
                                              ((256, 256), (256, 256)), ((1, 1), (4, 4))])
def test_tiles_against_brute_force(shape: tuple[int, int], chunk: tuple[int, int]) -> None:
    tiles = Tiles(shape, chunk)
    cy, cx = _chunk_labels(shape, chunk)
    assert tiles.counts == (int(cy.max()) + 1, int(cx.max()) + 1)
    for y in range(tiles.counts[0]):
        for x in range(tiles.counts[1]):
            inside = np.argwhere((cy == y) & (cx == x))
            r0, r1, c0, c1 = tiles.chunk_window(y, x)
            assert (r0, r1 - 1, c0, c1 - 1) == (*inside.min(axis=0)[:1], inside.max(axis=0)[0],
                                                inside.min(axis=0)[1], inside.max(axis=0)[1])
    rng = np.random.default_rng(0)
    windows = []
    for _ in range(200):
        r0, c0 = int(rng.integers(0, shape[0])), int(rng.integers(0, shape[1]))
        win = (r0, int(rng.integers(r0 + 1, shape[0] + 1)), c0,
               int(rng.integers(c0 + 1, shape[1] + 1)))
        windows.append(win)
        rows, cols = tiles.chunk_span(win)
        sub_y, sub_x = cy[win[0]:win[1], win[2]:win[3]], cx[win[0]:win[1], win[2]:win[3]]
        assert set(rows) == set(np.unique(sub_y).tolist())
        assert set(cols) == set(np.unique(sub_x).tolist())
        covered = np.zeros(shape, dtype=int)
        for y in rows:
            for x in cols:
                ya, yb, xa, xb = tiles.overlap(win, y, x)
                assert ya < yb and xa < xb
                assert np.all(cy[ya:yb, xa:xb] == y) and np.all(cx[ya:yb, xa:xb] == x)
                covered[ya:yb, xa:xb] += 1
        expected = np.zeros(shape, dtype=int)
        expected[win[0]:win[1], win[2]:win[3]] = 1
        assert np.array_equal(covered, expected)  # the overlaps tile the window exactly
    spans = tiles.chunk_spans(np.array(windows))
    for win, (y0, y1, x0, x1) in zip(windows, spans, strict=True):
        rows, cols = tiles.chunk_span(win)
        assert (y0, y1, x0, x1) == (rows[0], rows[-1], cols[0], cols[-1])


def test_grid_spec_uses_its_tiles() -> None:
    spec = GridSpec("EPSG:32616", 10.0, 10.0, 0.0, 0.0, width=500, height=600,
                    chunk_y=128, chunk_x=256)
    assert spec.tiles == Tiles((600, 500), (128, 256))
    assert spec.chunk_counts == (5, 2)
