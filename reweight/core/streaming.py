"""Streamed data: a split read through a ``torch.utils.data.Dataset`` and ``DataLoader`` (worker
processes, pinned memory, prefetch to the device) instead of held whole on the device.

Only the inputs are streamed. The labels and meta columns (a few bytes per example) stay whole
on the device, as for an in-memory set, so per-sample weights, groups, metrics and the weights
file work unchanged; a streamed batch's labels and meta are gathered from them by index.

``StreamedSampler`` keeps the in-memory sampler's contract and its order: the same generator
and the same permutations pick the index batches (so a streamed run trains exactly as an
in-memory run on the same data), which a ``DataLoader`` fetches through ``batch_sampler``.
``peek`` buffers the batches fetched ahead; a checkpoint saves the position of the batches
consumed, and a restored sampler rebuilds its loader from there. Augmentation runs in the
workers, keyed by (seed, epoch, index) like on the device; a Dataset's own random draws (from
torch's or Python's RNG) are seeded per batch from the same key, so they too resume exactly
and do not depend on the number of workers.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset, get_worker_info

from reweight.core.augment import Augmentation, example_keys, mix
from reweight.core.data import Batch, BatchSampler, BilevelData, Split, class_labels, label_spaces
from reweight.core.errors import DataError

SAMPLE_INPUTS = 1024  # examples read to infer a model's input shape and scaling


@dataclass(frozen=True)
class StreamSettings:
    """How streamed splits are read: the DataLoader's worker processes, pinned host memory (on
    CUDA), batches each worker prepares ahead, and the batch size of evaluation passes."""

    workers: int = 2
    pin_memory: bool = True
    prefetch: int = 2
    eval_batch_size: int = 1024


def item_parts(item: Any, where: str) -> tuple[torch.Tensor, Any, dict]:
    """``(x, y)`` or ``(x, y, meta)`` as a Dataset returns it."""
    if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
        raise DataError(f"{where}: a Dataset item must be (x, y) or (x, y, meta), got {type(item).__name__}")
    x, y, *meta = item
    if meta and not isinstance(meta[0], dict):
        raise DataError(f"{where}: an item's meta must be a dict of per-example values, got {type(meta[0]).__name__}")
    return torch.as_tensor(x), y, meta[0] if meta else {}


def read_labels(dataset: Dataset, where: str, workers: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Labels and meta of every example: ``dataset.targets`` when the Dataset has it (as
    torchvision's do) and its items carry no meta, else one pass over the Dataset."""
    if len(dataset) == 0:
        raise DataError(f"{where}: the Dataset is empty")
    _, _, meta = item_parts(dataset[0], where)
    if hasattr(dataset, "targets") and not meta:
        return torch.as_tensor(dataset.targets), {}
    labels, columns = [], {}
    loader = DataLoader(dataset, batch_size=256, num_workers=workers, collate_fn=_labels_of,
                        generator=torch.Generator().manual_seed(0))  # torch's global RNG untouched
    for y, meta in loader:
        labels.extend(y)
        for key, values in meta.items():
            columns.setdefault(key, []).extend(values)
    return _column(labels), {key: _column(values) for key, values in columns.items()}


def _column(values: list) -> torch.Tensor:
    return torch.stack([torch.as_tensor(value) for value in values])


def _labels_of(items: list) -> tuple[list, dict[str, list]]:
    parts = [item_parts(item, "data") for item in items]
    meta = {key: [part[2][key] for part in parts] for key in parts[0][2]}
    return [part[1] for part in parts], meta


@dataclass
class StreamedSplit:
    """A split whose inputs are read through a map-style ``Dataset`` returning ``(x, y)`` or
    ``(x, y, meta)`` (x a tensor; y a class index or a tensor). ``y`` and ``meta`` are the whole
    set's labels and columns, read once (``read_labels``) unless given; ``device`` is where
    batches go."""

    dataset: Dataset
    y: torch.Tensor
    meta: dict[str, torch.Tensor] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    settings: StreamSettings = field(default_factory=StreamSettings)
    sampled: torch.Tensor | None = field(default=None, repr=False)  # sample_inputs(), once read

    streamed = True

    @classmethod
    def of(cls, dataset: Dataset, where: str = "data", settings: StreamSettings | None = None,
           categories: dict[str, list[str]] | None = None) -> StreamedSplit:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise DataError(f"{where}: expected a map-style torch Dataset (with __getitem__ and __len__), "
                            f"got {type(dataset).__name__}")
        settings = settings or StreamSettings()
        y, meta = read_labels(dataset, where, settings.workers)
        return cls(dataset, y, meta, categories or {}, settings=settings)

    def __post_init__(self) -> None:
        if len(self.y) != len(self.dataset):
            raise DataError(f"the Dataset has {len(self.dataset)} examples but {len(self.y)} labels")
        for name, column in self.meta.items():
            if len(column) != len(self.y):
                raise DataError(f"meta column {name!r} has {len(column)} rows, expected {len(self.y)}")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def x(self) -> torch.Tensor:
        raise DataError("a streamed split holds no whole inputs tensor (x): read batches through it, or "
                        "sample_inputs() for a few examples")

    def load(self, index: torch.Tensor) -> torch.Tensor:
        """The inputs of ``index``, read in this process, on the CPU."""
        return torch.stack([item_parts(self.dataset[i], "data")[0] for i in index.tolist()])

    def batch(self, x: torch.Tensor, index: torch.Tensor) -> Batch:
        """A batch of inputs ``x`` (on the CPU) and their labels and meta, on the device."""
        index = index.to(self.y.device, non_blocking=True)
        meta = {k: v[index] for k, v in self.meta.items()}
        return Batch(x.to(self.device, non_blocking=True), self.y[index], index, meta)

    def gather(self, index: torch.Tensor) -> Batch:
        return self.batch(self.load(index.cpu()), index)

    def all(self) -> Batch:
        """Every example's labels, index and meta; the inputs are not read (``x`` has no columns):
        for the strategy's weights when they need no losses, and for granularities' slots."""
        empty = torch.empty((len(self), 0), device=self.y.device)
        return Batch(empty, self.y, torch.arange(len(self), device=self.y.device), dict(self.meta))

    def subset(self, index: torch.Tensor) -> StreamedSplit:
        index = index.cpu()
        return replace(self, dataset=Subset(self.dataset, index.tolist()), y=self.y[index.to(self.y.device)],
                       meta={k: v[index.to(v.device)] for k, v in self.meta.items()}, sampled=None)

    def sample_inputs(self) -> torch.Tensor:
        """Up to ``SAMPLE_INPUTS`` examples, evenly spaced over the set (all of a small set, in
        order): enough to infer a model's shapes and input scaling without reading everything."""
        if self.sampled is None:
            count = min(len(self), SAMPLE_INPUTS)
            self.sampled = self.load(torch.linspace(0, len(self) - 1, count).round().long().unique())
        return self.sampled

    def to(self, device: torch.device | str) -> StreamedSplit:
        return replace(self, y=self.y.to(device), meta={k: v.to(device) for k, v in self.meta.items()},
                       device=torch.device(device))

    def batches(self, size: int | None = None) -> Iterator[Batch]:
        """Every example once, in order, in batches (not augmented), through the loader."""
        size = size or self.settings.eval_batch_size
        order = [torch.arange(start, min(start + size, len(self))) for start in range(0, len(self), size)]
        keyed = KeyedDataset(self.dataset, seed=0, augment=None)
        for x, index in self.loader(keyed, [[(0, i) for i in part.tolist()] for part in order]):
            yield self.batch(x, index)

    def loader(self, keyed: KeyedDataset, batch_sampler: Any) -> DataLoader:
        settings = self.settings
        workers = settings.workers
        # a generator of its own: a loader's iterator otherwise draws its workers' base seed from
        # torch's global RNG, which the run's checkpoints restore (the augmentation needs no seed)
        return DataLoader(keyed, batch_sampler=batch_sampler, num_workers=workers, collate_fn=_as_is,
                          pin_memory=settings.pin_memory and self.device.type == "cuda",
                          prefetch_factor=settings.prefetch if workers else None,
                          generator=torch.Generator().manual_seed(0))


def _as_is(batch: Any) -> Any:
    return batch


class KeyedDataset(Dataset):
    """The user's Dataset, read a batch at a time from keys ``(epoch, index)``: the inputs
    stacked and augmented (keyed by seed, epoch and index), with their indices. A Dataset's own
    draws from torch's and Python's RNG are seeded from the batch's first key."""

    def __init__(self, dataset: Dataset, seed: int, augment: Augmentation | None) -> None:
        self.dataset, self.seed, self.augment = dataset, seed, augment

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, keys: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch = keys[0][0]
        index = torch.tensor([i for _, i in keys], dtype=torch.long)
        seeds = example_keys(self.seed, epoch, index)
        in_worker = get_worker_info() is not None  # the main process's RNG must stay as the run left it
        python_rng = random.getstate() if not in_worker else None
        with torch.random.fork_rng(devices=[]) if not in_worker else nullcontext():
            batch_seed = int(mix(seeds[0]))
            # the CPU generator only: torch.manual_seed also queues a seed for every accelerator,
            # recording a stack trace each call, which costs about as much as reading a small batch
            torch.default_generator.manual_seed(batch_seed)
            random.seed(batch_seed)
            x = torch.stack([item_parts(self.dataset[i], "data")[0] for i in index.tolist()])
        if python_rng is not None:
            random.setstate(python_rng)
        if self.augment is not None:
            x = self.augment(x, seeds)
        return x, index

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([key])


class _Feeder:
    """The index batches for the DataLoader: an in-memory sampler's draws, as keys."""

    def __init__(self, sampler: BatchSampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        while True:
            epoch, index = self.sampler.draw()
            yield [(epoch, i) for i in index.tolist()]


class StreamedSampler(BatchSampler):
    """``BatchSampler``'s order and contract over a ``StreamedSplit``: batches fetched by a
    DataLoader, prefetched to the device, buffered for ``peek``.

    This object's own generator, order and cursor are those of the batches *consumed*; a
    second sampler with the same state (the feeder) runs ahead for the loader. ``carries_
    distributed_sampler`` says whether the loader shards examples across processes (never, yet).
    """

    carries_distributed_sampler = False

    def __init__(self, split: StreamedSplit, batch_size: int | None, seed: int,
                 augment: Augmentation | None = None) -> None:
        super().__init__(split, batch_size, seed, augment)
        self._iterator: Iterator | None = None
        self._ahead: deque[Batch] = deque()

    def _fetch(self) -> Batch:
        if self._iterator is None:
            feeder = BatchSampler(self.split, None if self.full else self.batch_size, self.seed)
            feeder.load_state_dict(self.state_dict())
            keyed = KeyedDataset(self.split.dataset, self.seed, self.augment)
            self._iterator = iter(self.split.loader(keyed, _Feeder(feeder)))
        x, index = next(self._iterator)
        return self.split.batch(x, index)

    def peek(self, n: int) -> list[Batch]:
        while len(self._ahead) < n:
            self._ahead.append(self._fetch())
        return list(self._ahead)[:n]

    def next(self) -> Batch:
        batch = self._ahead.popleft() if self._ahead else self._fetch()
        self.draw()  # the consumed position follows
        if not self._ahead and self.split.device.type == "cuda":
            self._ahead.append(self._fetch())  # the next batch's copy overlaps this step
        return batch

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.close()

    def close(self) -> None:
        """Stop the loader's workers; the next batch starts them again from this position."""
        self._iterator = None
        self._ahead.clear()


def make_sampler(split: Split | StreamedSplit, batch_size: int | None, seed: int,
                 augment: Augmentation | None, where: str) -> BatchSampler:
    """The sampler of a split: streamed through a DataLoader, or gathered on the device."""
    if augment is not None:
        problem = augment.check_inputs(split.gather(torch.zeros(1, dtype=torch.long)).x, where)
        if problem:
            raise DataError(problem)
    kind = StreamedSampler if split.streamed else BatchSampler
    return kind(split, batch_size, seed, augment)


class TensorItems(Dataset):
    """An in-memory split as a Dataset (inputs on the CPU), to stream a set that fits in host
    memory but not on the device."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x.cpu(), y.cpu()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def streamed(split: Split | StreamedSplit, settings: StreamSettings) -> StreamedSplit:
    """``split`` read through a DataLoader with ``settings`` (its labels and meta as they are)."""
    if split.streamed:
        return replace(split, settings=settings)
    return StreamedSplit(TensorItems(split.x, split.y), split.y, dict(split.meta), split.categories,
                         device=split.y.device, settings=settings)


def stream_data(data: BilevelData, splits: list[str], settings: StreamSettings) -> BilevelData:
    """The data with the named splits (source, target, test; validation goes with target)
    streamed, and every split that is already streamed read with ``settings``."""
    chosen = set(splits) | ({"validation"} if "target" in splits else set())
    changes = {}
    for name in ("source", "target", "test", "validation"):
        split = getattr(data, name)
        if split is not None and (name in chosen or split.streamed):
            changes[name] = streamed(split, settings)
    return replace(data, **changes)


def from_datasets(source: Dataset | tuple, target: Dataset | tuple, test: Dataset | tuple | None = None,
                  classes: int | None = None, target_classes: int | None = None) -> BilevelData:
    """Data from Datasets (streamed) and ``(x, y[, meta])`` tuples (in memory), in any mix;
    ``test`` defaults to the target set. Label spaces as in ``BilevelData.from_tensors``."""
    parts: dict[str, Split | StreamedSplit] = {}
    for name, part in (("source", source), ("target", target), ("test", test if test is not None else target)):
        if isinstance(part, (tuple, list)) and len(part) in (2, 3):
            x, y, *meta = part
            try:
                parts[name] = Split(torch.as_tensor(x), torch.as_tensor(y), dict(meta[0]) if meta else {})
            except ValueError as error:
                raise DataError(f"{name}: {error}") from None
        else:
            parts[name] = StreamedSplit.of(part, name)
        if not class_labels(parts[name].y):
            raise DataError(f"{name}: labels must be int64 class indices, got {parts[name].y.dtype} of shape "
                            f"{tuple(parts[name].y.shape)}")

    source_classes, target_classes = label_spaces(parts, classes, target_classes)
    return BilevelData(parts["source"], parts["target"], parts["test"], source_classes, target_classes)
