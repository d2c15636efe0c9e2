"""Parallel sweeps: the child runs of a plan (combination × seed) in N worker processes.

Each worker trains whole child runs exactly as the serial loop does (``run_seed``), under the
same parent run, which the main process opened and keeps; the main process prints each
child's summary line as it ends and hands the results back in plan order, so the parent's
summaries, plots and table are those of a serial run. Workers log to the tracking store
themselves: MLflow waits up to 20 s for SQLite's write lock (``busy_timeout``), and a child
run writes a few rows per evaluation, so concurrent workers queue briefly instead of failing
(a tracking server serialises them anyway).

Stops: the first Ctrl-C or SIGTERM (to the main process, or to the whole process group as a
terminal or a batch scheduler sends it) sets a flag every worker polls between steps; each
running child saves its checkpoint and ends KILLED, and the command says once how to resume.
A child that fails for any reason but divergence stops the others the same way, as the
serial loop stops at the first such failure; a diverging child fails alone, as serially.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress

from reweight.core.errors import NumericalError, ReweightError
from reweight.experiment.child_run import SeedResult, child_name, run_seed
from reweight.experiment.interrupts import Interrupted, StopRequest
from reweight.experiment.runner import combination_engine, summary_line
from reweight.experiment.sweep import Plan, expand
from reweight.experiment.tracking import ChildRun, Tracker

_worker: dict[str, Any] = {}  # in a worker process: its plan, stop flag, message queue, tracker


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """A share of the cores, so that N workers do not each start a thread per core."""
    return max(1, usable_cores() // workers)


@dataclass
class Outcome:
    """What a worker hands back for one child run (plain data: no engine, no config objects)."""

    name: str
    status: str  # finished | interrupted | diverged | failed | skipped
    message: str = ""
    run_id: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    table: Any = None


class SharedStop(StopRequest):
    """A stop request set by whichever process saw the signal (the main one or a worker)."""

    def __init__(self, flag: Any) -> None:  # no super().__init__: ``signal`` is the shared value
        self.flag = flag

    @property
    def signal(self) -> int | None:
        return self.flag.value or None


class RelayedProgress:
    """The part of rich's Progress that ``run_seed`` uses, sent to the main process, which
    draws it: one bar per running child and its messages, in order, on one console."""

    def __init__(self, messages: Any) -> None:
        self.messages = messages
        self.console = self  # run_seed prints through progress.console.print
        self.keys = count()

    def print(self, text: str, **_: Any) -> None:
        self.messages.put(("say", str(text)))

    def add_task(self, name: str, total: int, completed: int = 0) -> str:
        key = f"{os.getpid()}-{next(self.keys)}"
        self.messages.put(("task", key, name, total, completed))
        return key

    def advance(self, key: str, advance: float) -> None:
        self.messages.put(("advance", key, advance))

    def remove_task(self, key: str) -> None:
        self.messages.put(("remove", key))


def _stop_here(number: int, frame: Any) -> None:
    """The first signal in a worker: ask every child to stop after its step; a second acts at once."""
    _worker["flag"].value = _worker["flag"].value or number
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start_worker(raw: dict[str, Any], fingerprint: str, flag: Any, counter: Any, messages: Any,
                  threads: int) -> None:
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    _worker.update(flag=flag, messages=messages, tracker=None)
    signal.signal(signal.SIGINT, _stop_here)
    signal.signal(signal.SIGTERM, _stop_here)
    if torch.cuda.is_available():  # worker i on GPU i mod n ("auto" and "cuda" mean the current device)
        torch.cuda.set_device(index % torch.cuda.device_count())
    torch.set_num_threads(threads)
    plan = expand(raw)
    if plan.fingerprint != fingerprint:
        raise ReweightError("a worker process resolved the plan differently from the main process")
    _worker["plan"] = plan


def _run_child(index: int, seed: int, parent_id: str, earlier: ChildRun | None) -> Outcome:
    """In a worker: one child run, as the serial loop trains it."""
    plan: Plan = _worker["plan"]
    combination = plan.combinations[index]
    name = child_name(combination, seed)
    stop = SharedStop(_worker["flag"])
    if stop.pending:
        return Outcome(name, "skipped")
    if _worker["tracker"] is None:
        _worker["tracker"] = Tracker(plan.experiment)
    _worker["tracker"].children_of = parent_id
    try:
        engine = combination_engine(plan, combination, seed)
        result = run_seed(_worker["tracker"], plan, combination, seed, engine, RelayedProgress(_worker["messages"]),
                          stop, parent_id, earlier)
    except Interrupted as error:
        return Outcome(name, "interrupted", str(error))
    except NumericalError as error:
        return Outcome(name, "diverged", str(error))
    except ReweightError as error:
        return Outcome(name, "failed", str(error))
    return Outcome(name, "finished", run_id=result.run_id, metrics=result.metrics, history=result.history,
                   table=result.table)


def _relay(messages: Any, progress: Progress) -> None:
    """In the main process: draw what the workers send, until ``None``."""
    tasks: dict[str, Any] = {}
    while (message := messages.get()) is not None:
        kind, *rest = message
        if kind == "say":
            progress.console.print(rest[0], markup=False, soft_wrap=True)
        elif kind == "task":
            key, name, total, completed = rest
            tasks[key] = progress.add_task(name, total=total, completed=completed)
        elif kind == "advance" and rest[0] in tasks:
            progress.advance(tasks[rest[0]], rest[1])
        elif kind == "remove" and rest[0] in tasks:
            progress.remove_task(tasks.pop(rest[0]))


def launcher(workers: int):
    """What ``runner.run`` calls instead of its serial loop (``pool=``)."""
    return functools.partial(run_children, workers=workers)


def run_children(plan: Plan, tracker: Tracker, parent_id: str, children: dict[str, ChildRun], stop: StopRequest,
                 progress: Progress, console: Console, workers: int) -> tuple[list[SeedResult], list[str]]:
    """Every child run of the plan in up to ``workers`` processes: the results in plan order
    (combination, then seed) and the names of the children that diverged."""
    done: dict[tuple[int, int], SeedResult] = {}
    diverged: dict[tuple[int, int], str] = {}
    jobs: list[tuple[int, int, ChildRun | None]] = []
    for ci, combination in enumerate(plan.combinations):
        for si, seed in enumerate(plan.seeds):
            name = child_name(combination, seed)
            earlier = children.get(name)
            if earlier and earlier.diverged:
                console.print(f"{name}: diverged earlier (run={earlier.run_id}); not run again", markup=False)
                diverged[ci, si] = name
            elif earlier and earlier.status == "FINISHED":
                metrics, history, table = tracker.finished(earlier.run_id)
                done[ci, si] = SeedResult(seed, earlier.run_id, metrics, combination, history, table, parent_id)
                console.print(summary_line(f"{plan.name} [{combination.name} seed {seed}]", metrics)
                              + f" run={earlier.run_id} (finished earlier)", soft_wrap=True, markup=False)
            else:
                jobs.append((ci, si, earlier))
    if jobs:
        failure = _pool(plan, parent_id, jobs, stop, progress, console, workers, done, diverged)
        if isinstance(failure, BaseException):
            raise failure
        if failure:
            raise ReweightError(f"{failure}; the other child runs stopped at a checkpoint; resume with: "
                                f"reweight resume {parent_id}")
        if stop.pending:
            raise Interrupted(f"{stop.name}: the running child runs saved their checkpoints; resume with: "
                              f"reweight resume {parent_id}", stop.signal)
    return [done[key] for key in sorted(done)], [diverged[key] for key in sorted(diverged)]


def _pool(plan: Plan, parent_id: str, jobs: list[tuple[int, int, ChildRun | None]], stop: StopRequest,
          progress: Progress, console: Console, workers: int, done: dict, diverged: dict) -> str | BaseException | None:
    """Run ``jobs`` in a process pool, filling ``done`` and ``diverged``; the first failure, if any
    (its one line, or an unexpected exception to raise as it is)."""
    context = multiprocessing.get_context("spawn")  # no forked copies of the main process's threads or CUDA state
    flag, counter, messages = context.Value("i", 0), context.Value("i", 0), context.Queue()
    processes = min(workers, len(jobs))
    relay = threading.Thread(target=_relay, args=(messages, progress), daemon=True)
    relay.start()
    overall = progress.add_task(f"child runs ({processes} workers)", total=plan.runs,
                                completed=plan.runs - len(jobs))
    failure: str | BaseException | None = None
    pool = ProcessPoolExecutor(processes, mp_context=context, initializer=_start_worker,
                               initargs=(plan.raw, plan.fingerprint, flag, counter, messages,
                                         threads_per_worker(processes)))
    try:
        futures: dict[Future, tuple[int, int]] = {
            pool.submit(_run_child, ci, plan.seeds[si], parent_id, earlier): (ci, si) for ci, si, earlier in jobs}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            if stop.pending and not flag.value:
                flag.value = stop.signal
            for future in finished:
                ci, si = futures[future]
                combination, seed = plan.combinations[ci], plan.seeds[si]
                try:
                    outcome = future.result()
                except BaseException as error:  # noqa: BLE001 - a bug in a worker: stop the rest, then raise it
                    failure = failure or error
                    flag.value = flag.value or signal.SIGTERM
                    continue
                progress.advance(overall, 1)
                if outcome.status == "finished":
                    done[ci, si] = SeedResult(seed, outcome.run_id, outcome.metrics, combination, outcome.history,
                                              outcome.table, parent_id)
                    console.print(summary_line(f"{plan.name} [{combination.name} seed {seed}]", outcome.metrics)
                                  + f" run={outcome.run_id}", soft_wrap=True, markup=False)
                elif outcome.status == "diverged":
                    if plan.runs == 1:
                        raise NumericalError(outcome.message)
                    console.print(f"error: {outcome.message}", markup=False, soft_wrap=True)
                    diverged[ci, si] = outcome.name
                elif outcome.status == "failed" and failure is None:
                    failure = f"child run {outcome.name}: {outcome.message}"
                    flag.value = flag.value or signal.SIGTERM  # as serially: the first failure ends the command
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        messages.put(None)
        relay.join()
        progress.remove_task(overall)
    return failure
