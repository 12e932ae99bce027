"""The engine layers of a per-interval composite: one per (output, interval) (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ._composite import interval_labels
from ._engine import Layer

__all__ = ["composite_layers"]


def composite_layers(layers: Sequence[Layer], times: np.ndarray, interval: str,
                     composite: str) -> list[Layer]:
    """One layer per (output, interval) holding that interval's dates, in output then time
    order; ``label`` is the interval start."""
    out: list[Layer] = []
    by_name: dict[str, list[Layer]] = {}
    for la in layers:
        by_name.setdefault(la.name, []).append(la)
    for group in by_name.values():
        group = sorted(group, key=lambda la: times[la.time_index])
        labels = interval_labels(times[[la.time_index for la in group]], interval)
        for label in np.unique(labels):
            members = [la for la, lab in zip(group, labels, strict=True) if lab == label]
            out.append(replace(members[0], times=tuple(la.time_index for la in members),
                               composite=composite, label=label))
    return out
