"""The one-step hypergradient, computed exactly by forward-mode differentiation.

With L_s(w) = (1/B) Σⱼ wⱼ ℓⱼ(θ), g = ∇_θ L_s(w) this step's gradient and θ' the real optimizer's
next step, θ' depends on w only through g. Write D = −∂θ'/∂g, elementwise (every supported
optimizer updates each coordinate from its own gradient). Since ∂g/∂wⱼ = (1/B) ∇_θ ℓⱼ(θ),

    dθ'/dwⱼ = −(1/B) D ⊙ ∇_θ ℓⱼ(θ),    dL_t(θ')/dwⱼ = −(1/B) ∇_θ ℓⱼ(θ) · (D ⊙ v),    v = ∇_θ L_t(θ').

For SGD, D is the constant λ (momentum's history and weight decay do not depend on this step's
weights; dampening and Nesterov momentum scale the new gradient's share, see
``reweight.components.hypergradients.replay.sgd_gradient_scale``). For Adam and AdamW the update
is a non-linear function of g, and D (``replay.adam_gradient_derivative``) is evaluated at the
gradient of the weights in force (w = 0 for a strategy without standing weights): the
derivative of the step about to be taken, at the point where it will be taken.

All B dot products come from a single forward-mode pass along D ⊙ v
(``torch.autograd.forward_ad``): no per-sample gradients, no backward-of-backward. The same pass
yields the losses ℓⱼ with their reverse graph, which the engine reuses for the inner step.
``at: current`` takes v at θ (SOSELETO's approximation); ``at: lookahead`` takes v at θ'
computed with the real optimizer's settings and state, which is exact for the next step with
φᵗ held fixed (Meta-Weight-Net's choice; Learning-to-Reweight looks ahead at w = 0, where under
plain SGD the two coincide).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch.autograd import forward_ad

from reweight.components.hypergradients.replay import Replay
from reweight.core.data import Batch
from reweight.core.distributed import SINGLE, DataParallel
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


def step_gradient(model: BilevelNet, batch: Batch, weights: torch.Tensor | None,
                  losses: torch.Tensor | None = None, parallel: DataParallel = SINGLE) -> dict[str, torch.Tensor | None]:
    """g = ∇_θ (1/B) Σ wⱼ ℓⱼ(θ) for the coupled parameters; zeros for ``weights=None`` (w = 0),
    None for a parameter the losses do not use. ``losses`` may pass ℓⱼ(θ) already computed
    (with graph). Data-parallel: ``batch`` is a shard and every rank gets the global g."""
    theta = model.coupled_params()
    if weights is None:
        return {name: torch.zeros_like(p) for name, p in theta.items()}
    if losses is None:
        with buffers_preserved(model):
            losses = model.source_losses(batch)
    grads = torch.autograd.grad(parallel.mean(weights * losses, batch), list(theta.values()), allow_unused=True)
    parallel.sum_(grads)
    return dict(zip(theta, grads))


def replayed_step(model: BilevelNet, replay: Replay, grads: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
    """θ' after the real optimizer's next step with gradient ``grads``, detached."""
    params = dict(model.coupled_params())
    replay.step(params, grads, replay.states())
    return {name: p.detach() for name, p in params.items()}


def lookahead_parameters(
    model: BilevelNet, batch: Batch, weights: torch.Tensor | None, optimizer: torch.optim.Optimizer,
    losses: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """θ' after the real optimizer's next step on (1/B) Σ wⱼ ℓⱼ(θ), detached; the optimizer's
    state (momentum buffers, Adam's moments) is read, not changed. ``weights=None`` means w = 0:
    only momentum, Adam's moments and weight decay move θ. ``losses`` may pass ℓⱼ(θ) already
    computed (with graph)."""
    return replayed_step(model, Replay(model, optimizer), step_gradient(model, batch, weights, losses))


def target_gradient(model: BilevelNet, target: Batch, theta: Params,
                    parallel: DataParallel = SINGLE) -> dict[str, torch.Tensor]:
    """v = ∇_θ L_t at representation parameters ``theta`` (which must be leaves or detached);
    data-parallel: ``target`` is a shard and every rank gets the global v."""
    theta = {name: p.detach().requires_grad_(True) for name, p in theta.items()}
    with buffers_preserved(model):
        loss = parallel.share(model.target_loss(target, theta), target)
    v = zeros_for_unused(theta, torch.autograd.grad(loss, list(theta.values()), allow_unused=True))
    parallel.sum_(list(v.values()))
    return v


class OneStepOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: Literal["current", "lookahead"] = "current"


class OneStep(Hypergradient):
    """The one-step approximation, computed exactly by forward-mode differentiation."""

    Options = OneStepOptions

    def __call__(self, problem: HypergradientProblem) -> HypergradientResult:
        model, source = problem.model, problem.source
        replay = Replay(model, problem.optimizer)
        direction, grads = None, {}
        # the look-ahead needs this step's gradient, and so does Adam's D at either point
        if self.options.at == "lookahead" or replay.needs_gradient:
            with buffers_preserved(model):
                losses = model.source_losses(source)
            current = problem.weight_fn(source, losses.detach())
            # at w = 0 (no standing weights) plain SGD leaves θ' = θ: the current v is exact
            if current is not None or replay.moves_without_gradient() or replay.needs_gradient:
                grads = step_gradient(model, source, current, losses, problem.parallel)
            if self.options.at == "lookahead" and (current is not None or replay.moves_without_gradient()):
                direction = target_gradient(model, problem.target, replayed_step(model, replay, grads),
                                            problem.parallel)
        if direction is None:
            direction = problem.current_target_gradient()
        # dθ'/dwⱼ = −(1/B) D ⊙ ∇ℓⱼ, with D = −∂θ'/∂g the step's derivative in its gradient
        theta = model.coupled_params()
        scaled = {name: replay.gradient_derivative(name, theta[name], grads.get(name)) * v
                  for name, v in direction.items()}
        losses, dots = losses_and_directional_derivatives(model, source, scaled)
        grad = -dots / problem.source_size(source)
        return HypergradientResult(losses, [WeightGradient(source, losses.detach(), grad)])
