"""An engine's checkpoint state: everything that changes while training, so that a rebuilt
engine (same config and seed) continues exactly where the saved one stood."""

from __future__ import annotations

from typing import Any

import torch

from reweight.core.contracts import strategy_state


class EngineState:
    """The ``Engine``'s ``state_dict`` and ``load_state_dict``, over its model, optimizers,
    schedulers, strategy, samplers, running loss sums, torch's RNG and, with model selection,
    the best evaluation so far."""

    def state_dict(self) -> dict[str, Any]:
        """Everything that changes while training, so that a rebuilt engine (same config and
        seed) continues exactly: parameters and buffers, optimizers and their learning-rate
        schedulers, the strategy's state, the samplers' positions and the RNG."""
        rng = {"torch": torch.get_rng_state()}
        if self.last_weights.is_cuda:
            rng["cuda"] = torch.cuda.get_rng_state(self.last_weights.device)
        state = {
            "step": self.step_count,
            "model": self.model.state_dict(),
            "inner_optimizer": self.inner_optimizer.state_dict(),
            "target_optimizer": self.target_optimizer.state_dict(),
            "optimizer_kinds": self.optimizer_kinds(),
            "schedulers": [scheduler.state_dict() for scheduler in self.schedulers],
            "strategy": strategy_state(self.strategy),
            "source_sampler": self.source_sampler.state_dict(),
            "target_sampler": self.target_sampler.state_dict(),
            "last_weights": self.last_weights,
            "loss_sums": self.loss_sums,
            "loss_count": self.loss_count,
            "rng": rng,
        }
        if self.best is not None:  # only with model selection, so other checkpoints stay as they were
            state["best"] = self.best.state_dict()
        if self.unlabeled_sampler is not None:  # likewise, only with unlabeled target data
            state["unlabeled_sampler"] = self.unlabeled_sampler.state_dict()
        return state

    def optimizer_kinds(self) -> list[str]:
        """The classes of the inner and target-head optimizers (``SGD``, ``Adam``, ``AdamW``)."""
        return [type(self.inner_optimizer).__name__, type(self.target_optimizer).__name__]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved_kinds = state.get("optimizer_kinds", ["SGD", "SGD"])  # none in checkpoints from before optimizers
        if saved_kinds != self.optimizer_kinds():
            raise ValueError(f"it was saved with optimizers {'/'.join(saved_kinds)}, "
                             f"this run has {'/'.join(self.optimizer_kinds())}")
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
        if self.best is not None:
            if "best" not in state:
                raise ValueError("it was saved without model selection, this run has it")
            self.best.load_state_dict(state["best"])
        if self.unlabeled_sampler is not None:
            if "unlabeled_sampler" not in state:
                raise ValueError("it was saved without unlabeled target data, this run has it")
            self.unlabeled_sampler.load_state_dict(state["unlabeled_sampler"])
        self.first_bad_step.fill_(-1)
        self._weights = None
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.last_weights.is_cuda:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.last_weights.device)
