"""Strategies: they own the hyper-parameters that produce source weights.

The engine asks a strategy for the weights of a batch and hands it the hypergradient
dL_t/dwⱼ of each example's weight; what the strategy keeps (an α table, a weight network,
nothing) and how it turns the hypergradient into new weights is its own business. Strategies
are plugins: see ``reweight.plugins``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from pydantic import BaseModel

from reweight.data import Batch
from reweight.granularity import Granularity, NoOptions


class Strategy(ABC):
    """Turns source batches into per-example weights, trained by the hypergradient.

    ``needs_hypergradient = False`` lets baselines skip the hypergradient's cost.
    """

    Options: ClassVar[type[BaseModel]] = NoOptions
    needs_hypergradient: ClassVar[bool] = True

    def __init__(self, options: BaseModel, granularity: Granularity, device: torch.device) -> None:
        self.options = options
        self.granularity = granularity
        self.device = device

    @abstractmethod
    def weights(self, batch: Batch, losses: torch.Tensor) -> torch.Tensor | None:
        """The weights currently in force for ``batch`` (no gradient), or ``None`` if the
        strategy has no weights outside an update (e.g. per-batch strategies)."""

    def update(self, batch: Batch, losses: torch.Tensor, hypergradient: torch.Tensor) -> torch.Tensor:
        """Apply dL_t/dwⱼ (one entry per example) and return the weights for the inner step."""
        raise NotImplementedError(f"{type(self).__name__} does not use a hypergradient")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
