"""``tracking.baseline``: what a run's numbers mean, against the same run without reweighting.

Each child run also trains the baseline strategy (``uniform``: every weight 1) with the same
config and seed (so the same data, initialisation and batches), logs its final test accuracy
on the child run as ``baseline_test_accuracy``, and the command prints one plain sentence
per finding. It costs a second training of every child run, so it is off by default and set
in the configs a first run is meant to explain (``benchmarks/synthetic_2d.yaml``).
"""

from __future__ import annotations

from typing import Any

from reweight.core.errors import ConfigError
from reweight.experiment.build import build_engine
from reweight.experiment.config import resolved, validate
from reweight.experiment.pipeline import total_steps

KEPT = ("test_accuracy", "test_accuracy_at_best")  # the baseline's metrics logged, as baseline_<name>
PICTURES = ("plots/points.png", "plots/extremes.png", "plots/weights_by_class.png")  # the first one made is named


def train(combination: Any, seed: int, parallel: Any, after_step=lambda step: None) -> dict[str, float]:
    """The baseline's final metrics, as ``baseline_<name>``: the combination's config with the
    baseline strategy (its default options), trained on ``seed`` without logging anything
    (``after_step``: e.g. stop on a signal)."""
    name = combination.config.tracking.baseline
    raw = resolved(combination.config, combination.options)
    raw["strategy"] = {"name": name}
    raw["tracking"] = {**raw["tracking"], "baseline": None}
    if raw.pop("pipeline", None):  # no phases acting on weights: the baseline trains as many steps in one
        raw["train"] = {**raw["train"], "steps": total_steps(combination.config)}
    try:
        config, options = validate(raw)
    except ConfigError as error:
        raise ConfigError(f"tracking.baseline: {error}") from None
    engine = build_engine(config, options, seed, parallel)
    found = engine.fit(config.train.steps, config.train.eval_every, after_step=after_step,
                       patience=config.selection.patience)
    return {f"baseline_{key}": value for key, value in found.items() if key in KEPT}


def explained(result: Any, where: Any) -> list[str]:
    """Plain sentences on a finished child run: its test accuracy against the baseline's, how
    well its weights single out the corrupted labels (or harmful sources), and where its
    picture of the weights is. ``where(run_id, artifact)``: the artifact's location."""
    metrics, config = result.metrics, result.combination.config
    baseline = config.tracking.baseline
    lines = []
    if "test_accuracy" in metrics and "baseline_test_accuracy" in metrics:
        ours, theirs = metrics["test_accuracy"], metrics["baseline_test_accuracy"]
        change = "the same as" if round(ours, 3) == round(theirs, 3) else "higher than" if ours > theirs else "lower than"
        lines.append(f"test accuracy {ours:.3f} with {config.strategy.name}, {change} {theirs:.3f} without "
                     f"reweighting ({baseline}, same seed and data)")
    for key, what in (("weight_noise_auc", "corrupted labels"), ("weight_harmful_auc", "harmful sources")):
        if key in metrics:
            lines.append(f"the weights single out the {what}: AUC {metrics[key]:.3f} (1: every one weighted below "
                         f"every other example, 0.5: chance)")
    picture = next((name for name in PICTURES if name in result.plots), None)
    if picture:
        lines.append(f"picture of the weights: {where(result.run_id, picture)}")
    return lines


def explained_seeds(stats: dict[str, float], config: Any, seeds: int) -> list[str]:
    """The accuracy sentence over a combination's seeds, mean ± sample std of each side."""
    if "test_accuracy_mean" not in stats or "baseline_test_accuracy_mean" not in stats:
        return []
    line = (f"over {seeds} seeds: test accuracy {stats['test_accuracy_mean']:.3f} ± {stats['test_accuracy_std']:.3f} "
            f"with {config.strategy.name}, {stats['baseline_test_accuracy_mean']:.3f} ± "
            f"{stats['baseline_test_accuracy_std']:.3f} without reweighting ({config.tracking.baseline}, same seeds)")
    return [line]
