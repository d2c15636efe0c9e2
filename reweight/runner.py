"""Builds the pieces named by a validated config and runs them: one parent run, and one child
run per combination of a sweep (a single one without) and seed."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from reweight import checkpoint
from reweight.checkpoint import CheckpointError
from reweight.config import ExperimentConfig, flatten, resolved
from reweight.engine import Engine, TrainSettings
from reweight.errors import ConfigError, NumericalError
from reweight.interrupts import Interrupted, StopRequest, stop_on_signal
from reweight.plugins import registry
from reweight.sweep import Combination, Plan
from reweight.tracking import CHECKPOINT_TAG, PLAN_FILE, PLAN_TAG, WEIGHTS_FILE, ChildRun, Tracker, weights_csv, weights_frame

SUMMARY_METRICS = ("test_accuracy", "target_loss", "source_loss", "weight_noise_auc", "weight_harmful_auc")
SUMMARY_PREFIXES = ("weight_group_", "weight_task_")  # per-slot weights, shown when few enough to name


@dataclass
class SeedResult:
    seed: int
    run_id: str
    metrics: dict[str, float]
    combination: Combination | None = None
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    table: Any = None  # the weights file's rows, a pandas DataFrame


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


def weights_table(engine: Engine):
    """The final weight of every source example, with what the benchmark knows about it."""
    source = engine.data.source
    granularity = engine.strategy.granularity
    slot_of = granularity.slots(source.all())
    names = granularity.slot_names()
    slots = None
    if not torch.equal(slot_of.cpu(), torch.arange(len(source))):  # per-sample weights need no slot column
        slots = [names[k] for k in slot_of.tolist()] if names else [str(k) for k in slot_of.tolist()]
    return weights_frame(engine.source_weights().cpu(), source.meta.get("corrupted"), slots, source.meta.get("harmful"))


def child_tags(plan: Plan, combination: Combination, seed: int) -> dict[str, str]:
    """What each child run is grouped by: its components, seed and (in a sweep) swept values."""
    config = combination.config
    tags = {
        "strategy": config.strategy.name,
        "granularity": config.granularity.name,
        "hypergrad": config.hypergrad.name,
        "dataset": config.data.name,
        "model": config.model.name,
        "seed": str(seed),
    }
    if plan.grid:
        tags["reweight.sweep"] = ",".join(plan.paths)
        tags["reweight.combination"] = combination.name
        tags.update({f"sweep.{path}": text for path, text in combination.labels.items()})
    return tags


def parent_params(plan: Plan) -> dict[str, str] | None:
    """Without a sweep: the flattened resolved config (None). With one: the fields every
    combination shares, and ``sweep.<path>`` = the swept values."""
    if not plan.grid:
        return None
    flats = [flatten(resolved(c.config, c.options)) for c in plan.combinations]
    shared = {key: value for key, value in flats[0].items() if all(flat.get(key, object()) == value for flat in flats)}
    shared.update({f"sweep.{path}": json.dumps(values) for path, values in plan.grid.items()})
    return shared


def run(plan: Plan, console: Console, resume: bool | str = False) -> list[SeedResult]:
    """Every combination of the plan for every seed: one parent run, one child run each.

    ``resume``: True continues the newest unfinished parent run of the same plan (a new one
    if there is none), a run id continues that parent run. Finished child runs are kept,
    unfinished ones continue from their checkpoint, missing ones start."""
    first = plan.combinations[0]
    engine = combination_engine(plan, first, plan.seeds[0])  # data/size problems before any run exists
    tracker = Tracker(plan.experiment)
    previous = resume if isinstance(resume, str) else tracker.unfinished_parent(plan.fingerprint) if resume else None
    if resume is True:
        console.print(f"resuming parent run {previous}" if previous else
                      "no unfinished run of this plan to resume: starting a new one", markup=False)
    children = tracker.children(previous) if previous else {}
    parent_config = plan.raw if plan.grid else resolved(first.config, first.options)
    parent_tags = {"reweight.sweep": ",".join(plan.paths)} if plan.grid else {}
    parent_tags[PLAN_TAG] = plan.fingerprint
    results: list[SeedResult] = []
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, disable=not console.is_terminal, transient=True,
    )
    with stop_on_signal() as stop, progress, tracker.parent(
        plan.name, parent_config, parent_tags, parent_params(plan), run_id=previous
    ) as parent_id:
        if previous is None:
            tracker.text(yaml.safe_dump(plan.raw, sort_keys=False), PLAN_FILE)
        for combination in plan.combinations:
            mine: list[SeedResult] = []
            for seed in plan.seeds:
                earlier = children.get(child_name(combination, seed))
                if earlier and earlier.status == "FINISHED":
                    metrics, history, table = tracker.finished(earlier.run_id)
                    mine.append(SeedResult(seed, earlier.run_id, metrics, combination, history, table))
                    how = f"run={earlier.run_id} (finished earlier)"
                else:
                    engine = engine or combination_engine(plan, combination, seed)
                    if stop.pending:
                        raise Interrupted(f"{stop.name} before {child_name(combination, seed)} started; "
                                          f"resume with: reweight resume {parent_id}")
                    mine.append(run_seed(tracker, plan, combination, seed, engine, progress, stop, parent_id,
                                         earlier))
                    how = f"run={mine[-1].run_id}"
                engine = None
                console.print(summary_line(f"{plan.name} [{combination.name} seed {seed}]", mine[-1].metrics)
                              + f" {how}", soft_wrap=True, markup=False)
            results.extend(mine)
            stats = aggregate(mine) if len(mine) > 1 else {}
            if stats:
                if not plan.grid:  # with a sweep, one parent run holds many combinations: compare them instead
                    tracker.metrics(stats, step=combination.config.train.steps)
                shown = " ".join(f"{key}={stats[key + '_mean']:.4f}±{stats[key + '_std']:.4f}"
                                 for key in summary_keys(mine[0].metrics))
                console.print(f"{plan.name} [{combination.name}, {len(mine)} seeds]: {shown} parent={parent_id}",
                              soft_wrap=True, markup=False)
        if first.config.tracking.plots:
            log_plots(tracker, plan, results)
    if plan.grid:
        print_comparison(plan, results, console, parent_id)
    return results


def combination_engine(plan: Plan, combination: Combination, seed: int) -> Engine:
    try:
        return build_engine(combination.config, combination.options, seed)
    except ConfigError as error:
        if not plan.grid:
            raise
        raise ConfigError(f"sweep combination {combination.name}: {error}") from None


def child_name(combination: Combination, seed: int) -> str:
    """The child run's name, unique within its parent run (resuming finds children by it)."""
    return f"{combination.name.replace(' ', ',')}-seed{seed}"


def run_seed(tracker: Tracker, plan: Plan, combination: Combination, seed: int, engine: Engine,
             progress: Progress, stop: StopRequest, parent_id: str, earlier: ChildRun | None = None) -> SeedResult:
    """One child run (``earlier``: continue that one from its checkpoint): train, log metrics by
    step, save checkpoints, log the weights file."""
    config = combination.config
    history: dict[str, list[tuple[int, float]]] = {}
    latest: dict[str, float] = {}

    def on_eval(step: int, values: dict[str, float]) -> None:
        tracker.metrics(values, step)
        latest.clear()
        latest.update(values)
        for key, value in values.items():
            history.setdefault(key, []).append((step, value))

    child_config = {**resolved(config, combination.options), "seed": seed}
    name = child_name(combination, seed)
    with tracker.child(name, child_config, child_tags(plan, combination, seed),
                       run_id=earlier and earlier.run_id) as run_id:
        path = Path(earlier.checkpoint) if earlier and earlier.checkpoint else \
            (Path(config.checkpoint.dir) / f"{run_id}.pt").absolute()
        kept: list[int] = []  # the step of the checkpoint on disk, if any
        if path.is_file():
            saved = checkpoint.load(path)
            if saved["run_id"] != run_id:
                raise CheckpointError(f"{path}: belongs to run {saved['run_id']}, not {run_id}")
            engine.load_state_dict(saved["engine"])
            history.update({key: [tuple(point) for point in points] for key, points in saved["history"].items()})
            latest.update(saved["metrics"])
            kept.append(engine.step_count)
            progress.console.print(f"{name}: resuming at step {engine.step_count} from {path}", markup=False)
        else:
            tracker.tag(CHECKPOINT_TAG, str(path))

        def save() -> None:
            engine.check_finite()
            checkpoint.save(path, {"run_id": run_id, "parent_run_id": parent_id, "engine": engine.state_dict(),
                                   "history": history, "metrics": dict(latest)})
            kept[:] = [engine.step_count]

        def after_step(step: int) -> None:
            if stop.pending:
                save()
                raise Interrupted(f"{stop.name} at step {step} of {name}; checkpoint saved to {path}; "
                                  f"resume with: reweight resume {parent_id}")
            if config.checkpoint.every and step % config.checkpoint.every == 0:
                save()

        task = progress.add_task(name, total=config.train.steps, completed=engine.step_count)
        try:
            engine.fit(config.train.steps, config.train.eval_every, on_eval=on_eval,
                       progress=lambda advance: progress.advance(task, advance), after_step=after_step)
            save()
        except NumericalError as error:
            where = f"the last good checkpoint (step {kept[0]}) is kept: {path}" if kept else "no checkpoint was saved"
            raise NumericalError(f"{name}: {error}; {where}") from None
        table = weights_table(engine)
        tracker.text(weights_csv(table), WEIGHTS_FILE)
    progress.remove_task(task)
    return SeedResult(seed, run_id, dict(latest), combination, history, table)


def comparison_keys(plan: Plan) -> list[str]:
    """What the plots and the closing table group by: the strategy, then the swept paths."""
    from reweight.compare import comparison_keys as keys_for

    return keys_for(plan.paths)


def cell_of(result: SeedResult, keys: list[str]) -> tuple[str, ...]:
    labels = result.combination.labels
    return tuple(labels.get(key, result.combination.config.strategy.name if key == "strategy" else "")
                 for key in keys)


def log_plots(tracker: Tracker, plan: Plan, results: list[SeedResult]) -> None:
    """The comparison plots of this run's children, as ``plots/*.png`` on the parent run."""
    from reweight import plots

    keys = comparison_keys(plan)
    records = [plots.RunRecord(cell_of(r, keys), r.history, r.table) for r in results]
    made = plots.figures(records, keys)
    try:
        for name, figure in made.items():
            tracker.figure(figure, f"plots/{name}")
    finally:
        plots.close(made)


def print_comparison(plan: Plan, results: list[SeedResult], console: Console, parent_id: str) -> None:
    """The sweep at a glance: ``reweight compare`` of this parent run's children."""
    import pandas as pd

    from reweight import compare

    keys = comparison_keys(plan)
    metrics = [key for key in ("test_accuracy", "weight_noise_auc", "weight_harmful_auc")
               if all(key in r.metrics for r in results)]
    if not metrics:
        return
    frame = pd.DataFrame([dict(zip(keys, cell_of(r, keys))) | {m: r.metrics[m] for m in metrics} for r in results])
    cells = compare.summarize(frame, keys, metrics)
    console.print(compare.render(cells, keys, metrics, "table", f"{plan.name}: {len(results)} runs"))
    console.print(f"again later: reweight compare {plan.experiment} --parent {parent_id}", soft_wrap=True,
                  markup=False)


def aggregate(results: list[SeedResult]) -> dict[str, float]:
    """Mean and (sample) standard deviation of each final metric over seeds."""
    stats: dict[str, float] = {}
    for key in results[0].metrics:
        values = [r.metrics[key] for r in results if key in r.metrics]
        stats[f"{key}_mean"] = statistics.fmean(values)
        stats[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return stats
