"""Comparison plots of a group of runs, as matplotlib figures (Agg backend, imported lazily).

Every plot groups runs into cells by the comparison keys (``--by``): the first key picks the
colour (usually the strategy), the others, if any, pick the panel (e.g. one panel per noise
level). The figures:

- ``curves.png``: a metric (test accuracy by default) over training, mean ± std over runs;
- ``weights.png``: histograms of the final weights, clean and corrupted examples (or helpful and
  harmful sources) apart;
- ``detector.png``: precision and recall of "the lowest weights are the corrupted labels";
- ``slots.png``: the mean final weight of each group or task, for granularities with slots;
- ``weights_by_class.png``: boxes of the final weights of each source class (observed label);
- ``points.png``: for 2-D inputs, the source points coloured by weight, corrupted labels ringed
  (one run per cell);
- ``extremes.png``: for images, the highest- and lowest-weighted images of each class (one run
  per cell, from its ``examples.npz``).

Each is made only when the runs have what it needs (the weights file says whether labels
were corrupted, which slot each example belongs to, its class and, for 2-D data, where it
lies). The last three are also made for every child run alone (``run_figures``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reweight.experiment.plots.examples import by_class, extremes, points
from reweight.experiment.plots.final_weights import detector, slots, weights
from reweight.experiment.plots.layout import RunRecord, natural_key, pyplot
from reweight.experiment.plots.training import curves

__all__ = ["RunRecord", "by_class", "close", "curves", "detector", "extremes", "figures", "natural_key", "points",
           "run_figures", "save", "slots", "weights"]


def figures(records: list[RunRecord], by: list[str], metric: str = "test_accuracy") -> dict[str, Any]:
    """Every plot the records support, by file name."""
    made = {
        "curves.png": curves(records, by, metric),
        "weights.png": weights(records, by),
        "detector.png": detector(records, by),
        "slots.png": slots(records, by),
        **run_figures(records, by),
    }
    return {name: figure for name, figure in made.items() if figure is not None}


def run_figures(records: list[RunRecord], by: list[str]) -> dict[str, Any]:
    """The pictures of the weights of single runs (each child run logs them for itself)."""
    made = {
        "weights_by_class.png": by_class(records, by),
        "points.png": points(records, by),
        "extremes.png": extremes(records, by),
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
