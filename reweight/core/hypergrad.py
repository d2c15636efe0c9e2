"""Hypergradients: dL_t/dwⱼ, the derivative of the target loss with respect to the weight of
each source example, through differentiable inner steps.

The contract is per example, whatever the strategy keeps: a method returns dL_t/dwⱼ for every
example of every source batch its look-ahead used, and the strategy maps those onto its own
hyper-parameters (an α table via the granularity's slots, a weight network by the chain rule).
Methods, strategies and granularities therefore combine freely.

θ below stands for the parameters both losses depend on (``BilevelNet.coupled_params``): the
representation, plus the source head when source and target share it.

The methods themselves are components: the one-step method in
``reweight.components.hypergradients.one_step``, the unrolled one beside it.

Buffers: look-ahead passes never write buffers (``buffers_preserved``); BatchNorm running
statistics move only with the forward pass of the real inner step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from pydantic import BaseModel

from reweight.core.data import Batch
from reweight.core.distributed import SINGLE, DataParallel
from reweight.core.models import BilevelNet, Params
from reweight.core.plugins import NoOptions

# weights a strategy has in force for a batch with the given (detached) losses; None means the
# strategy has no standing weights and the look-ahead is taken at w = 0, as Ren et al. do
WeightFn = Callable[[Batch, torch.Tensor], torch.Tensor | None]


@dataclass
class HypergradientProblem:
    """Everything a hypergradient method may need for one engine step.

    In a data-parallel run (``parallel``, see ``reweight.core.distributed``) the batches are this
    rank's shards of the global batches and ``target_loss`` is this rank's share of L_t: a method
    takes means over the global batch with ``source_mean`` and ``target_loss_at``, sums gradients
    of shares with ``parallel.sum_`` (``parallel.summed`` inside a differentiable look-ahead),
    and returns the hypergradients of its shard; ``weight_fn`` already answers for the global
    batch. In one process all of these are the plain means and the identity."""

    model: BilevelNet
    source: Batch  # the batch the inner step trains on now
    target: Batch
    target_loss: torch.Tensor  # L_t at the current parameters, its graph retained
    optimizer: torch.optim.Optimizer  # the real inner optimizer: its settings and momentum buffers
    weight_fn: WeightFn
    upcoming: Callable[[int], list[Batch]]  # the next n source batches, without consuming them
    parallel: DataParallel = field(default=SINGLE)

    def current_target_gradient(self) -> dict[str, torch.Tensor]:
        """v = ∇_θ L_t at the current θ, from the engine's own target forward pass (summed
        over the ranks' shares: every rank holds the same v)."""
        theta = self.model.coupled_params()
        grads = torch.autograd.grad(self.target_loss, list(theta.values()), retain_graph=True, allow_unused=True)
        v = zeros_for_unused(theta, grads)
        self.parallel.sum_(list(v.values()))
        return v

    def source_mean(self, values: torch.Tensor, batch: Batch) -> torch.Tensor:
        """(1/B) Σⱼ valuesⱼ over the global source batch: this rank's share of it."""
        return self.parallel.mean(values, batch)

    def target_loss_at(self, params) -> torch.Tensor:
        """L_t with some parameters replaced by ``params``: this rank's share of it."""
        return self.parallel.share(self.model.target_loss(self.target, params), self.target)

    def source_size(self, batch: Batch) -> int:
        """B, the size of the global batch ``batch`` (a shard of it) belongs to."""
        return len(self.parallel.whole(batch))


@dataclass
class WeightGradient:
    """dL_t/dwⱼ for one source batch of the look-ahead."""

    batch: Batch
    losses: torch.Tensor  # ℓⱼ (detached) at the parameters this batch met in the look-ahead
    grad: torch.Tensor


@dataclass
class HypergradientResult:
    losses: torch.Tensor  # ℓⱼ of ``problem.source`` at the current parameters, with graph, for the inner step
    gradients: list[WeightGradient]  # the first is for ``problem.source``


class Hypergradient(ABC):
    """Computes dL_t/dw for the source batches of a look-ahead."""

    Options: ClassVar[type[BaseModel]] = NoOptions
    # whether the method may call ``problem.current_target_gradient()``; if not, the engine
    # frees the target loss's graph right after the target head's gradient
    uses_target_graph: ClassVar[bool] = True

    def __init__(self, options: BaseModel) -> None:
        self.options = options

    @abstractmethod
    def __call__(self, problem: HypergradientProblem) -> HypergradientResult: ...


def zeros_for_unused(params: Params, grads) -> dict[str, torch.Tensor]:
    """Gradients by name, zeros where autograd returned None (a parameter the loss does not use)."""
    return {name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(params.items(), grads)}
