"""What the final weights look like: their histograms, how well they detect corrupted labels,
and the mean weight of each slot."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from reweight.experiment.plots.layout import CLEAN, CORRUPTED, Layout, RunRecord, natural_key, pyplot

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


def _with_weights(records: list[RunRecord]) -> list[RunRecord]:
    return [r for r in records if r.weights is not None and len(r.weights)]


def _knows_corruption(frame: pd.DataFrame) -> bool:
    return "corrupted" in frame and 0 < frame["corrupted"].sum() < len(frame)


def _split(frame: pd.DataFrame) -> tuple[str, str, str] | None:
    """How to split a weights histogram: by corrupted labels, else by harmful sources."""
    if _knows_corruption(frame):
        return "corrupted", "clean", "corrupted"
    if "harmful" in frame and 0 < frame["harmful"].sum() < len(frame):
        return "harmful", "helpful source", "harmful source"
    return None


def weights(records: list[RunRecord], by: list[str]) -> Figure | None:
    """Histograms of final weights, pooled over the runs of a cell; clean and corrupted apart
    when the benchmark knows which labels were corrupted (else helpful and harmful sources)."""
    import numpy as np
    import pandas as pd

    records = _with_weights(records)
    if not records:
        return None
    plt = pyplot()
    layout = Layout(records, by)
    ncols = len(layout.colors)
    nrows = len(layout.panels)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols + 0.4, 2.8 * nrows + 0.7), squeeze=False,
                             layout="constrained")
    fig.suptitle("Final weights of the source examples (all runs of a cell pooled)")
    for row, panel in enumerate(layout.panels):
        for col, color in enumerate(layout.colors):
            ax = axes[row][col]
            runs = layout.runs(color, panel)
            if not runs:
                ax.set_visible(False)
                continue
            frame = pd.concat([r.weights for r in runs], ignore_index=True)
            values = frame["weight"].to_numpy()
            low, high = float(values.min()), float(values.max())
            if high - low < 1e-9:
                ax.text(0.5, 0.5, f"every weight = {low:.3g}", transform=ax.transAxes, ha="center", fontsize=9,
                        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
                low, high = low - 0.05, high + 0.05
            bins = np.linspace(low, high, 31)
            split = _split(frame)
            if split:
                column, good, bad_name = split
                bad = frame[column].to_numpy().astype(bool)
                ax.hist(values[~bad], bins=bins, color=CLEAN, alpha=0.6, label=f"{good} ({(~bad).sum()})")
                ax.hist(values[bad], bins=bins, color=CORRUPTED, alpha=0.6, label=f"{bad_name} ({bad.sum()})")
                ax.legend(fontsize=8)
            else:
                ax.hist(values, bins=bins, color="tab:gray", alpha=0.8, label="all examples")
            title = f"{by[0]}={color}"
            if panel:
                title += "\n" + layout.panel_title(panel)
            ax.set_title(f"{title}  ({len(runs)} run{'s' * (len(runs) > 1)})", fontsize=9)
            ax.set_xlabel("final weight")
            ax.set_ylabel("examples")
            ax.grid(alpha=0.3)
    return fig


def detector(records: list[RunRecord], by: list[str]) -> Figure | None:
    """Precision-recall of the weights as a corrupted-label detector: flag the examples with the
    lowest weights; precision = share of flagged that are corrupted, recall = share of the
    corrupted that are flagged. One thin line per run, legend with the average precision."""
    import numpy as np
    from sklearn.metrics import average_precision_score, precision_recall_curve

    records = [r for r in _with_weights(records) if _knows_corruption(r.weights)]
    if not records:
        return None
    plt = pyplot()
    layout = Layout(records, by)
    fig, axes = layout.grid(plt, title="Lowest weights as a corrupted-label detector")
    for ax, panel in zip(axes, layout.panels):
        rates = []
        for color in layout.colors:
            curves_ = []
            for run in layout.runs(color, panel):
                truth = run.weights["corrupted"].to_numpy().astype(int)
                score = -run.weights["weight"].to_numpy()
                precision, recall, _ = precision_recall_curve(truth, score)
                curves_.append((recall, precision, average_precision_score(truth, score)))
                rates.append(truth.mean())
            if not curves_:
                continue
            scores = [ap for _, _, ap in curves_]
            spread = f" ± {np.std(scores, ddof=1):.2f}" if len(scores) > 1 else ""
            for i, (recall, precision, _) in enumerate(curves_):
                ax.plot(recall, precision, drawstyle="steps-post", color=layout.color(color), alpha=0.7, lw=1.2,
                        label=None if i else f"{color}: AP {np.mean(scores):.2f}{spread}")
        if rates:
            ax.axhline(float(np.mean(rates)), color="black", ls="--", lw=1, label="chance (corrupted share)")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("recall (share of corrupted labels flagged)")
        ax.set_ylabel("precision (share of flagged that are corrupted)")
        ax.set_title(layout.panel_title(panel), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center left")  # low recall, mid precision: empty for good and bad detectors
    return fig


def slots(records: list[RunRecord], by: list[str]) -> Figure | None:
    """Mean final weight per slot (group or task), mean ± std over the runs of each cell;
    slots that the benchmark made harmful are marked."""
    import numpy as np

    records = [r for r in _with_weights(records) if "slot" in r.weights]
    if not records:
        return None
    plt = pyplot()
    layout = Layout(records, by)
    names = sorted({str(name) for r in records for name in r.weights["slot"]}, key=natural_key)
    harmful = set()
    for r in records:
        if "harmful" in r.weights:
            share = r.weights.groupby("slot")["harmful"].mean()
            harmful |= set(share[share >= 0.5].index)
    prefix = os.path.commonprefix(names)
    prefix = prefix[: prefix.rfind("_") + 1] if len(names) > 1 else ""
    fig, axes = layout.grid(plt, ncols=min(2, len(layout.panels)), title="Mean final weight per slot (mean ± std over runs)")
    width = 0.8 / len(layout.colors)
    for ax, panel in zip(axes, layout.panels):
        x = np.arange(len(names))
        for k, color in enumerate(layout.colors):
            runs = layout.runs(color, panel)
            if not runs:
                continue
            table = np.array([r.weights.groupby("slot")["weight"].mean().reindex(names).to_numpy() for r in runs])
            std = table.std(axis=0, ddof=1) if len(runs) > 1 else None
            ax.bar(x + (k - (len(layout.colors) - 1) / 2) * width, table.mean(axis=0), width, yerr=std,
                   color=layout.color(color), label=f"{color} (n={len(runs)})", capsize=2)
        short = [name[len(prefix):] or name for name in names]
        long = max(len(text) for text in short) > 8
        ax.set_xticks(x, short, rotation=30 if long else 0, ha="right" if long else "center", fontsize=8)
        for tick, name in zip(ax.get_xticklabels(), names):
            if name in harmful:
                tick.set_color(CORRUPTED)
                tick.set_fontweight("bold")
        ax.set_xlabel(f"slot{f' ({prefix}…)' if prefix else ''}" + ("; red: harmful" if harmful else ""))
        ax.set_ylabel("mean weight")
        ax.set_title(layout.panel_title(panel), fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8, title=by[0], title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
