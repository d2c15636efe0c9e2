"""Builds the pieces named by a validated config and runs them: one parent run, and one child
run per combination of a sweep (a single one without) and seed."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import yaml
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from reweight.core import distributed
from reweight.core.distributed import SINGLE, DataParallel
from reweight.core.engine import Engine
from reweight.core.errors import ConfigError, NumericalError, ReweightError
from reweight.experiment import checkpoint
from reweight.experiment.build import (  # noqa: F401 - build_engine, resolve_device: also reached from here
    blamed,
    build_engine,
    rank_device,
    resolve_device,
)
from reweight.experiment.child_run import SeedResult, child_name, run_seed
from reweight.experiment.config import DEFAULT_NAMES, ExperimentConfig, flatten, resolved
from reweight.experiment.interrupts import AgreedStop, Interrupted, stop_on_signal
from reweight.experiment.pipeline import total_steps
from reweight.experiment.rank_tracking import tracker_for
from reweight.experiment.sweep import Combination, Plan, label
from reweight.experiment.tracking import PLAN_FILE, PLAN_TAG, Tracker, ui_link

SUMMARY_METRICS = ("test_accuracy", "target_loss", "source_loss", "weight_noise_auc", "weight_harmful_auc",
                   "test_accuracy_at_best", "best_step", "kept_fraction", "kept_corrupted_fraction")
SUMMARY_PREFIXES = ("weight_group_", "weight_task_")  # per-slot weights, shown when few enough to name


def summary_keys(metrics: dict[str, float]) -> list[str]:
    """The metrics a run's summary line shows, in a fixed order."""
    named = [key for key in SUMMARY_METRICS if key in metrics]
    return named + sorted(key for key in metrics if key.startswith(SUMMARY_PREFIXES))


def summary_line(name: str, metrics: dict[str, float]) -> str:
    def shown(key: str) -> str:
        return f"{key}={int(metrics[key])}" if key == "best_step" else f"{key}={metrics[key]:.4f}"

    return f"{name}: " + " ".join(shown(key) for key in summary_keys(metrics))


def parent_params(plan: Plan) -> dict[str, str] | None:
    """Without a sweep: the flattened resolved config (None). With one: the fields every
    combination shares, and ``sweep.<path>`` = the swept values."""
    if not plan.grid:
        return None
    flats = [flatten(resolved(c.config, c.options)) for c in plan.combinations]
    shared = {key: value for key, value in flats[0].items() if all(flat.get(key, object()) == value for flat in flats)}
    shared.update({f"sweep.{path}": json.dumps(values) for path, values in plan.grid.items()})
    return shared


MAX_RUN_NAME = 250  # what every MLflow store keeps of a run name


def component_label(section: str, config: ExperimentConfig, options: dict[str, BaseModel]) -> str:
    """``soseleto(lr=50.0)``: a component's name and the options it sets away from their defaults."""
    chosen = options[section]
    dumped = chosen.model_dump(mode="json")
    changed = [f"{key}={label(dumped[key])}" for key, field in type(chosen).model_fields.items()
               if field.is_required() or getattr(chosen, key) != field.get_default(call_default_factory=True)]
    name = getattr(config, section).name
    return f"{name}({', '.join(changed)})" if changed else name


def parent_name(plan: Plan) -> str:
    """The parent run's name: what tells it apart from the other runs of its experiment. Without
    a sweep, the strategy with the options it sets, then the hypergradient method and the
    granularity where they are not the defaults (``meta_weight_net · unrolled(steps=2)``); with
    one, the swept paths (``sweep strategy.name × data.noise_rate (6 combinations × 3 seeds)``)
    after the strategy when it is not swept. The seeds when there are several."""
    first = plan.combinations[0]
    seeds = f"{len(plan.seeds)} seeds" if len(plan.seeds) > 1 else ""
    if plan.grid:
        parts = []
        if not any(path.split(".")[0] == "strategy" for path in plan.paths):  # the same in every combination
            parts.append(component_label("strategy", first.config, first.options))
        elif not any(path in ("strategy", "strategy.name") for path in plan.paths):  # only its options swept
            parts.append(first.config.strategy.name)
        runs = f"{len(plan.combinations)} combination{'s' * (len(plan.combinations) > 1)}"
        parts.append(f"sweep {' × '.join(plan.paths)} ({runs}{' × ' + seeds if seeds else ''})")
    else:
        parts = [component_label("strategy", first.config, first.options)]
        for section in ("hypergrad", "granularity", "loss"):
            shown = component_label(section, first.config, first.options)
            if shown != DEFAULT_NAMES[section]:
                parts.append(shown)
        train = first.config.train
        parts += sorted({train.optimizer.name, train.target_optimizer.name} - {"sgd"})
        if first.config.selection.enabled:
            parts.append("selected on validation")
        parts += [seeds] if seeds else []
    name = " · ".join(parts)
    return name if len(name) <= MAX_RUN_NAME else name[:MAX_RUN_NAME - 3] + "..."


def run(plan: Plan, console: Console, resume: bool | str = False, keep_engines: bool = False,
        pool: Callable[..., tuple[list[SeedResult], list[str]]] | None = None) -> list[SeedResult]:
    """Every combination of the plan for every seed: one parent run, one child run each.

    ``resume``: True continues the newest unfinished parent run of the same plan (a new one
    if there is none), a run id continues that parent run. Finished child runs are kept,
    unfinished ones continue from their checkpoint, missing ones start. A child run that
    diverges (NaN) fails alone; the others still run, and the command fails at the end.
    ``keep_engines``: each result keeps its trained engine (for the Python API; the command
    line drops them, as a sweep's engines together may not fit in memory). ``pool``: trains
    the child runs instead of the serial loop, in worker processes, and returns them in plan
    order, with the names of those that diverged (``workers.launcher``).

    Under ``torchrun`` every rank runs this with the same plan: the ranks train each child run
    together (``reweight.core.distributed``), and only rank 0 writes (MLflow, checkpoints,
    files, the console). A pool of workers and several ranks do not mix."""
    first = plan.combinations[0]
    device = rank_device(first.config.train.device)
    with distributed.joined(first.config.distributed.backend, device) as parallel:
        if not parallel.leader:
            console = Console(quiet=True)
        if pool is not None and not parallel.single:
            raise ConfigError("--workers trains child runs side by side in one process each; it cannot run "
                              "under torchrun or --nproc (use one or the other)")
        return run_ranks(plan, console, resume, keep_engines, parallel, pool)


def run_ranks(plan: Plan, console: Console, resume: bool | str, keep_engines: bool,
              parallel: DataParallel, pool: Callable[..., tuple[list[SeedResult], list[str]]] | None = None,
              ) -> list[SeedResult]:
    """``run`` on this process's rank."""
    first = plan.combinations[0]
    engine = combination_engine(plan, first, plan.seeds[0], parallel)  # data/size problems before any run exists
    folder = Path(first.config.checkpoint.dir).absolute()
    checkpoint.check_writable(folder)
    tracker = tracker_for(plan.experiment, parallel)
    previous = resume if isinstance(resume, str) else tracker.unfinished_parent(plan.fingerprint) if resume else None
    if isinstance(resume, str) and tracker.fingerprint(resume) not in (None, plan.fingerprint):
        raise ReweightError(f"run {resume}: its config resolves differently now (the defaults or a plugin changed "
                            "since it started), so it cannot continue exactly; start a new run")
    if resume is True:
        console.print(f"resuming parent run {previous}" if previous else
                      "no unfinished run of this plan to resume: starting a new one", markup=False)
    children = tracker.children(previous) if previous else {}
    parent_config = plan.raw if plan.grid else resolved(first.config, first.options)
    parent_tags = {"reweight.sweep": ",".join(plan.paths)} if plan.grid else {}
    parent_tags[PLAN_TAG] = plan.fingerprint
    results: list[SeedResult] = []
    diverged: list[str] = []
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, disable=not console.is_terminal, transient=True,
    )
    with ExitStack() as stack:
        if previous and parallel.leader:  # before reopening it: a run another process is training must stay untouched
            stack.enter_context(checkpoint.exclusive(folder / f"{previous}.lock"))
        stop = stack.enter_context(stop_on_signal())
        if not parallel.single:
            stop = AgreedStop(stop, parallel)
        stack.enter_context(progress)
        parent_id = stack.enter_context(tracker.parent(parent_name(plan), parent_config, parent_tags, parent_params(plan),
                                                       run_id=previous))
        if previous is None and parallel.leader:
            stack.enter_context(checkpoint.exclusive(folder / f"{parent_id}.lock"))
            tracker.text(yaml.safe_dump(plan.raw, sort_keys=False), PLAN_FILE)
        try:
            if pool is not None:
                engine = None  # each worker builds its own
                trained, diverged = pool(plan, tracker, parent_id, children, stop, progress, console)
                for combination in plan.combinations:
                    mine = [result for result in trained if result.combination is combination]
                    results.extend(mine)
                    summarize_seeds(tracker, plan, combination, mine, console, parent_id)
            for combination in plan.combinations if pool is None else ():
                mine: list[SeedResult] = []
                for seed in plan.seeds:
                    ready, engine = engine, None  # the engine built up front is the first child's only
                    name = child_name(combination, seed)
                    earlier = children.get(name)
                    if stop.pending:
                        raise Interrupted(f"{stop.name} before {name} started; resume with: reweight resume "
                                          f"{parent_id}", stop.signal)
                    if earlier and earlier.diverged:
                        console.print(f"{name}: diverged earlier (run={earlier.run_id}); not run again",
                                      markup=False)
                        diverged.append(name)
                        continue
                    if earlier and earlier.status == "FINISHED":
                        metrics, history, table = tracker.finished(earlier.run_id)
                        mine.append(SeedResult(seed, earlier.run_id, metrics, combination, history, table, parent_id))
                        how = f"run={earlier.run_id} (finished earlier)"
                    else:
                        try:
                            mine.append(run_seed(tracker, plan, combination, seed,
                                                 ready or combination_engine(plan, combination, seed, parallel),
                                                 progress, stop, parent_id, earlier, writer=parallel.leader))
                        except NumericalError as error:
                            if len(plan.combinations) * len(plan.seeds) == 1:
                                raise
                            console.print(f"error: {error}", markup=False, soft_wrap=True)
                            diverged.append(name)
                            continue
                        if not keep_engines:
                            mine[-1].engine = None
                        how = f"run={mine[-1].run_id}"
                    console.print(summary_line(f"{plan.name} [{combination.name} seed {seed}]", mine[-1].metrics)
                                  + f" {how}", soft_wrap=True, markup=False)
                    explain(mine[-1], tracker, console)
                results.extend(mine)
                summarize_seeds(tracker, plan, combination, mine, console, parent_id)
            if first.config.tracking.plots and results and parallel.leader:
                log_plots(tracker, plan, results)
            if diverged:
                raise NumericalError(f"{len(diverged)} child run{'s' * (len(diverged) > 1)} diverged (NaN or "
                                     f"infinite loss): {', '.join(diverged)}; the others are logged under parent "
                                     f"run {parent_id}")
        except KeyboardInterrupt:  # a second Ctrl-C: no checkpoint now, but the periodic ones are kept
            raise Interrupted(f"interrupted; the last periodic checkpoints are kept; resume with: "
                              f"reweight resume {parent_id}") from None
    if plan.grid and results:
        print_comparison(plan, results, console, parent_id)
    console.print(f"in MLflow's UI: {ui_link(tracker.experiment_id, parent_id)}", soft_wrap=True, markup=False)
    return results


def explain(result: SeedResult, tracker: Tracker, console: Console) -> None:
    """With ``tracking.baseline``: what the run's numbers mean, in plain sentences."""
    from reweight.experiment import baseline

    config = result.combination.config
    if config.tracking.baseline not in (None, config.strategy.name):
        for line in baseline.explained(result, tracker.artifact_location):
            console.print(f"  {line}", soft_wrap=True, markup=False)


def summarize_seeds(tracker: Tracker, plan: Plan, combination: Combination, mine: list[SeedResult],
                    console: Console, parent_id: str) -> None:
    """Mean ± std over a combination's seeds: printed, and logged on the parent without a sweep."""
    stats = aggregate(mine) if len(mine) > 1 else {}
    if not stats:
        return
    if not plan.grid:  # with a sweep, one parent run holds many combinations: compare them instead
        tracker.metrics(stats, step=total_steps(combination.config))
    shown = " ".join(f"{key}={stats[key + '_mean']:.4f}±{stats[key + '_std']:.4f}"
                     for key in summary_keys(mine[0].metrics))
    console.print(f"{plan.name} [{combination.name}, {len(mine)} seeds]: {shown} parent={parent_id}",
                  soft_wrap=True, markup=False)
    from reweight.experiment import baseline

    for line in baseline.explained_seeds(stats, combination.config, len(mine)):
        console.print(f"  {line}", soft_wrap=True, markup=False)


def combination_engine(plan: Plan, combination: Combination, seed: int, parallel: DataParallel = SINGLE) -> Engine:
    try:
        return build_engine(combination.config, combination.options, seed, parallel)
    except ConfigError as error:
        if not plan.grid:
            raise
        raise ConfigError(f"sweep combination {combination.name}: {error}") from None


def comparison_keys(plan: Plan) -> list[str]:
    """What the plots and the closing table group by: the strategy, then the swept paths."""
    from reweight.experiment.compare import comparison_keys as keys_for

    return keys_for(plan.paths)


def cell_of(result: SeedResult, keys: list[str]) -> tuple[str, ...]:
    labels = result.combination.labels
    return tuple(labels.get(key, result.combination.config.strategy.name if key == "strategy" else "")
                 for key in keys)


def log_plots(tracker: Tracker, plan: Plan, results: list[SeedResult]) -> None:
    """The comparison plots of this run's children, as ``plots/*.png`` on the parent run."""
    from reweight.experiment import plots

    keys = comparison_keys(plan)
    records = [plots.RunRecord(cell_of(r, keys), r.history, r.table, r.examples) for r in results]
    made = plots.figures(records, keys)
    try:
        for name, figure in made.items():
            tracker.figure(figure, f"plots/{name}")
    finally:
        plots.close(made)


def print_comparison(plan: Plan, results: list[SeedResult], console: Console, parent_id: str) -> None:
    """The sweep at a glance: ``reweight compare`` of this parent run's children."""
    import pandas as pd

    from reweight.experiment import compare

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
