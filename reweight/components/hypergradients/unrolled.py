"""The unrolled hypergradient: K differentiable inner steps, then L_t differentiated back to
every weight used on the way.

The look-ahead replays what training is about to do: the K source batches are the current one
and the next K−1 the sampler will draw (peeked, not consumed), and each step is the real inner
optimizer's update, SGD with its momentum, dampening, Nesterov flag, weight decay and current
momentum buffers. θ and φˢ are both unrolled (φˢ shapes θ's later gradients); φᵗ is held fixed.
The result is dL_t(θ_K)/dw for every example of every batch: exact for K inner steps with φᵗ,
and the weights the strategy had in force when the look-ahead began, held fixed (training
moves φᵗ every step and updates the strategy before later batches; the look-ahead does not
model either). All K steps use the current learning rate: a schedule that changes the rate
within the next K steps is not modelled either. Each weight's own inputs (its example's loss, for a weight network) are
constants, as in Meta-Weight-Net.

Two backends compute the same thing:

- ``torch_func``: parameters are a dict of tensors evaluated with ``torch.func.functional_call``;
  the unroll starts from the model's own parameters (no copies) and the first step's forward
  is the real step's forward, reused for the inner step.
- ``higher``: ``higher.innerloop_ctx`` with a differentiable copy of the real optimizer, as in
  the original Meta-Weight-Net and Learning-to-Reweight code. It works on copies of the
  weights, so the real step needs one more forward pass.

Memory grows linearly in K: every step keeps its graph until L_t(θ_K) is differentiated.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from reweight.components.hypergradients.sgd import sgd_settings, sgd_step
from reweight.core.data import Batch
from reweight.core.errors import ConfigError
from reweight.core.hypergrad import Hypergradient, HypergradientProblem, HypergradientResult, WeightGradient
from reweight.core.models import buffers_preserved


class UnrolledOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(1, ge=1, le=100, description="K, the number of differentiable inner steps.")
    backend: Literal["torch_func", "higher"] = "torch_func"


def _weights_leaf(problem: HypergradientProblem, batch: Batch, losses: torch.Tensor) -> torch.Tensor:
    weights = problem.weight_fn(batch, losses.detach())
    weights = torch.zeros_like(losses) if weights is None else weights
    return weights.detach().to(losses.dtype).requires_grad_(True)


class Unrolled(Hypergradient):
    """Exact hypergradient through K real inner optimizer steps."""

    Options = UnrolledOptions
    uses_target_graph = False

    def __init__(self, options: UnrolledOptions) -> None:
        super().__init__(options)
        if options.backend == "higher":
            try:
                import higher  # noqa: F401
            except ImportError:
                raise ConfigError(
                    "hypergrad.backend: 'higher' is not installed; pip install 'reweight[unrolled]', "
                    "or use backend: torch_func"
                ) from None

    def __call__(self, problem: HypergradientProblem) -> HypergradientResult:
        batches = [problem.source, *problem.upcoming(self.options.steps - 1)]
        if self.options.backend == "higher":
            return self._higher(problem, batches)
        return self._torch_func(problem, batches)

    def _torch_func(self, problem: HypergradientProblem, batches: list[Batch]) -> HypergradientResult:
        model = problem.model
        settings = sgd_settings(model, problem.optimizer)
        params = {name: p for name, p in model.inner_params().items() if name in settings}
        buffers = {name: buffer for name, (_, buffer) in settings.items()}
        first_losses = model.source_losses(problem.source)  # the real step's forward
        steps = []
        with buffers_preserved(model):
            for k, batch in enumerate(batches):
                losses = first_losses if k == 0 else model.source_losses(batch, params)
                weights = _weights_leaf(problem, batch, losses)
                grads = torch.autograd.grad((weights * losses).mean(), list(params.values()),
                                            create_graph=True, allow_unused=True)
                sgd_step(params, dict(zip(params, grads)), buffers, settings)
                steps.append((batch, losses.detach(), weights))
            target_loss = model.target_loss(problem.target, params)
        grads = torch.autograd.grad(target_loss, [weights for _, _, weights in steps], allow_unused=True)
        return HypergradientResult(first_losses, _weight_gradients(steps, grads))

    def _higher(self, problem: HypergradientProblem, batches: list[Batch]) -> HypergradientResult:
        import higher  # the optional backend is imported only when chosen

        model = problem.model
        sgd_settings(model, problem.optimizer)  # the same checks as the other backend
        steps = []
        with buffers_preserved(model), higher.innerloop_ctx(model, problem.optimizer) as (fmodel, diffopt):
            for batch in batches:
                losses = fmodel.source_losses(batch)
                weights = _weights_leaf(problem, batch, losses)
                diffopt.step((weights * losses).mean())
                steps.append((batch, losses.detach(), weights))
            target_loss = fmodel.target_loss(problem.target)
        grads = torch.autograd.grad(target_loss, [weights for _, _, weights in steps], allow_unused=True)
        return HypergradientResult(model.source_losses(problem.source), _weight_gradients(steps, grads))


def _weight_gradients(steps, grads) -> list[WeightGradient]:
    return [
        WeightGradient(batch, losses, torch.zeros_like(losses) if grad is None else grad)
        for (batch, losses, _), grad in zip(steps, grads)
    ]
