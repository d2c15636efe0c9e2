"""The unrolled hypergradient: K differentiable inner steps, then L_t differentiated back to
every weight used on the way.

The look-ahead replays what training is about to do: the K source batches are the current one
and the next K−1 the sampler will draw (peeked, not consumed), and each step is the real inner
optimizer's update (``replay``): SGD with its momentum, dampening, Nesterov flag, weight decay and
current momentum buffers, or Adam and AdamW with their step count, moments, bias correction and
weight decay. θ and φˢ are both unrolled (φˢ shapes θ's later gradients); φᵗ is held fixed.
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
  weights, so the real step needs one more forward pass. For SGD the copy is ``higher``'s
  own; ``higher``'s Adam predates torch's current update (its eps sits inside the bias
  correction, its step count stays a tensor of the default dtype, and it has no AdamW), so for
  Adam and AdamW the copy is a ``higher`` differentiable optimizer, built from the real one
  and its copied state in the same way, that applies torch's update (``replay``).

Memory grows linearly in K: every step keeps its graph until L_t(θ_K) is differentiated.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from reweight.components.hypergradients.replay import Replay, adam_group, adam_update, read_state
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
        replay = Replay(model, problem.optimizer)
        params = {name: p for name, p in model.inner_params().items() if name in replay.groups}
        states = replay.states()
        first_losses = model.source_losses(problem.source)  # the real step's forward
        steps = []
        with buffers_preserved(model):
            for k, batch in enumerate(batches):
                losses = first_losses if k == 0 else model.source_losses(batch, params)
                weights = _weights_leaf(problem, batch, losses)
                grads = torch.autograd.grad(problem.source_mean(weights * losses, batch), list(params.values()),
                                            create_graph=True, allow_unused=True)
                grads = problem.parallel.summed(grads)  # data-parallel: the global step, differentiably
                replay.step(params, dict(zip(params, grads)), states)
                steps.append((batch, losses.detach(), weights))
            target_loss = problem.target_loss_at(params)
        grads = torch.autograd.grad(target_loss, [weights for _, _, weights in steps], allow_unused=True)
        return HypergradientResult(first_losses, _weight_gradients(steps, grads))

    def _higher(self, problem: HypergradientProblem, batches: list[Batch]) -> HypergradientResult:
        import higher  # the optional backend is imported only when chosen

        model = problem.model
        replay = Replay(model, problem.optimizer)  # the same checks as the other backend
        steps = []
        with buffers_preserved(model):
            fmodel = higher.monkeypatch(model, copy_initial_weights=True, track_higher_grads=True)
            if replay.kind == "sgd":
                diffopt = higher.optim.get_diff_optim(problem.optimizer, model.parameters(), fmodel=fmodel)
            else:
                diffopt = _differentiable_adam(higher)(problem.optimizer, model.parameters(), fmodel=fmodel)
            # data-parallel: each step's gradients are summed over the ranks, differentiably
            summed = None if problem.parallel.single else problem.parallel.summed
            for batch in batches:
                losses = fmodel.source_losses(batch)
                weights = _weights_leaf(problem, batch, losses)
                diffopt.step(problem.source_mean(weights * losses, batch), grad_callback=summed)
                steps.append((batch, losses.detach(), weights))
            target_loss = problem.parallel.share(fmodel.target_loss(problem.target), problem.target)
        grads = torch.autograd.grad(target_loss, [weights for _, _, weights in steps], allow_unused=True)
        return HypergradientResult(model.source_losses(problem.source), _weight_gradients(steps, grads))


@functools.cache
def _differentiable_adam(higher):
    """A ``higher`` differentiable optimizer for ``torch.optim.Adam`` and ``AdamW``: ``higher``
    copies the real optimizer's groups and state and computes each step's gradients with their
    graph; the update itself is torch's (``replay.adam_update``)."""

    class DifferentiableTorchAdam(higher.optim.DifferentiableOptimizer):
        def __init__(self, other: torch.optim.Optimizer, *args, **kwargs) -> None:
            super().__init__(other, *args, **kwargs)
            self._settings = [adam_group(other, group) for group in self.param_groups]

        def _update(self, grouped_grads, **kwargs) -> None:
            for group_idx, (group, grads) in enumerate(zip(self.param_groups, grouped_grads)):
                for p_idx, (p, g) in enumerate(zip(group["params"], grads)):
                    if g is None:
                        continue
                    state = self.state[group_idx][p_idx]
                    if not state or isinstance(state["step"], torch.Tensor):  # as copied from the real one
                        state = read_state("adam", state)
                    group["params"][p_idx], self.state[group_idx][p_idx] = adam_update(
                        p, g, state, self._settings[group_idx])

    return DifferentiableTorchAdam


def _weight_gradients(steps, grads) -> list[WeightGradient]:
    return [
        WeightGradient(batch, losses, torch.zeros_like(losses) if grad is None else grad)
        for (batch, losses, _), grad in zip(steps, grads)
    ]
