"""Is a streamed reweight step as fast as a hand-written PyTorch loop over the same DataLoader?

The same Dataset (CIFAR-sized uint8 images held by a map-style Dataset on the CPU), the same
DataLoader settings (workers, prefetch, pinned memory on CUDA), the same model (``cifar10_quick``)
and source batch. reweight runs its plain ``uniform`` step on the streamed source (which also
trains the target head on a target batch, as every reweight step does); the hand-written loop
runs zero_grad, forward, cross-entropy, backward and an SGD step. Both in one process, in
alternating timed blocks, after a warm-up:

    python benchmarks/stream_throughput.py                       # 2 workers, target batch 16
    python benchmarks/stream_throughput.py --workers 0 --target-batch 100

Prints the median step rate of each and their ratio (reweight / hand-written).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from reweight.components.models.convnets import CifarQuickOptions, build_cifar10_quick
from reweight.core.engine import Engine, TrainSettings
from reweight.core.plugins import registry
from reweight.core.streaming import StreamSettings, from_datasets, stream_data


class Images(Dataset):
    """Random uint8 images and labels, read one example at a time as from a decoded file."""

    def __init__(self, n: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
        self.targets = torch.randint(0, 10, (n,), generator=generator)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.x[i], self.targets[i]


def reweight_engine(dataset: Dataset, target: Images, args, device: torch.device) -> Engine:
    settings = StreamSettings(workers=args.workers, prefetch=args.prefetch)
    data = stream_data(from_datasets(dataset, (target.x, target.targets)), [], settings).to(device)
    torch.manual_seed(0)
    model = build_cifar10_quick(CifarQuickOptions(), data).to(device)
    found = registry()
    granularity = found.get("granularity", "per_sample").factory(found.get("granularity", "per_sample").options(),
                                                                 data.source, model=model)
    strategy = found.get("strategy", "uniform").factory(found.get("strategy", "uniform").options(), granularity,
                                                        device)
    method = found.get("hypergradient", "one_step")
    train = TrainSettings(source_batch_size=args.batch, target_batch_size=args.target_batch, lr=0.01,
                          target_lr=0.01)
    return Engine(model, strategy, method.factory(method.options()), data, train, seed=0)


def hand_written(dataset: Dataset, engine: Engine, args, device: torch.device):
    """The classic loop over a DataLoader with the same settings, on a copy of the same model."""
    model = copy.deepcopy(torch.nn.Sequential(engine.model.representation, engine.model.source_head))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=args.workers,
                        prefetch_factor=args.prefetch if args.workers else None, persistent_workers=args.workers > 0,
                        pin_memory=device.type == "cuda")

    def batches():
        while True:
            yield from loader

    stream = batches()

    def step() -> None:
        x, y = next(stream)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=4096, help="source examples")
    parser.add_argument("--batch", type=int, default=128, help="source batch size")
    parser.add_argument("--target-batch", type=int, default=16, help="target batch size of reweight's step")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9, help="alternating timed blocks of each")
    parser.add_argument("--block", type=int, default=20, help="steps per block")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    dataset, target = Images(args.examples, 0), Images(100, 1)
    engine = reweight_engine(dataset, target, args, device)
    loops = {"reweight": engine.step, "hand-written": hand_written(dataset, engine, args, device)}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for step in loops.values():
        for _ in range(args.block):
            step()  # warm-up: workers started, caches filled
    rates: dict[str, list[float]] = {name: [] for name in loops}
    ratios = []
    for _ in range(args.rounds):  # alternate, so that the machine's load falls on both alike
        for name, step in loops.items():
            sync()
            start = time.perf_counter()
            for _ in range(args.block):
                step()
            sync()
            rates[name].append(args.block / (time.perf_counter() - start))
        ratios.append(rates["reweight"][-1] / rates["hand-written"][-1])
    for name, values in rates.items():
        print(f"{name:>12}: {statistics.median(values):.1f} steps/s (median of {args.rounds} blocks of {args.block})")
    print(f"ratio reweight / hand-written: {statistics.median(ratios):.3f} (median of the {args.rounds} paired blocks; "
          f"workers={args.workers}, batch {args.batch}, target batch {args.target_batch}, {device})")


if __name__ == "__main__":
    main()
