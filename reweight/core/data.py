"""Data held as whole tensors on the training device; batches are index gathers. (A set too
large for that is streamed instead: ``reweight.core.streaming``.)

A bilevel problem has three parts: the weighted *source* set (large, noisy or off-domain),
the small clean *target* set that trains the weights, and a held-out *test* set of the
target task. Source examples may carry metadata (which labels were corrupted, a group id,
a task id) that granularities and metrics use.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from reweight.core.augment import Augmentation, example_keys
from reweight.core.errors import DataError


def class_labels(y: torch.Tensor) -> bool:
    """Whether labels are class indices (1-d int64), which accuracy and selection need; a loss of
    one's own may take other targets (multi-label, regression)."""
    return y.dim() == 1 and y.dtype == torch.long


@dataclass
class Batch:
    """A slice of a data set: inputs, labels, and the examples' indices in that set. A target
    batch may carry ``unlabeled`` inputs of the target task beside it (``reweight.core.unlabeled``)."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    meta: dict[str, torch.Tensor] = field(default_factory=dict)
    unlabeled: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Split:
    """A whole data set as tensors. ``meta`` holds per-example columns (e.g. ``corrupted``);
    ``categories`` optionally names the values of integer columns (``categories["task"][k]``
    is the name of task ``k``), so that per-group weights can be reported by name."""

    x: torch.Tensor
    y: torch.Tensor
    meta: dict[str, torch.Tensor] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"{len(self.x)} inputs but {len(self.y)} labels")
        for name, column in self.meta.items():
            if len(column) != len(self.y):
                raise ValueError(f"meta column {name!r} has {len(column)} rows, expected {len(self.y)}")

    def __len__(self) -> int:
        return len(self.y)

    def gather(self, index: torch.Tensor) -> Batch:
        index = index.to(self.y.device)
        return Batch(self.x[index], self.y[index], index, {k: v[index] for k, v in self.meta.items()})

    def all(self) -> Batch:
        """The whole set as one batch; its tensors are the set's own, not a copy (read them only)."""
        return Batch(self.x, self.y, torch.arange(len(self), device=self.y.device), dict(self.meta))

    streamed = False  # whether batches are read through a DataLoader (``StreamedSplit``)

    def subset(self, index: torch.Tensor) -> Split:
        batch = self.gather(index)
        return Split(batch.x, batch.y, batch.meta, self.categories)

    def sample_inputs(self) -> torch.Tensor:
        """Inputs to infer a model's shapes and input scaling from: all of them, here."""
        return self.x

    def to(self, device: torch.device | str) -> Split:
        return replace(
            self,
            x=self.x.to(device),
            y=self.y.to(device),
            meta={k: v.to(device) for k, v in self.meta.items()},
        )


@dataclass(frozen=True)
class SourceTask:
    """One source task's label space: labels ``offset .. offset + classes - 1`` of the source set."""

    name: str
    classes: int
    offset: int


@dataclass
class BilevelData:
    """Source, target and test splits plus the label-space sizes the model needs.

    A source made of several tasks lists them in ``source_tasks``; its examples then carry a
    ``task`` meta column, and each task's labels occupy their own slice of ``source_classes``.
    """

    source: Split
    target: Split
    test: Split
    source_classes: int
    target_classes: int
    source_tasks: list[SourceTask] = field(default_factory=list)
    validation: Split | None = None  # a part of the target task held out for model selection
    unlabeled: Split | None = None  # inputs of the target task without labels (its labels are -1)

    def source_label_mask(self) -> torch.Tensor | None:
        """(tasks × source_classes) booleans: which labels belong to each task; None for one task."""
        if not self.source_tasks:
            return None
        mask = torch.zeros(len(self.source_tasks), self.source_classes, dtype=torch.bool)
        for k, task in enumerate(self.source_tasks):
            mask[k, task.offset : task.offset + task.classes] = True
        return mask.to(self.source.y.device)

    def to(self, device: torch.device | str) -> BilevelData:
        validation = self.validation.to(device) if self.validation is not None else None
        unlabeled = self.unlabeled.to(device) if self.unlabeled is not None else None
        return replace(self, source=self.source.to(device), target=self.target.to(device), test=self.test.to(device),
                       validation=validation, unlabeled=unlabeled)

    def hold_out(self, seed: int, fraction: float | None = None, per_class: int | None = None) -> BilevelData:
        """The same data with a validation part drawn from the target set, class by class (a
        ``fraction`` of each class, at least one, or ``per_class`` examples), by ``seed``; the
        target set keeps the rest, so the validation examples never reach the target loss."""
        labels = self.target.y.cpu()
        generator = torch.Generator().manual_seed(seed)
        held: list[torch.Tensor] = []
        for label in labels.unique().tolist():
            members = (labels == label).nonzero().flatten()
            members = members[torch.randperm(len(members), generator=generator)]
            count = per_class if per_class is not None else max(1, round(fraction * len(members)))
            if count >= len(members):
                raise DataError(f"selection: class {label} has {len(members)} target examples; holding out {count} "
                                "would leave none to train the weights (lower selection.fraction or per_class)")
            held.append(members[:count])
        chosen = torch.zeros(len(labels), dtype=torch.bool)
        chosen[torch.cat(held)] = True
        keep = (~chosen).nonzero().flatten().to(self.target.y.device)
        out = chosen.nonzero().flatten().to(self.target.y.device)
        return replace(self, target=self.target.subset(keep), validation=self.target.subset(out))

    @classmethod
    def from_tensors(cls, source: tuple, target: tuple, test: tuple | None = None,
                     classes: int | None = None, target_classes: int | None = None) -> BilevelData:
        """Data from ``(x, y)`` pairs (``(x, y, meta)`` for per-example columns such as
        ``corrupted``); ``test`` defaults to the target set. One label space of ``classes``
        (default: the largest label + 1), or, with ``target_classes``, a target task of its own
        (the source's classes then default to its largest label + 1). Labels must be int64
        class indices."""
        parts = {}
        for name, part in (("source", source), ("target", target), ("test", test if test is not None else target)):
            if not isinstance(part, (tuple, list)) or len(part) not in (2, 3):
                raise DataError(f"{name}: expected (x, y) or (x, y, meta), got {type(part).__name__}")
            x, y, *meta = part
            if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                raise DataError(f"{name}: x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
            if not class_labels(y):
                raise DataError(f"{name}: labels must be a 1-d int64 tensor of class indices, got {y.dtype} of "
                                f"shape {tuple(y.shape)} (use y.long())")
            try:
                parts[name] = Split(x, y, dict(meta[0]) if meta else {})
            except ValueError as error:
                raise DataError(f"{name}: {error}") from None
        devices = {str(split.x.device) for split in parts.values()} | {str(split.y.device) for split in parts.values()}
        if len(devices) > 1:
            raise DataError(f"the tensors are on different devices ({', '.join(sorted(devices))}); move them to one")
        source_classes, target_classes = label_spaces(parts, classes, target_classes)
        return cls(parts["source"], parts["target"], parts["test"], source_classes, target_classes)


def label_spaces(parts: dict[str, Any], classes: int | None, target_classes: int | None) -> tuple[int, int]:
    """The source and target label-space sizes of splits given as class indices (``parts``:
    source, target, test), checked against every label: one space of ``classes`` (default: the
    largest label + 1), or with ``target_classes`` a target task of its own."""
    def largest(*names: str) -> int:
        return max((int(parts[name].y.max()) for name in names if len(parts[name])), default=-1)

    if target_classes is None:
        source_classes = target_classes = classes or largest("source", "target", "test") + 1
    else:
        source_classes = classes or largest("source") + 1
    for name, space in (("source", source_classes), ("target", target_classes), ("test", target_classes)):
        labels = parts[name].y
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= space):
            raise DataError(f"{name}: labels must lie in 0..{space - 1}, got {int(labels.min())}..{int(labels.max())}")
    return source_classes, target_classes


class BatchSampler:
    """Endless shuffled batches (without replacement within an epoch), reproducible by seed.

    A batch size of ``None`` or at least the set's size yields the whole set every time,
    which is how SOSELETO uses its small target set; each such draw is an epoch of its own.
    ``augment`` transforms every batch drawn, keyed by (seed, epoch, index)
    (``reweight.core.augment``), so that ``peek`` and ``next`` see the same augmented batch.
    """

    def __init__(self, split: Split, batch_size: int | None, seed: int, augment: Augmentation | None = None) -> None:
        self.split = split
        self.full = batch_size is None or batch_size >= len(split)
        self.batch_size = len(split) if self.full else batch_size
        self.seed = seed
        self.augment = augment
        self.generator = torch.Generator().manual_seed(seed)
        self._order = torch.empty(0, dtype=torch.long)
        self._cursor = 0
        self.epoch = 0  # epochs begun; the augmentation's key
        # a copy: the batch goes to the model, which may change its input in place
        self._whole = None
        if self.full and augment is None and not split.streamed:
            self._whole = split.gather(torch.arange(len(split), device=split.y.device))

    def peek(self, n: int) -> list[Batch]:
        """The next ``n`` batches, without consuming them (for multi-step look-aheads)."""
        if self._whole is not None:
            return [self._whole] * n
        saved = self.state_dict()
        batches = [self.next() for _ in range(n)]
        self.load_state_dict(saved)
        return batches

    def state_dict(self) -> dict[str, Any]:
        """Where the sampler stands: the RNG, this epoch's order, the cursor in it, the epoch."""
        return {"generator": self.generator.get_state(), "order": self._order.clone(), "cursor": self._cursor,
                "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._order, self._cursor = state["order"].clone(), state["cursor"]
        self.epoch = state.get("epoch", 0)  # none in checkpoints from before augmentation

    def draw(self) -> tuple[int, torch.Tensor]:
        """Advance by one batch: its epoch and the indices of its examples (on the CPU)."""
        if self.full:
            self.epoch += 1
            return self.epoch, torch.arange(len(self.split))
        if self._cursor + self.batch_size > len(self._order):
            self._order = torch.randperm(len(self.split), generator=self.generator)
            self._cursor = 0
            self.epoch += 1
        index = self._order[self._cursor : self._cursor + self.batch_size]
        self._cursor += self.batch_size
        return self.epoch, index

    def next(self) -> Batch:
        if self._whole is not None:
            return self._whole
        epoch, index = self.draw()
        batch = self.split.gather(index)
        if self.augment is not None:
            batch.x = self.augment(batch.x, example_keys(self.seed, epoch, batch.index))
        return batch
