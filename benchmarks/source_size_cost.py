"""Does a step cost the same at any source size? The same model, batch and strategy on a
synthetic source of 10,000 and of 1,000,000 examples, timed in one process, alternating.

    python benchmarks/source_size_cost.py                 # SOSELETO, one-step
    python benchmarks/source_size_cost.py --strategy meta_weight_net

Prints the median step time and the evaluation time of each, and their ratios (1M / 10k).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from reweight.experiment.config import validate
from reweight.experiment.runner import build_engine


def engine(n_source: int, strategy: str):
    config, options = validate({
        "name": "cost", "data": {"name": "synthetic_2d", "n_source": n_source, "n_target": 50, "n_test": 2000},
        "model": {"name": "mlp", "hidden": [32, 32]}, "strategy": strategy,
        "train": {"source_batch_size": 32, "target_batch_size": None},
    })
    return build_engine(config, options, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="soseleto")
    parser.add_argument("--rounds", type=int, default=20, help="alternating blocks of steps per size")
    parser.add_argument("--block", type=int, default=50, help="steps per block")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = (10_000, 1_000_000)
    engines = {n: engine(n, args.strategy) for n in sizes}
    for e in engines.values():
        for _ in range(20):
            e.step()  # warm-up
    per_step = {n: [] for n in sizes}
    for _ in range(args.rounds):  # alternate, so that the machine's load falls on both alike
        for n, e in engines.items():
            start = time.perf_counter()
            for _ in range(args.block):
                e.step()
            per_step[n].append((time.perf_counter() - start) / args.block)
    evaluation = {n: [] for n in sizes}
    for _ in range(3):
        for n, e in engines.items():
            e._weights = None
            start = time.perf_counter()
            e.evaluate()
            evaluation[n].append(time.perf_counter() - start)
    step = {n: statistics.median(v) for n, v in per_step.items()}
    evals = {n: statistics.median(v) for n, v in evaluation.items()}
    for n in sizes:
        print(f"{args.strategy} n_source={n:>9,}: step {step[n] * 1e3:.3f} ms, evaluation {evals[n] * 1e3:.1f} ms")
    print(f"ratio 1M / 10k: step {step[sizes[1]] / step[sizes[0]]:.3f}, evaluation {evals[sizes[1]] / evals[sizes[0]]:.2f}")


if __name__ == "__main__":
    main()
