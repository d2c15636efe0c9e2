"""Baselines without learned weights, for the paper's tables.

- ``uniform`` (alias ``source_only``): every source weight 1. θ and φˢ train on the plain
  source loss; φᵗ trains on the target set on top of that representation, so the comparison
  with a reweighting strategy isolates the effect of the weights.
- ``joint``: source and target train θ together: weights 1 on the source loss, plus the
  target loss on θ (``target_weight``).
- ``target_only``: source weights 0; the target loss alone trains θ and φᵗ.
- ``fine_tune``: ``source_only`` for the first ``source_steps`` steps, then ``target_only``.

None computes a hypergradient. How strongly the target loss trains θ is the strategy
contract's ``representation_target_weight``; the engine knows none of these by name.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from reweight import Strategy, hookimpl


class Uniform(Strategy):
    """All weights 1, no hypergradient computed."""

    needs_hypergradient = False
    weights_need_losses = False

    def weights(self, batch, losses):
        return torch.ones(len(batch), device=batch.y.device)


class JointOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target_weight: float = Field(1.0, gt=0, description="c: θ descends the source loss plus c times the target loss.")


class Joint(Uniform):
    """Source (weights 1) and target losses both train θ."""

    Options = JointOptions

    def representation_target_weight(self):
        return self.options.target_weight


class TargetOnly(Strategy):
    """Source weights 0: only the target set trains θ (and φᵗ)."""

    needs_hypergradient = False
    weights_need_losses = False

    def weights(self, batch, losses):
        return torch.zeros(len(batch), device=batch.y.device)

    def representation_target_weight(self):
        return 1.0


class FineTuneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_steps: int = Field(ge=0, description="Steps of source-only training before training on the target only.")


class FineTune(Strategy):
    """Source-only training, then target-only training from that representation."""

    Options = FineTuneOptions
    needs_hypergradient = False
    weights_need_losses = False

    def __init__(self, options, granularity, device) -> None:
        super().__init__(options, granularity, device)
        self.on_source = True

    def begin_step(self, step):
        self.on_source = step < self.options.source_steps

    def weights(self, batch, losses):
        return torch.full((len(batch),), float(self.on_source), device=batch.y.device)

    def representation_target_weight(self):
        return 0.0 if self.on_source else 1.0


@hookimpl
def register_strategies(register):
    register("uniform", Uniform)
    register("source_only", Uniform)
    register("joint", Joint)
    register("target_only", TargetOnly)
    register("fine_tune", FineTune)
