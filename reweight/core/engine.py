"""The bilevel loop. It knows the contracts (Strategy, Hypergradient, BilevelNet), never a
particular strategy, granularity or method.

One step, following SOSELETO's order:

1. draw a source batch and a target batch (by default the whole, small target set);
2. target loss at the current θ: its gradient trains φᵗ and gives v = ∇_θ L_t — it never
   trains θ;
3. if the strategy learns its weights: hypergradient dL_t/dw for the batches of the
   method's look-ahead, then the strategy's update, which yields the weights of this step
   (updated *before* the step that uses them);
4. weighted inner step on θ and φˢ with (1/B) Σ wⱼ ℓⱼ (SGD, Adam or AdamW);
5. target-head step on φᵗ (its own optimizer);
6. the learning-rate schedulers, if any, advance.

A strategy may also let the target loss train θ directly (``representation_target_weight``,
0 for the bilevel methods); the baselines use it for joint, target-only and fine-tuned training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LRScheduler

from reweight.core.data import BatchSampler, BilevelData
from reweight.core.engine_state import EngineState
from reweight.core.evaluation import Evaluation
from reweight.core.hypergrad import Hypergradient, HypergradientProblem
from reweight.core.models import BilevelNet, buffers_preserved
from reweight.core.optimizers import OptimizerSettings, build_optimizer
from reweight.core.strategy import Strategy


@dataclass(frozen=True)
class TrainSettings:
    """The engine's knobs (validated upstream by ``reweight.experiment.config.TrainConfig``, whose
    defaults are these)."""

    source_batch_size: int = 32
    target_batch_size: int | None = None
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    target_lr: float = 0.1
    # the optimizers of θ and φˢ, and of φᵗ (a bare name, e.g. "adam", is accepted); SGD by default
    optimizer: OptimizerSettings | str = OptimizerSettings()
    target_optimizer: OptimizerSettings | str = OptimizerSettings()
    # builds each optimizer's learning-rate scheduler (None: a constant rate)
    schedule: Callable[[torch.optim.Optimizer], LRScheduler | None] = lambda optimizer: None


class Engine(Evaluation, EngineState):
    """The bilevel loop over one model, strategy, hypergradient method and data set.

    ``step`` runs one bilevel step and ``fit`` trains to a given step, evaluating on the way;
    evaluation (``evaluate``, ``source_weights``) and checkpoint state (``state_dict``) are in
    ``reweight.core.evaluation`` and ``reweight.core.engine_state``.
    """

    def __init__(
        self,
        model: BilevelNet,
        strategy: Strategy,
        hypergradient: Hypergradient,
        data: BilevelData,
        settings: TrainSettings,
        seed: int,
    ) -> None:
        self.model, self.strategy, self.hypergradient = model, strategy, hypergradient
        self.data, self.settings = data, settings
        inner = [*model.representation.parameters(), *model.source_head.parameters()]
        self.inner_optimizer = build_optimizer(inner, settings.lr, settings.optimizer, settings.momentum,
                                               settings.weight_decay, "optimizer")
        self.target_optimizer = build_optimizer(model.target_head.parameters(), settings.target_lr,
                                                settings.target_optimizer, settings.momentum, 0.0, "target_optimizer")
        schedulers = (settings.schedule(self.inner_optimizer), settings.schedule(self.target_optimizer))
        self.schedulers = [s for s in schedulers if s is not None]
        self.source_sampler = BatchSampler(data.source, settings.source_batch_size, seed)
        self.target_sampler = BatchSampler(data.target, settings.target_batch_size, seed + 1)
        device = data.source.y.device
        self.last_weights = torch.ones(len(data.source), device=device)  # last weight each example trained with
        self.step_count = 0
        # Kept on the device so that a step needs no host sync: the source and target losses
        # summed since the last evaluation, and the first step whose losses were not finite
        # (-1: none). A non-finite weight makes the weighted source loss non-finite too.
        self.loss_sums = torch.zeros(2, device=device)
        self.loss_count = 0
        self.first_bad_step = torch.tensor(-1, device=device)
        self._weights: torch.Tensor | None = None  # source_weights() at the current state, once computed

    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One bilevel step; returns (weighted source loss, target loss), both detached."""
        model, strategy = self.model, self.strategy
        source, target = self.source_sampler.next(), self.target_sampler.next()
        model.train()
        strategy.begin_step(self.step_count)
        direct = strategy.representation_target_weight()

        with buffers_preserved(model):  # only the inner step's forward moves running statistics
            target_loss = model.target_loss(target)
        head = list(model.target_head.parameters())
        theta = list(model.representation.parameters()) if direct else []
        keep = strategy.needs_hypergradient and self.hypergradient.uses_target_graph
        grads = torch.autograd.grad(target_loss, head + theta, retain_graph=keep, allow_unused=True)
        head_grads, theta_grads = grads[: len(head)], grads[len(head):]

        if strategy.needs_hypergradient:
            problem = HypergradientProblem(
                model, source, target, target_loss, self.inner_optimizer, strategy.weights, self.source_sampler.peek
            )
            result = self.hypergradient(problem)
            losses = result.losses
            weights = strategy.update(result.gradients)
        else:
            losses = model.source_losses(source)
            weights = strategy.weights(source, losses.detach())
        weights = weights.detach()

        source_loss = (weights * losses).mean()
        self.inner_optimizer.zero_grad(set_to_none=True)
        source_loss.backward()
        for p, g in zip(theta, theta_grads):  # the target loss's direct share of θ's step, if any
            if g is not None:
                p.grad = direct * g if p.grad is None else p.grad.add_(g, alpha=direct)
        self.inner_optimizer.step()

        for p, g in zip(head, head_grads):
            p.grad = None if g is None else g.detach()
        self.target_optimizer.step()
        for scheduler in self.schedulers:
            scheduler.step()

        self.last_weights[source.index] = weights.to(self.last_weights.dtype)
        losses = torch.stack([source_loss.detach(), target_loss.detach()]).to(self.loss_sums)
        self.loss_sums += losses
        self.loss_count += 1
        self._weights = None
        healthy = torch.isfinite(losses).all() | (self.first_bad_step >= 0)
        self.first_bad_step = torch.where(healthy, self.first_bad_step, self.step_count)
        self.step_count += 1
        return source_loss.detach(), target_loss.detach()

    def fit(
        self,
        until: int,
        eval_every: int,
        on_eval: Callable[[int, dict[str, float]], None] = lambda step, metrics: None,
        progress: Callable[[int], None] = lambda advance: None,
        after_step: Callable[[int], None] = lambda step: None,
    ) -> dict[str, float]:
        """Train until step ``until`` (from wherever the engine stands: 0, or a restored
        checkpoint's step), evaluating every ``eval_every`` steps and at the end.
        ``after_step`` runs after each step and its evaluation (checkpoints, interrupts)."""
        metrics: dict[str, float] = {}
        while self.step_count < until:
            self.step()
            progress(1)
            if self.step_count % eval_every == 0 or self.step_count == until:
                metrics = self.evaluate()
                means = (self.loss_sums / max(self.loss_count, 1)).tolist()
                metrics["source_loss"], metrics["train_target_loss"] = means
                if self.schedulers:  # the rate of θ and φˢ for the next step
                    metrics["lr"] = self.inner_optimizer.param_groups[0]["lr"]
                self.loss_sums.zero_()
                self.loss_count = 0
                on_eval(self.step_count, metrics)
            after_step(self.step_count)
        return metrics
