"""Training curves: a metric over the steps of the runs of each cell."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reweight.experiment.plots.layout import Layout, RunRecord, pyplot

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def curves(records: list[RunRecord], by: list[str], metric: str = "test_accuracy") -> Figure | None:
    """``metric`` over training steps: mean line and ± std band over the runs of each cell."""
    import numpy as np

    records = [r for r in records if r.history.get(metric)]
    if not records:
        return None
    plt = pyplot()
    layout = Layout(records, by)
    fig, axes = layout.grid(plt, title=f"{metric} during training (mean ± std over runs)")
    for ax, panel in zip(axes, layout.panels):
        for color in layout.colors:
            runs = layout.runs(color, panel)
            if not runs:
                continue
            by_step: dict[int, list[float]] = {}
            for run in runs:
                for step, value in run.history[metric]:
                    by_step.setdefault(step, []).append(value)
            steps = np.array(sorted(by_step))
            mean = np.array([np.mean(by_step[s]) for s in steps])
            std = np.array([np.std(by_step[s], ddof=1) if len(by_step[s]) > 1 else 0.0 for s in steps])
            ax.plot(steps, mean, color=layout.color(color), label=f"{color} (n={len(runs)})", lw=1.6)
            ax.fill_between(steps, mean - std, mean + std, color=layout.color(color), alpha=0.2, lw=0)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.set_title(layout.panel_title(panel), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title=by[0], title_fontsize=8)
    return fig
