"""What the weights say about the examples: their spread within each class (the paper finds it
does not follow the labels), the highest- and lowest-weighted images of each class (some
follow appearance), and, for 2-D inputs, the source points coloured by weight."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reweight.experiment.plots.layout import CORRUPTED, PANEL, Layout, RunRecord, natural_key, pyplot

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_CELLS = 4  # pictures of single runs: one run each of this many cells at most


def _first_of_each_cell(records: list[RunRecord], usable) -> list[RunRecord]:
    """One run per cell (the first), in the order of the cells; the others add no new picture."""
    seen: dict[tuple[str, ...], RunRecord] = {}
    for record in records:
        if record.cell not in seen and usable(record):
            seen[record.cell] = record
    order = sorted(seen, key=lambda cell: [natural_key(value) for value in (*cell[1:], cell[0])])
    return [seen[cell] for cell in order][:MAX_CELLS]


def _wrapped(text: str, width: int = 60) -> str:
    """Long cell names (many distinguishing fields) on several lines, not over the next panel."""
    import textwrap

    return textwrap.fill(text, width, break_long_words=False)


def _cell_title(by: list[str], cell: tuple[str, ...]) -> str:
    return _wrapped("  ".join(f"{key}={value}" for key, value in zip(by, cell)))


def _varies(values) -> bool:
    return float(values.max() - values.min()) > 1e-9


def by_class(records: list[RunRecord], by: list[str]) -> Figure | None:
    """Boxes of the final weights of each source class (the observed label), pooled over the runs
    of a cell, one colour per value of the first key."""
    import numpy as np
    import pandas as pd
    from matplotlib.patches import Patch

    records = [r for r in records if r.weights is not None and len(r.weights) and "label" in r.weights]
    if not records:
        return None
    plt = pyplot()
    layout = Layout(records, by)
    classes = sorted({int(c) for r in records for c in r.weights["label"].unique()})
    fig, axes = layout.grid(plt, ncols=min(2, len(layout.panels)),
                            title="Final weight by source class (observed label)\n"
                                  "boxes: quartiles, whiskers: lowest to highest")
    width = 0.8 / len(layout.colors)
    x = np.arange(len(classes))
    for ax, panel in zip(axes, layout.panels):
        handles = []
        for k, color in enumerate(layout.colors):
            runs = layout.runs(color, panel)
            if not runs:
                continue
            frame = pd.concat([r.weights for r in runs], ignore_index=True)
            groups = [frame["weight"][frame["label"] == c].to_numpy() for c in classes]
            present = [i for i, group in enumerate(groups) if len(group)]
            shade = layout.color(color)
            ax.boxplot([groups[i] for i in present], positions=x[present] + (k - (len(layout.colors) - 1) / 2) * width,
                       widths=width * 0.85, whis=(0, 100), patch_artist=True, manage_ticks=False,
                       boxprops={"facecolor": shade, "alpha": 0.55}, medianprops={"color": "black"})
            handles.append(Patch(facecolor=shade, alpha=0.55, label=f"{color} (n={len(runs)})"))
        step = max(1, len(classes) // 20)
        ax.set_xticks(x[::step], [str(c) for c in classes[::step]], fontsize=8)
        ax.set_xlabel("source class (observed label)")
        ax.set_ylabel("final weight")
        ax.set_title(_wrapped(layout.panel_title(panel), 50), fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(handles=handles, fontsize=8, title=by[0], title_fontsize=8, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0))
    return fig


def points(records: list[RunRecord], by: list[str]) -> Figure | None:
    """The source points of 2-D data coloured by final weight, marker by observed label, the
    corrupted labels ringed: one run per cell."""
    import numpy as np

    records = _first_of_each_cell(records, lambda r: r.weights is not None and len(r.weights)
                                  and {"x0", "x1"} <= set(r.weights) and "x2" not in r.weights)
    if not records:
        return None
    plt = pyplot()
    n = len(records)
    ncols = min(2, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(PANEL[0] * 1.25 * ncols, PANEL[1] * 1.3 * nrows + 0.5),
                             squeeze=False, layout="constrained")
    fig.suptitle("Source points coloured by final weight (one run per cell)")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    markers = "o^sDvP*X"
    for ax, record in zip(axes.flat, records):
        frame = record.weights
        weight = frame["weight"].to_numpy()
        labels = frame["label"].to_numpy() if "label" in frame else np.zeros(len(frame), dtype=int)
        corrupted = frame["corrupted"].to_numpy().astype(bool) if "corrupted" in frame else np.zeros(len(frame), bool)
        low, high = (float(weight.min()), float(weight.max())) if _varies(weight) else (weight[0] - 0.5, weight[0] + 0.5)
        shown = None
        for k, value in enumerate(sorted(set(labels.tolist()))):
            for bad in (False, True):
                at = (labels == value) & (corrupted == bad)
                if not at.any():
                    continue
                shown = ax.scatter(frame["x0"][at], frame["x1"][at], c=weight[at], cmap="viridis", vmin=low, vmax=high,
                                   marker=markers[k % len(markers)], s=44 if bad else 16,
                                   edgecolors=CORRUPTED if bad else "none", linewidths=1.0 if bad else 0)
        fig.colorbar(shown, ax=ax, label="final weight", shrink=0.9)
        for k, value in enumerate(sorted(set(labels.tolist()))):
            ax.scatter([], [], marker=markers[k % len(markers)], color="gray", s=16, label=f"label {value}")
        title = _cell_title(by, record.cell)
        if corrupted.any() and not corrupted.all():
            from sklearn.metrics import roc_auc_score

            ax.scatter([], [], marker="o", facecolors="none", edgecolors=CORRUPTED, linewidths=1.0, s=44,
                       label=f"flipped label ({corrupted.sum()})")
            title += f"\nflipped labels found by low weight: AUC {roc_auc_score(corrupted, -weight):.3f}"
        if not _varies(weight):
            title += f"\nevery weight = {weight[0]:.3g}"
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="lower left", framealpha=0.8)
        ax.set_xlabel("x0")
        ax.set_ylabel("x1")
        ax.set_aspect("equal", adjustable="datalim")
    return fig


def _mosaic(examples: dict, per_class: int):
    """One RGB canvas: a row per class, its highest-weighted images on the left, its lowest on
    the right; corrupted labels framed in red. Returns the canvas, the classes, and the x
    centres of the two halves."""
    import numpy as np
    from matplotlib.colors import to_rgb

    x = examples["x"].astype(np.float32) / 255.0
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    height, width = x.shape[2:]
    pad = max(2, height // 14)
    tile_h, tile_w = height + 2 * pad, width + 2 * pad
    gap = tile_w // 2
    classes = sorted(set(examples["label"].tolist()))
    canvas = np.ones((len(classes) * tile_h, 2 * per_class * tile_w + gap, 3), np.float32)
    red, white = np.array(to_rgb(CORRUPTED)), np.ones(3)
    corrupted = examples.get("corrupted", np.zeros(len(x), bool)).astype(bool)
    for row, value in enumerate(classes):
        for high in (True, False):
            members = np.flatnonzero((examples["label"] == value) & (examples["high"] == high))
            for slot, i in enumerate(members[:per_class]):
                left = slot * tile_w if high else per_class * tile_w + gap + slot * tile_w
                top = row * tile_h
                canvas[top:top + tile_h, left:left + tile_w] = red if corrupted[i] else white
                canvas[top + pad:top + pad + height, left + pad:left + pad + width] = x[i].transpose(1, 2, 0)
    halves = (per_class * tile_w / 2, per_class * tile_w + gap + per_class * tile_w / 2)
    return canvas, classes, tile_h, halves


def extremes(records: list[RunRecord], by: list[str]) -> Figure | None:
    """The highest- and lowest-weighted source images of each class, one run per cell (runs
    whose weights are all equal have nothing to show)."""
    import numpy as np

    records = _first_of_each_cell(records, lambda r: r.examples is not None and len(r.examples["weight"])
                                  and _varies(r.examples["weight"]))
    if not records:
        return None
    plt = pyplot()
    per_class = max(int(np.bincount(np.asarray(r.examples["label"])[np.asarray(r.examples["high"])]).max())
                    for r in records)
    mosaics = [_mosaic(r.examples, per_class) for r in records]
    rows = max(len(classes) for _, classes, _, _ in mosaics)
    fig, axes = plt.subplots(1, len(records), figsize=(2.0 + 3.4 * len(records), 1.2 + 0.42 * rows), squeeze=False,
                             layout="constrained")
    fig.suptitle("Highest- (left) and lowest-weighted (right) source images of each class\n"
                 "(by observed label; red frame: corrupted label)", fontsize=10)
    for ax, record, (canvas, classes, tile_h, halves) in zip(axes[0], records, mosaics):
        ax.imshow(canvas, interpolation="nearest")
        ax.set_yticks(tile_h * (np.arange(len(classes)) + 0.5), [str(c) for c in classes], fontsize=8)
        ax.set_xticks(halves, [f"highest {per_class}", f"lowest {per_class}"], fontsize=8)
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_ylabel("class")
        ax.set_title(_cell_title(by, record.cell), fontsize=9)
    return fig
