"""The paper's tables in one command, sized for one GPU: CIFAR-10 with noisy labels and, where
SVHN is in the data root, SVHN -> MNIST.

    python benchmarks/paper_tables.py --out paper_tables.md     # writes paper_tables.md and .csv
    python benchmarks/paper_tables.py --dry-run                 # the plan and an estimated time
    python benchmarks/paper_tables.py --quick --out quick.md    # a smoke run of a few steps

- CIFAR-10 (``benchmarks/cifar10_noisy.yaml`` on the JPEG Parquet export, ``cifar10_jpeg``):
  noise 30 / 40 / 50% x {SOSELETO as shipped, joint, target-only, fine-tuning, the best
  pipeline (``best_pipeline`` below: the one place to change it)} x seeds 0, 1, 2.
- SVHN -> MNIST (``benchmarks/svhn_mnist.yaml``): nᵗ = 20 / 25 x {SOSELETO, target-only,
  fine-tuning, joint} x the same seeds; skipped, with one line saying why, without SVHN.

Every run is one ``reweight.run`` (the Python API), so it lands in MLflow like any other, in
the experiments ``paper_tables_cifar10`` and ``paper_tables_svhn_mnist``
(``reweight compare paper_tables_cifar10 --metric test_accuracy,weight_noise_auc``). A row the
installed reweight rejects (a ``ConfigError``, e.g. a ``pipeline`` section it does not know yet)
is skipped with its one-line error; the others run. Runs are spread over ``--workers``
processes (on a GPU, all on the one device: a small convnet's step is bound by kernel launches
and Python, so several processes keep the GPU busier than one).

Sizing. The paper runs 20,000 steps (CIFAR-10) and 10,000 (SVHN); here the batch sizes are the
paper's and only the steps are cut: 1,200 CIFAR-10 steps and 800 SVHN steps by default
(``--steps`` sets the first, the second is 2/3 of it). No GPU was available to measure, so the
estimate rests on what was measured on a CPU and on assumptions (``--dry-run`` prints it; a real
run prints a projected total after every finished run, from its own timings):

- measured (``STEP``): each kind of step's FLOPs (46.5 GFLOP for a SOSELETO step of CIFAR-10
  Quick at source batch 100 and target batch 500; 19.3 for a plain step) and its number of aten
  ops (165-273), and its time on a CPU (0.9-3.7x a plain step; ``--measure`` prints them);
- assumed: the GPU computes 10 TFLOPS on these small convolutions, all processes together
  (``GPU_TFLOPS``; an H100's fp32 peak is about 60, and cuDNN convolutions use TF32);
- assumed: each aten op costs one process 20 us of host time (``OP_S``), and a step takes the
  larger of its compute and its host time, since kernels run while the host issues the next,
  so several processes fill the GPU while each is bound by its host;
- assumed: a worker spends 40 s starting (imports, CUDA, decoding the 60,000 JPEGs once: a
  process reads a data set once and keeps it) and a run 3 s beyond its steps (its engine, one
  evaluation, MLflow, one checkpoint).

With the defaults, 4 workers and SVHN present, the estimate is 5.2 minutes for all 69 runs
(pipeline row included; CIFAR-10 is compute-bound, about 230 s of GPU compute, SVHN -> MNIST
host-bound); at half the assumed throughput (``GPU_TFLOPS = 5``) it is 9.1 minutes.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import multiprocessing
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BENCHMARKS = Path(__file__).resolve().parent


def best_pipeline(steps: int) -> dict[str, dict[str, Any]]:
    """The CIFAR-10 table's "best pipeline" row(s): label -> overrides (config path -> value).
    Change it here once the experiments decide. ``steps``: the table's budget per run; the
    pipeline spends the same in all (bilevel phase plus its later phases)."""
    tail = max(1, steps // 4)
    # on MNIST and Fashion-MNIST (docs/results.md) reweighting with the paper's rule, then
    # fine-tuning, came closest to the fine-tuning baseline of the pipelines tried
    return {"pipeline: soseleto, then fine-tune": {
        "train.steps": steps - tail,
        "pipeline": [{"phase": "fine_tune", "steps": tail}],
    }}


# One step of each kind at the tables' batch sizes, by ``--measure`` (docs/results.md, "The paper's
# tables on a GPU"): (seconds with one thread on a shared 2-core AMD EPYC, GFLOP by
# torch.utils.flop_counter, top-level aten ops by torch.profiler). soseleto_direct: SOSELETO with
# c > 0 (strategy.target_weight); a pipeline's later phases are costed as fine-tuning's target
# phase. svhn_mnist: the digits model on Fashion-MNIST -> MNIST with svhn_mnist.yaml's batches.
STEP = {
    "cifar10": {"soseleto": (0.642, 46.5, 244), "soseleto_direct": (0.898, 68.7, 272), "joint": (0.531, 41.5, 195),
                "target_only": (0.524, 41.5, 195), "fine_tune_source": (0.222, 19.3, 167),
                "fine_tune_target": (0.537, 41.5, 195)},
    "svhn_mnist": {"soseleto": (0.117, 5.9, 238), "soseleto_direct": (0.135, 7.3, 273), "joint": (0.098, 4.3, 200),
                   "target_only": (0.093, 4.3, 200), "fine_tune_source": (0.073, 2.9, 165),
                   "fine_tune_target": (0.091, 4.3, 200)},
}
# Assumed for one H100-class GPU (not measured: see the module docstring).
GPU_TFLOPS = 10.0  # effective on these small convolutions, all processes together
OP_S = 20e-6  # host time per aten op of one process (dispatch and kernel launch, eager mode)
WORKER_START_S, RUN_OVERHEAD_S = 40.0, 3.0


@dataclass
class Table:
    key: str
    title: str
    config: Path
    steps: int
    columns: dict[str, list[str]]  # column label -> --set overrides
    rows: dict[str, dict[str, Any]]  # row label -> overrides
    metrics: list[str]
    base: list[str] = field(default_factory=list)
    quick: list[str] = field(default_factory=list)  # with --quick: data small enough for the test fixtures


def tables(cifar_steps: int, svhn_steps: int) -> list[Table]:
    cifar = Table(
        "cifar10", "CIFAR-10, noisy labels (cifar10_jpeg, CIFAR-10 Quick)", BENCHMARKS / "cifar10_noisy.yaml",
        cifar_steps,
        {f"{int(rate * 100)}% noise": [f"data.noise.rate={rate}"] for rate in (0.3, 0.4, 0.5)},
        {"soseleto (shipped, c = 0)": {},
         "joint": {"strategy.name": "joint"},
         "target_only": {"strategy.name": "target_only"},
         "fine_tune (3/4 source, 1/4 target)": {"strategy.name": "fine_tune",
                                                "strategy.source_steps": cifar_steps * 3 // 4},
         **best_pipeline(cifar_steps)},
        ["test_accuracy", "weight_noise_auc"],
        base=["data.dataset=cifar10_jpeg"],
        quick=["data.target_per_class=3", "train.target_batch_size=8", "train.source_batch_size=8"],
    )
    svhn = Table(
        "svhn_mnist", "SVHN -> MNIST (digits 0-4 -> 5-9, digits model)", BENCHMARKS / "svhn_mnist.yaml", svhn_steps,
        {f"nᵗ = {n}": [f"data.target.per_class={n}"] for n in (20, 25)},
        {"soseleto": {},
         "target_only": {"strategy.name": "target_only"},
         "fine_tune (3/5 source, 2/5 target)": {"strategy.name": "fine_tune",
                                                "strategy.source_steps": svhn_steps * 3 // 5},
         "joint": {"strategy.name": "joint"}},
        ["test_accuracy"],
        quick=["data.target.per_class=3", "train.source_batch_size=8"],
    )
    return [cifar, svhn]


@dataclass
class Job:
    table: str
    row: str
    column: str
    seed: int
    overrides: list[str]
    config: str
    phases: list[tuple[str, int]]  # (kind of step in STEP, steps)

    @property
    def label(self) -> str:
        return f"{self.table} | {self.row} | {self.column} | seed {self.seed}"


def as_set(path: str, value: Any) -> str:
    plain = isinstance(value, str) and yaml.safe_load(value) == value
    return f"{path}={value if plain else json.dumps(value)}"  # JSON is YAML, as --set reads its values


def row_phases(table: Table, settings: dict[str, Any]) -> list[tuple[str, int]]:
    """What a row's run computes, as (kind of step in ``STEP``, steps)."""
    strategy = settings.get("strategy.name", "soseleto")
    steps = settings.get("train.steps", table.steps)
    if strategy == "fine_tune":
        source = min(steps, settings.get("strategy.source_steps", steps))
        phases = [("fine_tune_source", source), ("fine_tune_target", steps - source)]
    elif strategy == "soseleto":
        phases = [("soseleto_direct" if settings.get("strategy.target_weight", 0) else "soseleto", steps)]
    else:
        phases = [(strategy if strategy in STEP[table.key] else "soseleto", steps)]
    later = sum(phase.get("steps", 0) for phase in settings.get("pipeline", []) if isinstance(phase, dict))
    return [*phases, ("fine_tune_target", later)]


def seconds(job: Job, gpu: bool) -> tuple[float, float]:
    """(device compute, time in one process) of a job's steps: on a CPU the measured step
    times; on a GPU its FLOPs at ``GPU_TFLOPS``, and per step the larger of that and its ops'
    host time, as kernels run while the host issues the next."""
    compute = alone = 0.0
    for kind, steps in job.phases:
        cpu_s, gflop, ops = STEP[job.table][kind]
        device = gflop / (GPU_TFLOPS * 1e3) if gpu else cpu_s
        compute += steps * device
        alone += steps * max(device, ops * OP_S if gpu else 0.0)
    return compute, alone


def plan(chosen: list[Table], seeds: list[int], quick: bool, say) -> tuple[list[Job], list[Job], dict[str, dict[str, str]]]:
    """The jobs, each row validated first: rows the installed reweight rejects are left out,
    with their one-line error (``skipped[table][row]``), and returned apart (for the estimate)."""
    from reweight.core.errors import ConfigError
    from reweight.experiment import sweep
    from reweight.experiment.config_file import load_raw

    jobs, rejected, skipped = [], [], {}
    for table in chosen:
        skipped[table.key] = {}
        common = [*table.base, f"train.steps={table.steps}", f"train.eval_every={table.steps}",
                  f"tracking.experiment=paper_tables_{table.key}", "tracking.plots=false", "checkpoint.every=null"]
        for row, settings in table.rows.items():
            overrides = [*common, *(as_set(path, value) for path, value in settings.items())]
            if quick:
                overrides += table.quick
            into = jobs
            try:
                sweep.expand(load_raw(table.config), [*overrides, "seeds=[0]"])
            except ConfigError as error:
                skipped[table.key][row] = str(error)
                say(f"skipped row {row!r} of {table.key}: the installed reweight rejects it: {error}")
                into = rejected
            phases = row_phases(table, settings)
            for column, column_sets in list(table.columns.items())[:1 if quick else None]:
                for seed in seeds:
                    sets = [*overrides[:len(common)], *column_sets, *overrides[len(common):], f"seeds=[{seed}]"]
                    into.append(Job(table.key, row, column, seed, sets, str(table.config), phases))
    jobs.sort(key=lambda job: -seconds(job, True)[1])  # the longest first: the last wave is short
    return jobs, rejected, skipped


def data_missing(table: str, root: Path) -> str | None:
    """Why a table cannot run here (its image files are not in the data root), or None."""
    if table == "svhn_mnist":
        absent = [name for name in ("train_32x32.mat", "test_32x32.mat") if not (root / "svhn" / name).is_file()]
        if absent:
            return (f"SVHN -> MNIST skipped: no {', '.join(absent)} in {root / 'svhn'} "
                    "(`reweight data download svhn`, or place SVHN format 2 there)")
    if table == "cifar10" and not all(any((root / "cifar10-jpeg").glob(f"{split}*.parquet")) for split in ("train", "test")):
        return (f"CIFAR-10 skipped: no train*.parquet and test*.parquet in {root / 'cifar10-jpeg'} "
                "(a CIFAR-10 export in the Hugging Face image layout)")
    return None


def estimate(jobs: list[Job], workers: int, gpu: bool) -> float:
    """Wall seconds: the workers start, then share the device table by table (the longest runs
    go first); a GPU's compute is one for all, on a CPU each worker has its own cores."""
    parallel, total = max(1, workers), WORKER_START_S if jobs else 0.0
    for table in dict.fromkeys(job.table for job in jobs):
        mine = [job for job in jobs if job.table == table]
        compute = sum(seconds(job, gpu)[0] for job in mine)
        alone = sum(seconds(job, gpu)[1] + RUN_OVERHEAD_S for job in mine)
        total += max(compute, alone / parallel) if gpu else alone / parallel
    return total


KINDS = {"plain": ["strategy.name=uniform"], "soseleto": [], "soseleto_direct": ["strategy.target_weight=1.0"],
         "joint": ["strategy.name=joint"], "target_only": ["strategy.name=target_only"],
         "fine_tune_source": ["strategy.name=fine_tune", f"strategy.source_steps={10 ** 9}"],
         "fine_tune_target": ["strategy.name=fine_tune", "strategy.source_steps=0"]}


def measure(table: Table, root: Path, quick: bool, say) -> None:
    """Prints ``STEP``'s numbers for this machine: each kind of step's time (median of
    interleaved rounds; process CPU time on a CPU, synchronised wall time on a GPU), its ratio
    to a plain step, its FLOPs and its top-level aten ops. Without SVHN, the digits model is
    measured on Fashion-MNIST -> MNIST with svhn_mnist.yaml's batch sizes."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from reweight.experiment import config_file
    from reweight.experiment.runner import build_engine

    config, extra = table.config, [*table.base, *(table.quick if quick else [])]
    if table.key == "svhn_mnist" and data_missing(table.key, root):
        config, extra = BENCHMARKS / "fashion_mnist_mnist.yaml", ["train.source_batch_size=128", *extra]
    say(f"{table.key}: {config.name} {' '.join(extra)}")
    engines = {kind: build_engine(*config_file.load(config, [*extra, *sets]), seed=0) for kind, sets in KINDS.items()}
    gpu = torch.cuda.is_available()
    clock = time.perf_counter if gpu else time.process_time
    rounds, block = (1, 1) if quick else (3, 4)

    def per_step(engine, steps: int) -> float:
        if gpu:
            torch.cuda.synchronize()
        start = clock()
        for _ in range(steps):
            engine.step()
        if gpu:
            torch.cuda.synchronize()
        return (clock() - start) / steps

    for engine in engines.values():  # warm-up
        per_step(engine, 2)
    times = {kind: [] for kind in engines}
    for _ in range(rounds):
        for kind, engine in engines.items():
            times[kind].append(per_step(engine, block))
    plain = statistics.median(times["plain"])
    say("| kind of step | s per step | / plain step | GFLOP | aten ops |")
    say("|---|---|---|---|---|")
    for kind, engine in engines.items():
        with FlopCounterMode(display=False) as flops:
            engine.step()
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            engine.step()
        ops = sum(1 for e in profiler.events() if e.name.startswith("aten::")
                  and not (e.cpu_parent and e.cpu_parent.name.startswith("aten::")))
        median = statistics.median(times[kind])
        say(f"| {kind} | {median:.4f} | {median / plain:.2f} | {flops.get_total_flops() / 1e9:.1f} | {ops} |")


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def start_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def train(config: str, overrides: list[str], label: str) -> tuple[dict[str, float], float]:
    """One run through the Python API; its own console output is dropped (progress is ours)."""
    from rich.console import Console

    import reweight

    print(f"started {label}", flush=True)
    start = time.perf_counter()
    result = reweight.run(config, overrides=overrides, console=Console(file=io.StringIO()))
    return dict(result.metrics), time.perf_counter() - start


def run_jobs(jobs: list[Job], workers: int, say) -> tuple[dict[int, Any], int | None]:
    """Every job, ``workers`` at a time (0: in this process): job index -> (metrics, seconds) or
    the exception, and the exit code if a stop was asked for (Ctrl-C, SIGTERM: the running runs
    save their checkpoints and end KILLED in MLflow, no new one starts). Prints a line per
    finished run with a projected total."""
    outcomes: dict[int, Any] = {}
    gpu = torch_cuda()
    work = [seconds(job, gpu)[1] + RUN_OVERHEAD_S for job in jobs]  # weights of the projection
    start = time.perf_counter()

    def finished(index: int, outcome: Any) -> None:
        outcomes[index] = outcome
        job = jobs[index]
        done = sum(work[i] for i in outcomes)
        elapsed = time.perf_counter() - start
        if isinstance(outcome, BaseException):
            status = "STOPPED" if type(outcome).__name__ == "Interrupted" else f"FAILED: {type(outcome).__name__}"
            what = f"{status}: {str(outcome).splitlines()[0] if str(outcome) else ''}"
        else:
            metrics, seconds = outcome
            what = ", ".join(f"{k} {metrics[k]:.4f}" for k in ("test_accuracy", "weight_noise_auc") if k in metrics)
            what += f" ({seconds:.0f} s)"
        say(f"[{len(outcomes)}/{len(jobs)} runs, {elapsed:.0f} s] {job.label}: {what}; "
            f"projected total {elapsed * sum(work) / done:.0f} s")

    from reweight.experiment.interrupts import Interrupted

    stopped: int | None = None  # the exit code once a stop was asked for
    if workers == 0:  # reweight.run itself stops the run in progress on Ctrl-C or SIGTERM
        for index, job in enumerate(jobs):
            try:
                finished(index, train(job.config, job.overrides, job.label))
            except Interrupted as error:
                finished(index, error)
                return outcomes, error.exit_code
            except Exception as error:  # noqa: BLE001 - one failed run is a cell of the table, not the end of it
                finished(index, error)
        return outcomes, None

    def terminated(number: int, frame: Any) -> None:
        raise Terminated

    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # no forked CUDA state
    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=start_worker, initargs=(threads,)) as pool:
            queue, pending = iter(enumerate(jobs)), {}

            def submit() -> None:  # one job per free worker, so that a stop leaves nothing queued
                for index, job in queue:
                    pending[pool.submit(train, job.config, job.overrides, job.label)] = index
                    return

            for _ in range(workers):
                submit()
            while pending:
                try:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                except (KeyboardInterrupt, Terminated) as stop:  # Ctrl-C reaches the workers too; SIGTERM is passed on
                    stopped = stopped or (143 if isinstance(stop, Terminated) else 130)
                    say(f"stopping: the running runs ({len(pending)}) stop after their current step")
                    if isinstance(stop, Terminated):
                        for child in multiprocessing.active_children():
                            os.kill(child.pid, signal.SIGTERM)
                    continue
                for future in done:
                    index = pending.pop(future)
                    error = future.exception()
                    finished(index, error if error is not None else future.result())
                    if isinstance(error, Interrupted):
                        stopped = stopped or error.exit_code
                    if stopped is None:
                        submit()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return outcomes, stopped


class Terminated(Exception):
    """SIGTERM in the main process, raised where it waits for the workers."""


def summary(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    mean, std = summary(values)
    return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
             if line.startswith("model name")]
    name = names[0] if names else platform.processor() or platform.machine()
    return f"CPU ({name}, {os.cpu_count()} cores), torch {torch.__version__}"


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=BENCHMARKS, capture_output=True, text=True, check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" (with uncommitted changes)" if git("status", "--porcelain") else "")


def write(out: Path, chosen: list[Table], jobs: list[Job], outcomes: dict[int, Any], skipped: dict[str, dict[str, str]],
          notes: list[str], header: list[str]) -> None:
    from reweight.experiment.interrupts import Interrupted

    lines, records = [*header, ""], []
    for line in notes:
        lines += [line, ""]
    for table in chosen:
        if table.key not in skipped:
            continue
        lines += [f"## {table.title}", "", (f"{table.steps} steps per run (`{table.config.name}`); mean ± sample std "
                  "over seeds of the final evaluation."), ""]
        columns = [c for c in table.columns if any((j.table, j.column) == (table.key, c) for j in jobs)]
        for metric in table.metrics:
            note = " (0.5 where all weights are equal: joint, target-only, fine-tuning)" if metric == "weight_noise_auc" else ""
            lines += [f"**{metric}**{note}", "", "| row | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
            for row in table.rows:
                if row in skipped[table.key]:
                    continue
                cells = []
                for column in columns:
                    mine = [(job, outcomes.get(i)) for i, job in enumerate(jobs)
                            if (job.table, job.row, job.column) == (table.key, row, column)]
                    values = [o[0][metric] for _, o in mine if isinstance(o, tuple) and metric in o[0]]
                    stopped = sum(isinstance(o, Interrupted) for _, o in mine)
                    failed = sum(isinstance(o, BaseException) for _, o in mine) - stopped
                    missing = sum(o is None for _, o in mine)
                    cells.append(cell(values) + "".join(f" ({n} {what})" for n, what in (
                        (failed, "failed"), (stopped, "stopped"), (missing, "not run")) if n))
                    if values:
                        mean, std = summary(values)
                        records.append({"table": table.key, "row": row, "column": column, "metric": metric,
                                        "mean": f"{mean:.6f}", "std": "" if std is None else f"{std:.6f}",
                                        "n": len(values), "failed": failed,
                                        "values": " ".join(f"{v:.6f}" for v in values)})
                lines.append(f"| {row} | " + " | ".join(cells) + " |")
            lines.append("")
        for row, error in skipped[table.key].items():
            lines += [f"Row {row!r} skipped: the installed reweight rejects it: {error}", ""]
    out.write_text("\n".join(lines))
    with out.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["table", "row", "column", "metric", "mean", "std", "n", "failed", "values"])
        writer.writeheader()
        writer.writerows(records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("paper_tables.md"), help="markdown table (and .csv beside)")
    parser.add_argument("--steps", type=int, default=None,
                        help="CIFAR-10 steps per run, default 1200 (4 with --quick); SVHN runs 2/3 of it")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--tables", default="cifar10,svhn_mnist", help="comma-separated: cifar10, svhn_mnist")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes training runs side by side (0: in this one); default 4 on a GPU, 1 on a CPU")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and an estimated time, run nothing")
    parser.add_argument("--measure", action="store_true",
                        help="measure each kind of step on this machine (the numbers of STEP), run nothing else")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: seed 0, the first column, data small enough for generated fixtures")
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(text, flush=True)

    import torch

    from reweight.components.datasets.catalog import default_data_root

    start = time.perf_counter()
    gpu = torch.cuda.is_available()
    workers = args.workers if args.workers is not None else (4 if gpu else 1)
    steps = args.steps or (4 if args.quick else 1200)
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    wanted = [t.strip() for t in args.tables.split(",") if t.strip()]
    known = tables(steps, max(1, steps * 2 // 3))
    unknown = sorted(set(wanted) - {t.key for t in known})
    if unknown:
        parser.error(f"--tables: unknown {', '.join(unknown)} (known: cifar10, svhn_mnist)")
    chosen, notes = [t for t in known if t.key in wanted], []
    root = default_data_root()
    if args.measure:
        from reweight.core.errors import ReweightError

        for table in chosen:
            try:
                measure(table, root, args.quick, say)
            except ReweightError as error:  # no data, a config this reweight rejects: one line
                say(f"{table.key}: not measured: {error}")
        return 0
    for table in list(chosen):
        if reason := data_missing(table.key, root):
            say(reason)
            notes.append(reason)
            chosen.remove(table)
    jobs, rejected, skipped = plan(chosen, seeds, args.quick, say)
    for table in chosen:
        n = sum(job.table == table.key for job in jobs)
        rows = [r for r in table.rows if r not in skipped[table.key]]
        columns = list(table.columns)[:1] if args.quick else list(table.columns)
        say(f"{table.key}: {len(rows)} rows x {len(columns)} columns ({', '.join(columns)}) x {len(seeds)} seeds = {n} runs of "
            f"{table.steps} steps ({', '.join(rows)})")
        if args.dry_run:
            for row in rows:
                sets = " ".join(f"--set {shlex.quote(as_set(path, value))}" for path, value in table.rows[row].items())
                say(f"  {row}: {sets or '(the config as shipped)'}")
    say(f"estimated {estimate(jobs, workers, gpu) / 60:.1f} min with {workers or 1} worker(s) on "
        f"{'the GPU' if gpu else 'this CPU'}" + ("" if gpu else f"; on one H100-class GPU with 4 workers: "
                                                            f"{estimate(jobs, 4, True) / 60:.1f} min")
        + f" (assumptions: the script's docstring); data root {root}")
    if rejected:
        say(f"the rejected rows would add about {(estimate(rejected, 4, True) - WORKER_START_S) / 60:.1f} min on "
            "one H100-class GPU with 4 workers")
    if args.dry_run:
        return 0
    from reweight.experiment.tracking import Tracker

    for table in chosen:  # the tracking store and experiments exist before the workers write to them
        Tracker(f"paper_tables_{table.key}")
    outcomes, stopped = run_jobs(jobs, workers, say)
    wall = time.perf_counter() - start
    header = ["# The paper's tables", "",
              f"- command: `{shlex.join(['python', 'benchmarks/paper_tables.py', *(argv if argv is not None else sys.argv[1:])])}`",
              f"- machine: {machine()}; {workers or 1} worker process(es)",
              f"- total wall time: {wall:.0f} s ({wall / 60:.1f} min)",
              f"- git commit: {git_commit()}",
              f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
              f"- MLflow experiments: {', '.join(f'paper_tables_{t.key}' for t in chosen)}"]
    if stopped is not None:
        notes.insert(0, f"Interrupted: {sum(isinstance(o, tuple) for o in outcomes.values())} of {len(jobs)} runs "
                        "finished; the table holds those.")
    write(args.out, chosen, jobs, outcomes, skipped, notes, header)
    failed = sum(not isinstance(o, tuple) for o in outcomes.values())
    say(f"wrote {args.out} and {args.out.with_suffix('.csv')} in {wall:.0f} s"
        + (f"; {failed} of {len(jobs)} runs failed or stopped" if failed else ""))
    return stopped if stopped is not None else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
