"""Progress bars: shown on a terminal, silent with ``quiet`` or when stderr is not a TTY."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress"]


def progress(*, total: float | None, desc: str, unit: str = "it", quiet: bool = False,
             **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr, disabled when ``quiet`` or when stderr is not a terminal."""
    disable = quiet or not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=False,
                dynamic_ncols=True, **kwargs)
