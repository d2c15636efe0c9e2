"""The pictures of one child run's weights, made in the training process where the inputs are
at hand: by class, the extreme images, the 2-D points (``reweight.experiment.plots.examples``).

For ``reweight compare --plot``, which has only what MLflow stored, each run of image data also
logs ``examples.npz``: the pixels of its few highest- and lowest-weighted images of each class
(uint8, ``PER_CLASS`` each way, ``MAX_CLASSES`` classes at most: a few hundred KB at most, where
every image of the source would be megabytes). 2-D points need no file of their own: their
coordinates are columns of the weights file.
"""

from __future__ import annotations

import io
from typing import Any

import torch

from reweight.core.data import class_labels

EXAMPLES_FILE = "examples.npz"
PER_CLASS = 4
MAX_CLASSES = 20


def images(split: Any) -> bool:
    """Whether a split's inputs are images held whole (N×C×H×W, 1 or 3 channels)."""
    if split.streamed:
        return False
    x = split.x
    return x.dim() == 4 and x.shape[1] in (1, 3) and min(x.shape[2:]) >= 8


def points(split: Any) -> torch.Tensor | None:
    """The inputs of 2-D data (N×2 floats), for the weights file; None for any other data."""
    if split.streamed or split.x.dim() != 2 or split.x.shape[1] != 2 or not split.x.is_floating_point():
        return None
    return split.x


def extremes(split: Any, weights: torch.Tensor, per_class: int = PER_CLASS) -> dict[str, Any] | None:
    """The ``per_class`` highest- and lowest-weighted images of each class, as numpy arrays
    (``x`` uint8, ``label``, ``weight``, ``index``, ``high``, and ``corrupted`` when known);
    None where it does not apply (not images, no class labels)."""
    import numpy as np

    if not images(split) or not class_labels(split.y):
        return None
    weights, y = weights.detach().cpu(), split.y.cpu()
    chosen, high = [], []
    for value in torch.unique(y)[:MAX_CLASSES].tolist():
        members = torch.nonzero(y == value).flatten()
        order = members[torch.argsort(weights[members], descending=True, stable=True)]
        k = min(per_class, len(order) // 2) or 1
        chosen += [order[:k], order[-k:].flip(0)]
        high += [torch.ones(k, dtype=torch.bool), torch.zeros(k, dtype=torch.bool)]
    index = torch.cat(chosen)
    x = split.x[index.to(split.x.device)].cpu()
    if x.dtype != torch.uint8:  # scaled to the range of the images shown
        low, top = x.min(), x.max()
        x = ((x - low) / (top - low).clamp_min(1e-12) * 255).round().to(torch.uint8)
    found = {"x": x.numpy(), "label": y[index].numpy(), "weight": weights[index].double().numpy(),
             "index": index.numpy(), "high": torch.cat(high).numpy()}
    if "corrupted" in split.meta:
        found["corrupted"] = split.meta["corrupted"].cpu()[index].numpy().astype(np.int8)
    return found


def to_bytes(examples: dict[str, Any]) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **examples)
    return buffer.getvalue()


def from_bytes(data: bytes) -> dict[str, Any]:
    import numpy as np

    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        return {key: stored[key] for key in stored.files}


def log_run_plots(tracker: Any, engine: Any, table: Any, strategy: str) -> tuple[list[str], dict[str, Any] | None]:
    """Log the pictures this run's data supports as ``plots/*.png`` on the active child run (and
    ``examples.npz`` for image data); return the artifact names of the pictures, and the
    examples (for the parent run's plots)."""
    from reweight.experiment import plots

    source = engine.data.source
    examples = extremes(source, engine.source_weights())
    if examples is not None:
        tracker.binary(to_bytes(examples), EXAMPLES_FILE)
    record = plots.RunRecord((strategy,), {}, table, examples)
    made = plots.run_figures([record], ["strategy"])
    try:
        for name, figure in made.items():
            tracker.figure(figure, f"plots/{name}")
    finally:
        plots.close(made)
    return [f"plots/{name}" for name in made], examples
