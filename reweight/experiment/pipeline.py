"""Recipes that act on the learned weights after the bilevel phase (the ``pipeline`` section).

A run trains ``train.steps`` bilevel steps with its strategy, then each phase of the pipeline
in turn, in the same engine, so that checkpoints, resume, evaluation and model selection work
across phases unchanged:

- ``fine_tune``: the target set alone trains θ and the heads (source weights 0), from the
  representation the reweighted source built — fine-tuning, with reweighting as the first phase;
- ``filter_retrain``: the source examples with the lowest learned weights are dropped (a
  fraction, or those below a threshold); the source loss is then the mean over each batch's
  kept examples, beside the target loss (``target_weight``), from the model as initialised
  (``restart``) or from the current one.

The phases are a strategy that wraps the configured one (``PhasedStrategy``): the engine sees
only the strategy contract. The weights reported after the bilevel phase (metrics, the weights
file) stay the learned ones, frozen when it ended; what a filter kept is logged beside them.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from reweight.core.data import Batch
from reweight.core.errors import ConfigError
from reweight.core.strategy import Strategy

BILEVEL = 0  # the phase index of the configured strategy's own training


class PhasedStrategy(Strategy):
    """The configured strategy for phase 0, then the pipeline's phases (``phases``: the config's
    ``PhaseConfig`` list). ``phase`` and the frozen weights are checkpointed with the inner state."""

    def __init__(self, inner: Strategy, phases: list) -> None:
        super().__init__(inner.options, inner.granularity, inner.device)
        self.inner, self.phases = inner, phases
        self.phase = BILEVEL
        self.learned = torch.empty(0, device=inner.device)  # every source example's weight when phase 0 ended
        self.keep = torch.empty(0, dtype=torch.bool, device=inner.device)  # the filter's kept examples
        self._initial_model: dict[str, torch.Tensor] = {}

    def remember_initial_model(self, model) -> None:
        """The model as the engine starts it (rank 0's, in a data-parallel run), for a restart;
        kept off the checkpoint state, since a rebuilt run starts from the same one."""
        self._initial_model = {name: value.detach().clone() for name, value in model.state_dict().items()}

    @property
    def wrapped(self) -> Strategy:
        """What the engine's contract checks look through to."""
        return self.inner

    @property
    def current(self):
        return None if self.phase == BILEVEL else self.phases[self.phase - 1]

    @property
    def needs_hypergradient(self) -> bool:  # type: ignore[override]
        return self.inner.needs_hypergradient if self.current is None else False

    @property
    def weights_need_losses(self) -> bool:  # type: ignore[override]
        return self.inner.weights_need_losses if self.current is None else False

    def begin_step(self, step: int) -> None:
        if self.current is None:
            self.inner.begin_step(step)

    def weights(self, batch: Batch, losses: torch.Tensor) -> torch.Tensor | None:
        phase = self.current
        if phase is None:
            return self.inner.weights(batch, losses)
        if phase.phase == "fine_tune":
            return torch.zeros(len(batch), device=batch.y.device)
        # the batch's kept examples at B / (number kept), so that the source loss is their mean:
        # training on the kept set, not on the whole set with the dropped ones as zeros
        kept = self.keep[batch.index.to(self.keep.device)].to(batch.y.device, torch.float32)
        return kept * (len(batch) / kept.sum().clamp(min=1.0))

    def reported_weights(self, batch: Batch, losses: torch.Tensor | None) -> torch.Tensor | None:
        if self.current is None:
            return self.inner.reported_weights(batch, losses)
        return self.learned[batch.index.to(self.learned.device)].to(batch.y.device)

    def representation_target_weight(self) -> float:
        phase = self.current
        if phase is None:
            return self.inner.representation_target_weight()
        return 1.0 if phase.phase == "fine_tune" else phase.target_weight

    def update(self, gradients):
        return self.inner.update(gradients)

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "phase": self.phase, "learned": self.learned.clone(),
                "keep": self.keep.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        self.phase = int(state["phase"])
        self.learned, self.keep = state["learned"].to(self.device), state["keep"].to(self.device)


def phase_ends(train_steps: int, phases: list) -> list[int]:
    """The step at which each phase ends, phase 0 (the bilevel one) first."""
    ends = [train_steps]
    for phase in phases:
        ends.append(ends[-1] + phase.steps)
    return ends


def total_steps(config) -> int:
    return phase_ends(config.train.steps, config.pipeline)[-1]


def kept_examples(learned: torch.Tensor, phase, labels: torch.Tensor | None = None) -> torch.Tensor:
    """The filter's mask: drop the ``drop_fraction`` lowest weights (ties broken by example index,
    so the same weights always drop the same examples; with weights shared by a group, ties are
    whole groups and ``drop_below`` is the rule to use) or every weight below ``drop_below``.
    ``per_class``: the fraction is dropped within each class of ``labels`` (the observed source
    labels), so that the kept set keeps the classes' proportions."""
    if phase.drop_below is not None:
        keep = learned >= phase.drop_below
    else:
        keep = torch.ones(len(learned), dtype=torch.bool)
        weights = learned.cpu()
        groups = [torch.arange(len(weights))]
        if phase.per_class:
            classes = labels.cpu()
            groups = [(classes == label).nonzero().flatten() for label in classes.unique()]
        for members in groups:
            order = members[torch.sort(weights[members], stable=True).indices]
            keep[order[: round(phase.drop_fraction * len(members))]] = False
        keep = keep.to(learned.device)
    if not bool(keep.any()):
        rule = f"drop_below {phase.drop_below}" if phase.drop_below is not None else f"drop_fraction {phase.drop_fraction}"
        raise ConfigError(f"pipeline: filter_retrain with {rule} drops every one of the {len(learned)} source examples "
                          f"(the highest learned weight is {float(learned.max()):.4g}); keep some")
    return keep


def enter_next_phase(engine) -> None:
    """Move ``engine``'s phased strategy into its next phase, at the step where the previous one
    ended: freeze the learned weights (once), draw the filter's mask, restart the model."""
    strategy: PhasedStrategy = engine.strategy
    if strategy.phase == BILEVEL:  # freeze what the bilevel phase learned, as evaluation reports it
        strategy.learned = engine.source_weights().to(strategy.device)
    strategy.phase += 1
    phase = strategy.current
    if phase.phase == "filter_retrain":
        labels = engine.data.source.y if phase.per_class else None
        strategy.keep = kept_examples(strategy.learned, phase, labels).to(strategy.device)
        if phase.restart:
            engine.model.load_state_dict(copy.deepcopy(strategy._initial_model))
            for optimizer in (engine.inner_optimizer, engine.target_optimizer):
                optimizer.state.clear()
    engine._weights = None


def filter_metrics(engine) -> dict[str, float]:
    """What the last filter kept: the fraction of the source, and of the kept examples the
    fraction whose labels were corrupted (when the benchmark knows); none before a filter."""
    keep = getattr(engine.strategy, "keep", None)
    if keep is None or not len(keep):
        return {}
    metrics = {"kept_fraction": float(keep.float().mean())}
    corrupted = engine.data.source.meta.get("corrupted")
    if corrupted is not None:
        metrics["kept_corrupted_fraction"] = float(corrupted.to(keep.device)[keep].float().mean())
    return metrics
