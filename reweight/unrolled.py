"""The unrolled hypergradient: K differentiable inner steps, then L_t differentiated back to
every weight used on the way.

The look-ahead replays what training is about to do: the K source batches are the current one
and the next K−1 the sampler will draw (peeked, not consumed), and each step is the real inner
optimizer's update, SGD with its momentum, dampening, Nesterov flag, weight decay and current
momentum buffers. θ and φˢ are both unrolled (φˢ shapes θ's later gradients); φᵗ is held fixed.
The result is dL_t(θ_K)/dw for every example of every batch, so the strategy receives the exact
total derivative for its hyper-parameters through the weights, with each weight's own inputs
(its example's loss, for a weight network) held constant, as Meta-Weight-Net does.

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

from reweight.data import Batch
from reweight.errors import ConfigError
from reweight.hypergrad import Hypergradient, HypergradientProblem, HypergradientResult, WeightGradient
from reweight.models import BilevelNet, buffers_preserved


class UnrolledOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(1, ge=1, le=100, description="K, the number of differentiable inner steps.")
    backend: Literal["torch_func", "higher"] = "torch_func"


def _weights_leaf(problem: HypergradientProblem, batch: Batch, losses: torch.Tensor) -> torch.Tensor:
    weights = problem.weight_fn(batch, losses.detach())
    weights = torch.zeros_like(losses) if weights is None else weights
    return weights.detach().to(losses.dtype).requires_grad_(True)


def sgd_settings(model: BilevelNet, optimizer: torch.optim.Optimizer) -> dict[str, tuple[dict, torch.Tensor | None]]:
    """For each inner parameter (by name): its optimizer group and current momentum buffer."""
    if not isinstance(optimizer, torch.optim.SGD):
        raise ConfigError(f"hypergrad: the unrolled method replays SGD, not {type(optimizer).__name__}")
    names = {id(p): name for name, p in model.inner_params().items()}
    settings = {}
    for group in optimizer.param_groups:
        if group.get("maximize"):
            raise ConfigError("hypergrad: the unrolled method does not replay a maximising optimizer")
        for p in group["params"]:
            if id(p) in names:
                settings[names[id(p)]] = (group, optimizer.state.get(p, {}).get("momentum_buffer"))
    return settings


def sgd_step(params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor | None],
             buffers: dict[str, torch.Tensor | None], settings: dict[str, tuple[dict, object]]) -> None:
    """One differentiable ``torch.optim.SGD`` step, written out; updates ``params`` and
    ``buffers`` in place (the dicts, not the tensors)."""
    for name, grad in grads.items():
        if grad is None:
            continue
        group = settings[name][0]
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * params[name]
        if group["momentum"]:
            buffer = buffers.get(name)
            buffer = grad if buffer is None else group["momentum"] * buffer + (1 - group["dampening"]) * grad
            buffers[name] = buffer
            grad = grad + group["momentum"] * buffer if group["nesterov"] else buffer
        params[name] = params[name] - group["lr"] * grad


class Unrolled(Hypergradient):
    """Exact hypergradient through K real inner optimizer steps."""

    Options = UnrolledOptions

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
