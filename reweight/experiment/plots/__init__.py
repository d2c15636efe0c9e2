"""Comparison plots of a group of runs, as matplotlib figures (Agg backend, imported lazily).

Every plot groups runs into cells by the comparison keys (``--by``): the first key picks the
colour (usually the strategy), the others, if any, pick the panel (e.g. one panel per noise
level). The figures:

- ``curves.png``: a metric (test accuracy by default) over training, mean ± std over runs;
- ``weights.png``: histograms of the final weights, clean and corrupted examples (or helpful and
  harmful sources) apart;
- ``detector.png``: precision and recall of "the lowest weights are the corrupted labels";
- ``slots.png``: the mean final weight of each group or task, for granularities with slots.

Each is made only when the runs have what it needs (the weights file says whether labels
were corrupted and which slot each example belongs to).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reweight.experiment.plots.final_weights import detector, slots, weights
from reweight.experiment.plots.layout import RunRecord, natural_key, pyplot
from reweight.experiment.plots.training import curves

__all__ = ["RunRecord", "close", "curves", "detector", "figures", "natural_key", "save", "slots", "weights"]


def figures(records: list[RunRecord], by: list[str], metric: str = "test_accuracy") -> dict[str, Any]:
    """Every plot the records support, by file name."""
    made = {
        "curves.png": curves(records, by, metric),
        "weights.png": weights(records, by),
        "detector.png": detector(records, by),
        "slots.png": slots(records, by),
    }
    return {name: figure for name, figure in made.items() if figure is not None}


def save(made: dict[str, Any], directory: str | Path, dpi: int = 100) -> list[Path]:
    """Write each figure as a PNG under ``directory`` and close it."""
    plt = pyplot()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in made.items():
        path = directory / name
        figure.savefig(path, dpi=dpi)
        plt.close(figure)
        written.append(path)
    return written


def close(made: dict[str, Any]) -> None:
    plt = pyplot()
    for figure in made.values():
        plt.close(figure)
