"""The one-step hypergradient, computed exactly by forward-mode differentiation.

With L_s(w) = (1/B) Σⱼ wⱼ ℓⱼ(θ) and θ' the real optimizer's next step, θ' = θ − λ ∇_θ L_s(w) + (terms
that do not depend on w: momentum's history, weight decay), the chain rule gives

    dL_t(θ')/dwⱼ = −(λ/B) ∇_θ ℓⱼ(θ) · v,    v = ∇_θ L_t(θ')

(λ becomes the step's scale of the new gradient under dampening or Nesterov momentum; see
``reweight.components.hypergradients.sgd.gradient_scale``). All B dot products come from a single
forward-mode pass along v (``torch.autograd.forward_ad``): no per-sample gradients, no
backward-of-backward. The same pass yields the losses ℓⱼ with their reverse graph, which the
engine reuses for the inner step. ``at: current`` takes v at θ (SOSELETO's approximation);
``at: lookahead`` takes v at θ' computed with the real optimizer's settings and momentum buffers,
which is exact for the next step with φᵗ held fixed (Meta-Weight-Net's choice;
Learning-to-Reweight looks ahead at w = 0, where the two coincide).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch.autograd import forward_ad

from reweight.components.hypergradients.sgd import gradient_scale, sgd_settings, sgd_step
from reweight.core.data import Batch
from reweight.core.hypergrad import (
    Hypergradient,
    HypergradientProblem,
    HypergradientResult,
    WeightGradient,
    zeros_for_unused,
)
from reweight.core.models import BilevelNet, Params, buffers_preserved


def losses_and_directional_derivatives(
    model: BilevelNet, batch: Batch, direction: Params
) -> tuple[torch.Tensor, torch.Tensor]:
    """ℓⱼ(θ) and ∇_θ ℓⱼ(θ) · direction for every example, in one forward-mode pass."""
    theta = model.coupled_params()
    with forward_ad.dual_level():
        duals = {name: forward_ad.make_dual(p, direction[name]) for name, p in theta.items()}
        losses, tangent = forward_ad.unpack_dual(model.source_losses(batch, duals))
    if tangent is None:  # the losses do not depend on θ at all
        tangent = torch.zeros_like(losses)
    return losses, tangent.detach()


def lookahead_parameters(
    model: BilevelNet, batch: Batch, weights: torch.Tensor | None, optimizer: torch.optim.Optimizer,
    losses: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """θ' after the real optimizer's next step on (1/B) Σ wⱼ ℓⱼ(θ), detached; the optimizer's
    momentum buffers are read, not changed. ``weights=None`` means w = 0: only momentum and
    weight decay move θ. ``losses`` may pass ℓⱼ(θ) already computed (with graph)."""
    theta = model.coupled_params()
    if weights is None:
        grads = [torch.zeros_like(p) for p in theta.values()]
    else:
        if losses is None:
            with buffers_preserved(model):
                losses = model.source_losses(batch)
        grads = torch.autograd.grad((weights * losses).mean(), list(theta.values()), allow_unused=True)
    settings = sgd_settings(model, optimizer)
    params = dict(theta)
    buffers = {name: settings[name][1] for name in theta}
    sgd_step(params, dict(zip(theta, grads)), buffers, settings)
    return {name: p.detach() for name, p in params.items()}


def moves_without_gradient(settings) -> bool:
    """Whether momentum or weight decay move parameters even when the weights are all 0."""
    return any(group["weight_decay"] or (group["momentum"] and buffer is not None) for group, buffer in settings.values())


def target_gradient(model: BilevelNet, target: Batch, theta: Params) -> dict[str, torch.Tensor]:
    """v = ∇_θ L_t at representation parameters ``theta`` (which must be leaves or detached)."""
    theta = {name: p.detach().requires_grad_(True) for name, p in theta.items()}
    with buffers_preserved(model):
        loss = model.target_loss(target, theta)
    return zeros_for_unused(theta, torch.autograd.grad(loss, list(theta.values()), allow_unused=True))


class OneStepOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: Literal["current", "lookahead"] = "current"


class OneStep(Hypergradient):
    """The one-step approximation, computed exactly by forward-mode differentiation."""

    Options = OneStepOptions

    def __call__(self, problem: HypergradientProblem) -> HypergradientResult:
        model, source = problem.model, problem.source
        settings = sgd_settings(model, problem.optimizer)
        direction = None
        if self.options.at == "lookahead":
            with buffers_preserved(model):
                losses = model.source_losses(source)
            current = problem.weight_fn(source, losses.detach())
            # at w = 0 (no standing weights) plain SGD leaves θ' = θ: the current v is exact
            if current is not None or moves_without_gradient(settings):
                theta_next = lookahead_parameters(model, source, current, problem.optimizer, losses)
                direction = target_gradient(model, problem.target, theta_next)
        if direction is None:
            direction = problem.current_target_gradient()
        # dθ'/dwⱼ = −(c/B) ∇ℓⱼ, with c the step's scale of each parameter's gradient
        scaled = {name: gradient_scale(settings, name) * v for name, v in direction.items()}
        losses, dots = losses_and_directional_derivatives(model, source, scaled)
        grad = -dots / len(source)
        return HypergradientResult(losses, [WeightGradient(source, losses.detach(), grad)])
