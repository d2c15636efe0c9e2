"""Builds the pieces named by a validated config and runs them, one child run per seed."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from reweight.config import ExperimentConfig, resolved
from reweight.engine import Engine, TrainSettings
from reweight.errors import ConfigError
from reweight.plugins import registry
from reweight.tracking import Tracker, weights_csv

SUMMARY_METRICS = ("test_accuracy", "target_loss", "source_loss", "weight_noise_auc", "weight_harmful_auc")
SUMMARY_PREFIXES = ("weight_group_", "weight_task_")  # per-slot weights, shown when few enough to name


@dataclass
class SeedResult:
    seed: int
    run_id: str
    metrics: dict[str, float]
    weights: torch.Tensor


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but no CUDA device is available")
    return device


def build_engine(config: ExperimentConfig, options: dict[str, BaseModel], seed: int) -> Engine:
    """Everything for one seed: data, model, granularity, strategy, hypergradient, engine."""
    plugins = registry()
    device = resolve_device(config.train.device)
    torch.manual_seed(seed)
    data = plugins.get("dataset", config.data.name).factory(options["data"], seed)
    too_big = config.train.source_batch_size > len(data.source)
    if too_big:
        raise ConfigError(
            f"train.source_batch_size: {config.train.source_batch_size} is larger than the "
            f"source set ({len(data.source)} examples)"
        )
    data = data.to(device)
    model = plugins.get("model", config.model.name).factory(options["model"], data).to(device)
    model.restrict_source_labels(data.source_label_mask())
    granularity = plugins.get("granularity", config.granularity.name).factory(
        options["granularity"], data.source, model=model
    )
    strategy = plugins.get("strategy", config.strategy.name).factory(options["strategy"], granularity, device)
    hypergradient = plugins.get("hypergradient", config.hypergrad.name).factory(options["hypergrad"])
    settings = TrainSettings(**config.train.model_dump(exclude={"steps", "eval_every", "device"}))
    return Engine(model, strategy, hypergradient, data, settings, seed)


def summary_keys(metrics: dict[str, float]) -> list[str]:
    """The metrics a run's summary line shows, in a fixed order."""
    named = [key for key in SUMMARY_METRICS if key in metrics]
    return named + sorted(key for key in metrics if key.startswith(SUMMARY_PREFIXES))


def summary_line(name: str, metrics: dict[str, float]) -> str:
    return f"{name}: " + " ".join(f"{key}={metrics[key]:.4f}" for key in summary_keys(metrics))


def run(config: ExperimentConfig, options: dict[str, BaseModel], console: Console) -> list[SeedResult]:
    full = resolved(config, options)
    first = build_engine(config, options, config.seeds[0])  # surface data/size problems before any run exists
    tracker = Tracker(config.tracking.experiment or config.name)
    tags = {
        "strategy": config.strategy.name,
        "granularity": config.granularity.name,
        "hypergrad": config.hypergrad.name,
        "dataset": config.data.name,
        "model": config.model.name,
    }
    results: list[SeedResult] = []
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, disable=not console.is_terminal, transient=True,
    )
    with tracker.parent(config.name, full) as parent_id, progress:
        for position, seed in enumerate(config.seeds):
            engine = first if position == 0 else build_engine(config, options, seed)
            task = progress.add_task(f"{config.strategy.name} seed {seed}", total=config.train.steps)
            child_config = {**full, "seed": seed}
            with tracker.child(f"{config.strategy.name}-seed{seed}", child_config, {**tags, "seed": seed}) as run_id:
                metrics = engine.fit(
                    config.train.steps,
                    config.train.eval_every,
                    on_eval=lambda step, values: tracker.metrics(values, step),
                    progress=lambda advance, task=task: progress.advance(task, advance),
                )
                weights = engine.source_weights().cpu()
                corrupted = engine.data.source.meta.get("corrupted")
                tracker.text(weights_csv(weights, None if corrupted is None else corrupted.cpu()), "weights.csv")
            progress.remove_task(task)
            results.append(SeedResult(seed, run_id, metrics, weights))
            console.print(summary_line(f"{config.name} [{config.strategy.name} seed {seed}]", metrics) + f" run={run_id}", soft_wrap=True, markup=False)
        stats = aggregate(results) if len(results) > 1 else {}
        if stats:
            tracker.metrics(stats, step=config.train.steps)
    if stats:
        shown = " ".join(
            f"{key}={stats[key + '_mean']:.4f}±{stats[key + '_std']:.4f}" for key in summary_keys(results[0].metrics)
        )
        console.print(f"{config.name} [{config.strategy.name}, {len(results)} seeds]: {shown} parent={parent_id}", soft_wrap=True, markup=False)
    return results


def aggregate(results: list[SeedResult]) -> dict[str, float]:
    """Mean and (sample) standard deviation of each final metric over seeds."""
    stats: dict[str, float] = {}
    for key in results[0].metrics:
        values = [r.metrics[key] for r in results if key in r.metrics]
        stats[f"{key}_mean"] = statistics.fmean(values)
        stats[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return stats
