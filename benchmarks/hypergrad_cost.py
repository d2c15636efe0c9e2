"""The cost of reweighting: step time and memory of each (strategy × hypergradient method)
as ratios to a plain training step, on the same model and the same batches, in one process.

Every engine is built from the same config and seed, so all share the model's initial
parameters, and all are fed one fixed source batch and the same target batch. Steps are timed
in interleaved rounds, and each ratio is the median (with quartiles) of the per-round ratios, so
slow phases of a shared machine hit numerator and denominator alike. On a CPU the clock is the
process's CPU time with one intra-op thread; on a GPU, wall time after synchronising. Absolute
times are printed on a GPU only.

Memory: on a GPU, the peak allocated during one step above what was allocated before it; on a
CPU, the bytes of the tensors autograd saves for backward during one step (distinct storages),
which is what an unrolled look-ahead accumulates.

    python benchmarks/hypergrad_cost.py benchmarks/synthetic_2d.yaml
    python benchmarks/hypergrad_cost.py benchmarks/synthetic_2d.yaml --set "model.hidden=[512,512]" \
        --set train.source_batch_size=256 --set data.n_source=5000 \
        --set train.target_batch_size=256 --set data.n_target=1000
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from reweight.experiment.config_file import load
from reweight.experiment.runner import build_engine

STRATEGIES = ["soseleto", "learning_to_reweight", "meta_weight_net"]
METHODS = {
    "one_step (current)": ["hypergrad.name=one_step", "hypergrad.at=current"],
    "one_step (lookahead)": ["hypergrad.name=one_step", "hypergrad.at=lookahead"],
    "unrolled K=1 (torch_func)": ["hypergrad.name=unrolled", "hypergrad.steps=1", "hypergrad.backend=torch_func"],
    "unrolled K=1 (higher)": ["hypergrad.name=unrolled", "hypergrad.steps=1", "hypergrad.backend=higher"],
}


class FixedSampler:
    """Always the same batch: every configuration sees identical data."""

    def __init__(self, batch):
        self.batch = batch

    def next(self):
        return self.batch

    def peek(self, n):
        return [self.batch] * n


def engine_for(path: str, overrides: list[str]):
    config, options = load(path, overrides)
    engine = build_engine(config, options, config.seeds[0])
    engine.source_sampler = FixedSampler(engine.source_sampler.next())
    engine.target_sampler = FixedSampler(engine.target_sampler.next())
    return engine


def on_gpu(engine) -> bool:
    return engine.data.source.x.is_cuda


def seconds_per_step(engine, steps: int) -> float:
    if on_gpu(engine):
        torch.cuda.synchronize()
    clock = time.perf_counter if on_gpu(engine) else time.process_time
    start = clock()
    for _ in range(steps):
        engine.step()
    if on_gpu(engine):
        torch.cuda.synchronize()
    return (clock() - start) / steps


def step_memory(engine) -> int:
    """Peak bytes one step needs beyond what is already allocated (GPU), or bytes autograd
    saves for backward during one step (CPU)."""
    if on_gpu(engine):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        engine.step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        engine.step()
    return sum(storages.values())


def time_table(path, overrides, strategies, methods, rounds, steps):
    plain = engine_for(path, [*overrides, "strategy.name=uniform"])
    engines = {
        (strategy, method): engine_for(path, [*overrides, f"strategy.name={strategy}", *METHODS[method]])
        for strategy in strategies for method in methods
    }
    for engine in (plain, *engines.values()):  # warm-up
        seconds_per_step(engine, steps)
    ratios = {key: [] for key in engines}
    plain_times, times = [], {key: [] for key in engines}
    for _ in range(rounds):
        for key, engine in engines.items():
            t_plain = seconds_per_step(plain, steps)
            t = seconds_per_step(engine, steps)
            ratios[key].append(t / t_plain)
            plain_times.append(t_plain)
            times[key].append(t)
    gpu = on_gpu(plain)
    header = "| strategy | hypergradient | step / plain step (median, quartiles) |" + (" ms per step |" if gpu else "")
    print(header)
    print("|---|---|---|" + ("---|" if gpu else ""))
    if gpu:
        print(f"| plain (uniform) | none | 1 | {statistics.median(plain_times) * 1e3:.2f} |")
    for (strategy, method), values in ratios.items():
        q1, median, q3 = statistics.quantiles(values, n=4)
        row = f"| {strategy} | {method} | {median:.2f}× ({q1:.2f}–{q3:.2f}) |"
        if gpu:
            row += f" {statistics.median(times[strategy, method]) * 1e3:.2f} |"
        print(row)


def memory_table(path, overrides, strategy, unroll_steps):
    plain = engine_for(path, [*overrides, "strategy.name=uniform"])
    base = step_memory(plain)
    unit = "peak bytes above the resident model" if on_gpu(plain) else "bytes saved for backward"
    print(f"\n| unroll K | backend | {unit} | / plain step |")
    print("|---|---|---|---|")
    print(f"| plain step | – | {base:,} | 1 |")
    for backend in ("torch_func", "higher"):
        for k in unroll_steps:
            engine = engine_for(path, [*overrides, f"strategy.name={strategy}", "hypergrad.name=unrolled",
                                       f"hypergrad.steps={k}", f"hypergrad.backend={backend}"])
            step_memory(engine)  # warm-up: optimizer state exists from here on
            used = step_memory(engine)
            print(f"| {k} | {backend} | {used:,} | {used / base:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--methods", default=",".join(METHODS), help=f"any of: {', '.join(METHODS)}")
    parser.add_argument("--unroll-steps", default="1,2,5,10")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    args = parser.parse_args()
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (ratios are reported with quartiles)")

    torch.set_num_threads(1)
    probe = engine_for(args.config, args.overrides)
    config, options = load(args.config, args.overrides)
    device = torch.cuda.get_device_name() if on_gpu(probe) else "cpu (1 thread)"
    print(f"device: {device}; model: {config.model.name} {options['model'].model_dump()}; "
          f"source batch {config.train.source_batch_size}; target batch {config.train.target_batch_size or 'all'}")
    print()
    time_table(args.config, args.overrides, args.strategies.split(","), methods, args.rounds, args.steps)
    unroll = [int(k) for k in args.unroll_steps.split(",") if k]
    if unroll:
        memory_table(args.config, args.overrides, args.strategies.split(",")[0], unroll)


if __name__ == "__main__":
    main()
