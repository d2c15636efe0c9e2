"""The bilevel loop. It knows the contracts (Strategy, Hypergradient, BilevelNet), never a
particular strategy, granularity or method.

One step, following SOSELETO's order:

1. draw a source batch and a target batch (by default the whole, small target set);
2. target loss at the current θ: its gradient trains φᵗ and gives v = ∇_θ L_t — it never
   trains θ;
3. if the strategy learns its weights: hypergradient dL_t/dw for the batches of the
   method's look-ahead, then the strategy's update, which yields the weights of this step
   (updated *before* the step that uses them);
4. weighted inner step on θ and φˢ with (1/B) Σ wⱼ ℓⱼ;
5. target-head step on φᵗ.

A strategy may also let the target loss train θ directly (``representation_target_weight``,
0 for the bilevel methods); the baselines use it for joint, target-only and fine-tuned training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from reweight.data import BatchSampler, BilevelData
from reweight.errors import ReweightError
from reweight.hypergrad import Hypergradient, HypergradientProblem
from reweight.metrics import accuracy, slot_summary, weight_summary
from reweight.models import BilevelNet, buffers_preserved
from reweight.strategy import Strategy


class NumericalError(ReweightError):
    """A loss or weight became NaN or infinite."""


@dataclass(frozen=True)
class TrainSettings:
    """The engine's knobs (validated upstream by ``reweight.config.TrainConfig``)."""

    source_batch_size: int = 32
    target_batch_size: int | None = None
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    target_lr: float = 0.1


class Engine:
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
        self.inner_optimizer = torch.optim.SGD(
            inner, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
        )
        self.target_optimizer = torch.optim.SGD(
            model.target_head.parameters(), lr=settings.target_lr, momentum=settings.momentum
        )
        self.source_sampler = BatchSampler(data.source, settings.source_batch_size, seed)
        self.target_sampler = BatchSampler(data.target, settings.target_batch_size, seed + 1)
        device = data.source.y.device
        self.last_weights = torch.ones(len(data.source), device=device)  # last weight each example trained with
        self.step_count = 0

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

        self.last_weights[source.index] = weights.to(self.last_weights.dtype)
        self.step_count += 1
        return source_loss.detach(), target_loss.detach()

    @torch.no_grad()
    def source_weights(self) -> torch.Tensor:
        """The weight of every source example under the strategy's current state (or the last
        weight each was trained with, for strategies without standing weights)."""
        self.model.eval()
        everything = self.data.source.all()
        weights = self.strategy.weights(everything, self.model.source_losses(everything))
        return self.last_weights.clone() if weights is None else weights.float()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        model, data = self.model, self.data
        model.eval()
        target = data.target.all()
        metrics = {
            "test_accuracy": accuracy(model.predict_target(data.test.x), data.test.y),
            "target_accuracy": accuracy(model.predict_target(target.x), target.y),
            "target_loss": model.target_loss(target).item(),
        }
        weights = self.source_weights()
        metrics.update(weight_summary(weights, data.source.meta.get("corrupted")))
        metrics.update(slot_summary(weights, self.strategy.granularity, data.source))
        bad = [name for name, value in metrics.items() if name != "weight_noise_auc" and not math.isfinite(value)]
        if bad:
            raise NumericalError(f"non-finite {', '.join(bad)} at step {self.step_count}")
        return metrics

    def fit(
        self,
        steps: int,
        eval_every: int,
        on_eval: Callable[[int, dict[str, float]], None] = lambda step, metrics: None,
        progress: Callable[[int], None] = lambda advance: None,
    ) -> dict[str, float]:
        """Train for ``steps`` steps, evaluating every ``eval_every`` and at the end."""
        running = torch.zeros(2, device=self.last_weights.device)  # summed on the device: no sync per step
        count = 0
        end = self.step_count + steps
        metrics: dict[str, float] = {}
        for _ in range(steps):
            source_loss, target_loss = self.step()
            running += torch.stack([source_loss, target_loss]).to(running)
            count += 1
            progress(1)
            if self.step_count % eval_every == 0 or self.step_count == end:
                metrics = self.evaluate()
                metrics["source_loss"] = (running[0] / count).item()
                metrics["train_target_loss"] = (running[1] / count).item()
                if not math.isfinite(metrics["source_loss"]):
                    raise NumericalError(f"non-finite source loss at step {self.step_count}")
                running.zero_()
                count = 0
                on_eval(self.step_count, metrics)
        return metrics
