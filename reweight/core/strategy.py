"""Strategies: they own the hyper-parameters that produce source weights.

The engine asks a strategy for the weights of a batch and hands it the hypergradient
dL_t/dwⱼ of each example's weight, for every source batch of the method's look-ahead (one
for the one-step method, K for the unrolled one); what the strategy keeps (an α table, a weight
network, nothing) and how it turns the hypergradient into new weights is its own business. Strategies
are plugins: see ``reweight.core.plugins``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel

from reweight.core.data import Batch
from reweight.core.granularity import Granularity
from reweight.core.plugins import NoOptions

if TYPE_CHECKING:
    from reweight.core.hypergrad import WeightGradient


class Strategy(ABC):
    """Turns source batches into per-example weights, trained by the hypergradient.

    ``needs_hypergradient = False`` lets baselines skip the hypergradient's cost.
    """

    Options: ClassVar[type[BaseModel]] = NoOptions
    needs_hypergradient: ClassVar[bool] = True
    # whether ``weights`` reads its ``losses``; if not, evaluation passes None instead of a
    # forward pass over the whole source set (SOSELETO's weights are its table)
    weights_need_losses: ClassVar[bool] = True

    def __init__(self, options: BaseModel, granularity: Granularity, device: torch.device) -> None:
        self.options = options
        self.granularity = granularity
        self.device = device

    @abstractmethod
    def weights(self, batch: Batch, losses: torch.Tensor) -> torch.Tensor | None:
        """The weights currently in force for ``batch`` (no gradient), or ``None`` if the
        strategy has no weights outside an update (e.g. per-batch strategies)."""

    def reported_weights(self, batch: Batch, losses: torch.Tensor | None) -> torch.Tensor | None:
        """The weights evaluation and the weights file report: those in force, unless a strategy
        trains with other weights than the ones it learned (a pipeline's later phases)."""
        return self.weights(batch, losses)

    def begin_step(self, step: int) -> None:
        """Called by the engine before each step (0, 1, ...), for strategies with a schedule."""

    def representation_target_weight(self) -> float:
        """How strongly the target loss trains θ directly in this step: the inner step then
        descends (1/B) Σⱼ wⱼ ℓⱼ + c · L_t in θ. 0 (the default) is the bilevel rule — target
        data reach θ only through the weights; baselines such as joint training, target-only
        training and fine-tuning set it to 1."""
        return 0.0

    def update(self, gradients: Sequence[WeightGradient]) -> torch.Tensor:
        """Apply dL_t/dw of each look-ahead batch and return the weights for the inner step on
        ``gradients[0].batch``."""
        raise NotImplementedError(f"{type(self).__name__} does not use a hypergradient")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
