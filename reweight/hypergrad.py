"""Hypergradients: dL_t/dwⱼ, the derivative of the target loss with respect to each source
example's weight, through one (differentiable) SGD step of the inner problem.

With L_s(w) = (1/B) Σⱼ wⱼ ℓⱼ(θ) and θ' = θ − λ ∇_θ L_s(w), the chain rule gives

    dL_t(θ')/dwⱼ = −(λ/B) ∇_θ ℓⱼ(θ) · v,    v = ∇_θ L_t(θ').

The one-step method computes all B dot products with a single forward-mode pass along v
(``torch.autograd.forward_ad``): no per-sample gradients, no backward-of-backward. The same
pass yields the losses ℓⱼ with their reverse graph, so the engine reuses them for the inner
step instead of running the source forward again. ``at: current`` takes v at θ (SOSELETO's
approximation, v = ∇_θ L_t(θ)); ``at: lookahead`` takes v at θ' (exact for one step; the
choice of Learning-to-Reweight).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch.autograd import forward_ad

from reweight.data import Batch
from reweight.granularity import NoOptions
from reweight.models import BilevelNet, Params


@dataclass
class HypergradientProblem:
    """Everything a hypergradient method may need for one engine step."""

    model: BilevelNet
    source: Batch
    target: Batch
    target_grad: Params  # ∇_θ L_t at the current θ, by parameter name (already computed by the engine)
    inner_lr: float
    weight_fn: Callable[[torch.Tensor], torch.Tensor]  # per-example losses -> weights now in force


class Hypergradient(ABC):
    """Computes per-example source losses (with graph) and dL_t/dw for a source batch."""

    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, options: BaseModel) -> None:
        self.options = options

    @abstractmethod
    def __call__(self, problem: HypergradientProblem) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(losses, dL_t/dw)``; ``losses`` keeps its graph to θ and φˢ."""


def losses_and_directional_derivatives(
    model: BilevelNet, batch: Batch, direction: Params
) -> tuple[torch.Tensor, torch.Tensor]:
    """ℓⱼ(θ) and ∇_θ ℓⱼ(θ) · direction for every example, in one forward-mode pass."""
    theta = model.representation_params()
    with forward_ad.dual_level():
        duals = {name: forward_ad.make_dual(p, direction[name]) for name, p in theta.items()}
        losses, tangent = forward_ad.unpack_dual(model.source_losses(batch, duals))
    if tangent is None:  # the losses do not depend on θ at all
        tangent = torch.zeros_like(losses)
    return losses, tangent.detach()


def lookahead_parameters(
    model: BilevelNet, batch: Batch, weights: torch.Tensor, inner_lr: float
) -> dict[str, torch.Tensor]:
    """θ' = θ − λ ∇_θ (1/B) Σ wⱼ ℓⱼ(θ), detached: one plain SGD step of the representation."""
    theta = model.representation_params()
    weighted = (weights * model.source_losses(batch)).mean()
    grads = torch.autograd.grad(weighted, list(theta.values()), allow_unused=True)
    return {
        name: (p - inner_lr * g if g is not None else p).detach()
        for (name, p), g in zip(theta.items(), grads)
    }


def target_gradient(model: BilevelNet, target: Batch, theta: Params) -> dict[str, torch.Tensor]:
    """v = ∇_θ L_t at representation parameters ``theta`` (which must be leaves or detached)."""
    theta = {name: p.detach().requires_grad_(True) for name, p in theta.items()}
    loss = model.target_loss(target, theta)
    grads = torch.autograd.grad(loss, list(theta.values()), allow_unused=True)
    return {name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(theta.items(), grads)}


class OneStepOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: Literal["current", "lookahead"] = "current"


class OneStep(Hypergradient):
    """The one-step approximation, computed exactly by forward-mode differentiation."""

    Options = OneStepOptions

    def __call__(self, problem: HypergradientProblem) -> tuple[torch.Tensor, torch.Tensor]:
        model, source = problem.model, problem.source
        direction = problem.target_grad
        if self.options.at == "lookahead":
            with torch.no_grad():
                current = problem.weight_fn(model.source_losses(source))
            theta_next = lookahead_parameters(model, source, current, problem.inner_lr)
            direction = target_gradient(model, problem.target, theta_next)
        losses, dots = losses_and_directional_derivatives(model, source, direction)
        return losses, -(problem.inner_lr / len(source)) * dots
