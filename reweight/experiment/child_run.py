"""One child run (a combination and a seed): train, log metrics by step, keep a checkpoint,
log the weights file. A child run reopened by a resume continues from its checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress

from reweight.core.contracts import check_checkpointable
from reweight.core.data import class_labels
from reweight.core.engine import Engine
from reweight.core.errors import ContractError, NumericalError
from reweight.core.plugins import describe
from reweight.experiment import baseline, checkpoint, examples
from reweight.experiment.build import blamed
from reweight.experiment.checkpoint import CheckpointError
from reweight.experiment.config import resolved
from reweight.experiment.interrupts import Interrupted, StopRequest
from reweight.experiment.pipeline import PhasedStrategy, enter_next_phase, filter_metrics, phase_ends
from reweight.experiment.sweep import Combination, Plan
from reweight.experiment.tracking import (
    CHECKPOINT_TAG,
    DIVERGED_TAG,
    WEIGHTS_FILE,
    ChildRun,
    Tracker,
    weights_csv,
    weights_frame,
)


@dataclass
class SeedResult:
    seed: int
    run_id: str
    metrics: dict[str, float]
    combination: Combination | None = None
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    table: Any = None  # the weights file's rows, a pandas DataFrame
    parent_id: str = ""
    engine: Engine | None = None  # the trained engine (None for a run finished by an earlier process)
    plots: list[str] = field(default_factory=list)  # the child run's own pictures (artifact names)
    examples: Any = None  # its highest- and lowest-weighted images (``reweight.experiment.examples``)


def child_name(combination: Combination, seed: int) -> str:
    """The child run's name, unique within its parent run (resuming finds children by it)."""
    return f"{combination.name.replace(' ', ',')}-seed{seed}"


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


def weights_table(engine: Engine):
    """The final weight of every source example, with what the benchmark knows about it."""
    source = engine.data.source
    granularity = engine.strategy.granularity
    slot_of = granularity.slots(source.all())
    names = granularity.slot_names()
    slots = None
    if not torch.equal(slot_of.cpu(), torch.arange(len(source))):  # per-sample weights need no slot column
        slots = [names[k] for k in slot_of.tolist()] if names else [str(k) for k in slot_of.tolist()]
    labels = source.y if class_labels(source.y) else None
    return weights_frame(engine.source_weights().cpu(), source.meta.get("corrupted"), slots, source.meta.get("harmful"),
                         labels, examples.points(source))


def restore(engine: Engine, path: Path, run_id: str) -> dict[str, Any]:
    """Load the checkpoint at ``path`` into ``engine``; return it."""
    saved = checkpoint.load(path)
    if saved.get("run_id") != run_id:
        raise CheckpointError(f"{path}: belongs to run {saved.get('run_id')}, not {run_id}")
    try:
        engine.load_state_dict(saved["engine"])
    except (KeyError, RuntimeError, ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: does not fit this run's model or strategy ({describe(error)})") from None
    return saved


def run_seed(tracker: Tracker, plan: Plan, combination: Combination, seed: int, engine: Engine,
             progress: Progress, stop: StopRequest, parent_id: str, earlier: ChildRun | None = None,
             writer: bool = True) -> SeedResult:
    """Train one child run to its last step (``earlier``: continue that run from its checkpoint).
    ``writer``: this process saves the checkpoints (in a data-parallel run, rank 0 only; every
    rank loads the same one)."""
    config = combination.config
    history: dict[str, list[tuple[int, float]]] = {}
    latest: dict[str, float] = {}
    say = progress.console.print

    def on_eval(step: int, values: dict[str, float]) -> None:
        values = {**values, **filter_metrics(engine)}
        tracker.metrics(values, step)
        latest.clear()
        latest.update(values)
        for key, value in values.items():
            history.setdefault(key, []).append((step, value))

    child_config = {**resolved(config, combination.options), "seed": seed}
    name = child_name(combination, seed)
    with tracker.child(name, child_config, child_tags(plan, combination, seed),
                       run_id=earlier and earlier.run_id) as run_id:
        default = (Path(config.checkpoint.dir) / f"{run_id}.pt").absolute()
        candidates = [Path(earlier.checkpoint)] if earlier and earlier.checkpoint else []
        path = next((p for p in [*candidates, default] if p.is_file()), default)
        kept: list[int] = []  # the step of the checkpoint on disk, if any
        if path.is_file():
            saved = restore(engine, path, run_id)
            history.update({key: [tuple(point) for point in points] for key, points in saved["history"].items()})
            latest.update(saved["metrics"])
            kept.append(engine.step_count)
            say(f"{name}: resuming at step {engine.step_count} from {path}", markup=False)
            if saved.get("device") != engine.last_weights.device.type:
                say(f"{name}: the checkpoint was saved on {saved.get('device')} and resumes on "
                    f"{engine.last_weights.device.type}: the result will not be bit-identical", markup=False)
        elif earlier:
            say(f"{name}: no checkpoint at {' or '.join(str(p) for p in dict.fromkeys([*candidates, default]))}; "
                "training it again from step 0", markup=False)
        if not earlier or str(path) != earlier.checkpoint:
            tracker.tag(CHECKPOINT_TAG, str(path))

        def save() -> None:
            engine.check_finite()
            if not writer:
                return
            state = engine.state_dict()
            check_checkpointable(state["strategy"], "state_dict()")  # never write what cannot resume
            checkpoint.save(path, {"run_id": run_id, "parent_run_id": parent_id, "engine": state,
                                   "device": engine.last_weights.device.type, "history": history,
                                   "metrics": dict(latest)})
            kept[:] = [engine.step_count]

        def after_step(step: int) -> None:
            if stop.pending:
                save()
                raise Interrupted(f"{stop.name} at step {step} of {name}; checkpoint saved to {path}; "
                                  f"resume with: reweight resume {parent_id}", stop.signal)
            if config.checkpoint.every and step % config.checkpoint.every == 0:
                save()

        ends = phase_ends(config.train.steps, config.pipeline)
        task = progress.add_task(name, total=ends[-1], completed=engine.step_count)
        try:
            for phase, until in enumerate(ends):
                if isinstance(engine.strategy, PhasedStrategy) and phase > engine.strategy.phase:  # the next phase
                    enter_next_phase(engine)
                engine.fit(until, config.train.eval_every, on_eval=on_eval,
                           progress=lambda advance: progress.advance(task, advance), after_step=after_step,
                           patience=config.selection.patience)
            save()
        except ContractError as error:
            raise blamed(error, config) from None
        except NumericalError as error:
            tracker.tag(DIVERGED_TAG, "true")  # final: a resume would only diverge the same way again
            where = f"the last good checkpoint (step {kept[0]}) is kept: {path}" if kept else "no checkpoint was saved"
            raise NumericalError(f"{name}: {error}; {where}") from None
        finally:
            progress.remove_task(task)
        table = weights_table(engine)
        tracker.text(weights_csv(table), WEIGHTS_FILE)
        if config.tracking.baseline not in (None, config.strategy.name):
            def baseline_step(step: int) -> None:  # the run is saved; a resume trains the baseline again
                if stop.pending:
                    raise Interrupted(f"{stop.name} while training the baseline of {name}; checkpoint saved to "
                                      f"{path}; resume with: reweight resume {parent_id}", stop.signal)

            found = baseline.train(combination, seed, engine.parallel, baseline_step)
            tracker.metrics(found, engine.step_count)
            latest.update(found)
        pictures, extremes = examples.log_run_plots(tracker, engine, table, config.strategy.name) \
            if config.tracking.plots and writer else ([], None)
    return SeedResult(seed, run_id, dict(latest), combination, history, table, parent_id, engine, pictures, extremes)
