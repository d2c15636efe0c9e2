"""Time one reweighted step against one plain (uniform-weight) step on the same batch.

Both engines are built from the same config and seed, so they share the model's initial
parameters, and both are fed one fixed source batch and the same target batch. Steps are
timed in interleaved rounds in one process; the ratio per round is reported as a median with
its quartiles. On a CPU the clock is the process's CPU time with one intra-op thread, which
other processes on a shared machine disturb far less than wall time; on a GPU it is wall
time after synchronising. Absolute times are printed only as context.

    python benchmarks/step_time.py benchmarks/synthetic_2d.yaml
    python benchmarks/step_time.py benchmarks/synthetic_2d.yaml --set model.hidden=[256,256] --set train.source_batch_size=256
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from reweight.config import Component, load
from reweight.granularity import NoOptions
from reweight.runner import build_engine


class FixedSampler:
    def __init__(self, batch):
        self.batch = batch

    def next(self):
        return self.batch


def engine_with_fixed_batches(config, options, strategy: str, seed: int = 0):
    if strategy != config.strategy.name:
        config = config.model_copy(update={"strategy": Component(name=strategy)})
        options = {**options, "strategy": NoOptions()}
    engine = build_engine(config, options, seed)
    engine.source_sampler = FixedSampler(engine.source_sampler.next())
    engine.target_sampler = FixedSampler(engine.target_sampler.next())
    return engine


def seconds_per_step(engine, steps: int) -> float:
    if engine.data.source.x.is_cuda:
        torch.cuda.synchronize()
    clock = time.perf_counter if engine.data.source.x.is_cuda else time.process_time
    start = clock()
    for _ in range(steps):
        engine.step()
    if engine.data.source.x.is_cuda:
        torch.cuda.synchronize()
    return (clock() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=50, help="steps per timed round")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the ratio is reported with quartiles)")

    torch.set_num_threads(1)
    config, options = load(args.config, args.overrides)
    reweighted = engine_with_fixed_batches(config, options, config.strategy.name)
    plain = engine_with_fixed_batches(config, options, "uniform")
    for engine in (reweighted, plain):  # warm-up
        seconds_per_step(engine, args.steps)
    ratios, plain_times = [], []
    for _ in range(args.rounds):
        t_reweighted = seconds_per_step(reweighted, args.steps)
        t_plain = seconds_per_step(plain, args.steps)
        ratios.append(t_reweighted / t_plain)
        plain_times.append(t_plain)
    q1, median, q3 = statistics.quantiles(ratios, n=4)
    batch = config.train.source_batch_size
    print(f"device={reweighted.data.source.x.device} source_batch={batch} model={config.model.name} "
          f"{options['model'].model_dump()} hypergrad={config.hypergrad.name} {options['hypergrad'].model_dump()}")
    print(f"{config.strategy.name} step / uniform step: median {median:.2f}x (quartiles {q1:.2f}-{q3:.2f}, "
          f"{args.rounds} rounds of {args.steps} steps; plain step ~{statistics.median(plain_times) * 1e3:.2f} ms)")


if __name__ == "__main__":
    main()
