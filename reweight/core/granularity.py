"""Granularities: which weight slot scales each source example.

A strategy keeps one hyper-parameter per slot (or computes weights per example); the
granularity only maps examples to slots. Per-sample gives every example its own slot, as in
the paper; per-group and per-task map many examples to one slot. Because a slot's weight is
gathered into the examples that use it, autograd (or ``index_add_``) sums the members'
hypergradients into their slot, so the engine never needs to know which granularity is used.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import BaseModel

from reweight.core.data import Batch, Split
from reweight.core.plugins import NoOptions

if TYPE_CHECKING:
    from reweight.core.models import BilevelNet


class Granularity(ABC):
    """Maps source examples to weight slots.

    Built once per seed as ``cls(options, source, model=model)``, after the model, so that a
    granularity may group examples by the initial model's features.
    """

    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, options: BaseModel, source: Split, model: BilevelNet | None = None) -> None:
        self.options = options

    @property
    @abstractmethod
    def num_slots(self) -> int:
        """How many weights a stateful strategy keeps."""

    @abstractmethod
    def slots(self, batch: Batch) -> torch.Tensor:
        """The slot (a long tensor, one entry per example) that scales each example of ``batch``."""

    def slot_gradient(self, batch: Batch, example_grad: torch.Tensor) -> torch.Tensor:
        """Sum per-example hypergradients into their slots (zeros for slots not in the batch)."""
        total = torch.zeros(self.num_slots, dtype=example_grad.dtype, device=example_grad.device)
        return total.index_add_(0, self.slots(batch), example_grad)

    def batch_slot_sums(self, batch: Batch, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum ``values`` over the examples of each distinct slot in ``batch``; returns the sums
        and each example's position among them (compact: a batch touches few slots)."""
        distinct, inverse = torch.unique(self.slots(batch), return_inverse=True)
        sums = torch.zeros(len(distinct), dtype=values.dtype, device=values.device)
        return sums.index_add_(0, inverse, values), inverse

    def slot_names(self) -> list[str] | None:
        """A metric-safe name per slot (e.g. ``group_annotator_3``, ``task_svhn``) when slots are
        few enough to report one by one; ``None`` (the default) when they are not."""
        return None
