"""The paper's granularity: every source example has its own weight slot."""

from __future__ import annotations

import torch
from pydantic import BaseModel

from reweight.core.data import Batch, Split
from reweight.core.granularity import Granularity
from reweight.core.models import BilevelNet


class PerSample(Granularity):
    """One weight per source example (the paper's setting)."""

    def __init__(self, options: BaseModel, source: Split, model: BilevelNet | None = None) -> None:
        super().__init__(options, source, model)
        self._size = len(source)

    @property
    def num_slots(self) -> int:
        return self._size

    def slots(self, batch: Batch) -> torch.Tensor:
        return batch.index
