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
5. target-head step on φᵗ;
6. the learning-rate schedulers, if any, advance.

A strategy may also let the target loss train θ directly (``representation_target_weight``,
0 for the bilevel methods); the baselines use it for joint, target-only and fine-tuned training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from reweight.data import BatchSampler, BilevelData
from reweight.errors import NumericalError
from reweight.hypergrad import Hypergradient, HypergradientProblem
from reweight.metrics import accuracy, slot_summary, weight_summary
from reweight.models import BilevelNet, buffers_preserved
from reweight.strategy import Strategy


@dataclass(frozen=True)
class TrainSettings:
    """The engine's knobs (validated upstream by ``reweight.config.TrainConfig``)."""

    source_batch_size: int = 32
    target_batch_size: int | None = None
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    target_lr: float = 0.1
    # builds each optimizer's learning-rate scheduler (None: a constant rate)
    schedule: Callable[[torch.optim.Optimizer], LRScheduler | None] = lambda optimizer: None


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

    def check_finite(self) -> None:
        """Raise ``NumericalError`` if a loss (hence a weight) was NaN or infinite at any step
        so far. One host sync: call it at evaluations and before checkpoints, not per step."""
        bad = int(self.first_bad_step)
        if bad >= 0:
            raise NumericalError(
                f"the loss became NaN or infinite at step {bad + 1} (stopped at step {self.step_count}); "
                "lower train.lr or the strategy's learning rate"
            )

    def state_dict(self) -> dict[str, Any]:
        """Everything that changes while training, so that a rebuilt engine (same config and
        seed) continues exactly: parameters and buffers, optimizers and their learning-rate
        schedulers, the strategy's state, the samplers' positions and the RNG."""
        rng = {"torch": torch.get_rng_state()}
        if self.last_weights.is_cuda:
            rng["cuda"] = torch.cuda.get_rng_state(self.last_weights.device)
        return {
            "step": self.step_count,
            "model": self.model.state_dict(),
            "inner_optimizer": self.inner_optimizer.state_dict(),
            "target_optimizer": self.target_optimizer.state_dict(),
            "schedulers": [scheduler.state_dict() for scheduler in self.schedulers],
            "strategy": self.strategy.state_dict(),
            "source_sampler": self.source_sampler.state_dict(),
            "target_sampler": self.target_sampler.state_dict(),
            "last_weights": self.last_weights,
            "loss_sums": self.loss_sums,
            "loss_count": self.loss_count,
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = state["step"]
        self.model.load_state_dict(state["model"])
        self.inner_optimizer.load_state_dict(state["inner_optimizer"])
        self.target_optimizer.load_state_dict(state["target_optimizer"])
        saved_schedulers = state.get("schedulers", [])  # none in checkpoints from before schedules
        if len(saved_schedulers) != len(self.schedulers):
            raise ValueError(f"it was saved with {len(saved_schedulers)} learning-rate schedulers, "
                             f"this run has {len(self.schedulers)}")
        for scheduler, saved in zip(self.schedulers, saved_schedulers, strict=True):
            scheduler.load_state_dict(saved)
        self.strategy.load_state_dict(state["strategy"])
        self.source_sampler.load_state_dict(state["source_sampler"])
        self.target_sampler.load_state_dict(state["target_sampler"])
        self.last_weights.copy_(state["last_weights"])
        self.loss_sums.copy_(state["loss_sums"])
        self.loss_count = state["loss_count"]
        self.first_bad_step.fill_(-1)
        self._weights = None
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.last_weights.is_cuda:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.last_weights.device)

    @torch.no_grad()
    def source_weights(self) -> torch.Tensor:
        """The weight of every source example under the strategy's current state (or the last
        weight each was trained with, for strategies without standing weights). Computed once per
        state: the last evaluation and the weights file share one pass over the source set."""
        if self._weights is not None:
            return self._weights.clone()
        self.model.eval()
        source = self.data.source
        everything = source.all()
        chunks = everything.index.split(4096)  # one forward over a whole image set would hold all activations
        losses = torch.cat([self.model.source_losses(source.gather(chunk)) for chunk in chunks])
        weights = self.strategy.weights(everything, losses)
        self._weights = self.last_weights.clone() if weights is None else weights.float()
        return self._weights.clone()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.check_finite()
        model, data = self.model, self.data
        model.eval()
        target = data.target.all()
        metrics = {
            "test_accuracy": accuracy(model.predict_target(data.test.x), data.test.y),
            "target_accuracy": accuracy(model.predict_target(target.x), target.y),
            "target_loss": model.target_loss(target).item(),
        }
        weights = self.source_weights()
        if not bool(torch.isfinite(weights).all()):
            raise NumericalError(f"a source weight is NaN or infinite at step {self.step_count}")
        metrics.update(weight_summary(weights, data.source.meta.get("corrupted")))
        metrics.update(slot_summary(weights, self.strategy.granularity, data.source))
        bad = [name for name, value in metrics.items() if name != "weight_noise_auc" and not math.isfinite(value)]
        if bad:
            raise NumericalError(f"non-finite {', '.join(bad)} at step {self.step_count}")
        return metrics

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
