"""What every comparison plot shares: the runs as records, and the grid of panels (one colour
per value of the first comparison key, one panel per combination of the others)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

PANEL = (4.8, 3.4)  # inches per panel
CLEAN, CORRUPTED = "tab:blue", "tab:red"


@dataclass
class RunRecord:
    """What the plots need from one run: its cell, its metric histories, its final weights and,
    for image data, its highest- and lowest-weighted examples (``reweight.experiment.examples``)."""

    cell: tuple[str, ...]
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    weights: pd.DataFrame | None = None
    examples: dict[str, Any] | None = None


def natural_key(value: str) -> tuple:
    """Numbers in numeric order before text; text with numbers in it (``annotator_10``) in
    natural order."""
    try:
        return (0, float(value), ())
    except ValueError:
        return (1, 0.0, tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                              for part in re.split(r"(\d+)", value) if part))


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class Layout:
    """Colours from the first key, panels from the others."""

    def __init__(self, records: list[RunRecord], by: list[str]) -> None:
        self.by = by
        self.colors = sorted({r.cell[0] for r in records}, key=natural_key)
        self.panels = sorted({r.cell[1:] for r in records}, key=lambda panel: [natural_key(v) for v in panel])
        self.records = records

    def color(self, value: str) -> str:
        palette = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
                   "tab:cyan", "tab:gray", "tab:red"]
        return palette[self.colors.index(value) % len(palette)]

    def panel_title(self, panel: tuple[str, ...]) -> str:
        return "  ".join(f"{key}={value}" for key, value in zip(self.by[1:], panel))

    def runs(self, color: str, panel: tuple[str, ...]) -> list[RunRecord]:
        return [r for r in self.records if r.cell[0] == color and r.cell[1:] == panel]

    def grid(self, plt, ncols: int | None = None, title: str = ""):
        n = len(self.panels)
        ncols = ncols or min(3, n)
        nrows = math.ceil(n / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(PANEL[0] * ncols, PANEL[1] * nrows + 0.6),
                                 squeeze=False, layout="constrained")
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title)
        return fig, list(axes.flat[:n])
