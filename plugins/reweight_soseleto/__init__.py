"""SOSELETO (Litany & Freedman, "Source Selection for Target Optimization").

One weight αᵢ ∈ [0, 1] per granularity slot, initialised at ``init``. Just before the
parameter step that uses them, the weights of the batch's slots take one projected gradient
step on the target loss:

    α ← clip_[lower, upper](α − λ_α · dL_t/dα),   dL_t/dαⱼ = −(λ_p/B) ∇_θ ℓⱼ · ∇_θ L_t,

so each example's weight grows with the agreement between its own loss gradient and the
target loss gradient. A slot shared by several examples (per-group, per-task), or met in
several batches of an unrolled look-ahead, receives the sum of all its hypergradients.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from reweight import Strategy, hookimpl


class SoseletoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(1.0, gt=0, description="λ_α, the step size of the weights.")
    init: float = Field(0.5, ge=0, description="Initial weight of every slot (the authors use 0.5).")
    lower: float = Field(0.0, ge=0, description="Lower clip bound of the weights.")
    upper: float = Field(1.0, gt=0, description="Upper clip bound of the weights.")
    target_weight: float = Field(
        0.0,
        ge=0,
        description="c: θ also descends c times the target loss directly (0, the paper's method: "
        "the target reaches θ only through the weights).",
    )

    @model_validator(mode="after")
    def _bounds(self) -> SoseletoOptions:
        if not self.lower <= self.init <= self.upper:
            raise ValueError(f"need lower <= init <= upper, got {self.lower}, {self.init}, {self.upper}")
        return self


class Soseleto(Strategy):
    """A persistent, clipped weight table trained by projected hypergradient descent."""

    Options = SoseletoOptions
    weights_need_losses = False

    def __init__(self, options: SoseletoOptions, granularity, device) -> None:
        super().__init__(options, granularity, device)
        self.alpha = torch.full((granularity.num_slots,), options.init, device=device)

    def weights(self, batch, losses):
        return self.alpha[self.granularity.slots(batch)]

    def representation_target_weight(self):
        return self.options.target_weight

    def update(self, gradients):
        # Only the slots the look-ahead met move, so a step costs the same at any source size:
        # each batch's hypergradients are summed into its own slots, then the batches are added
        # in order (the same sums, in the same order, as a dense table of all slots would hold).
        per_batch = []
        for g in gradients:
            slots, inverse = torch.unique(self.granularity.slots(g.batch), return_inverse=True)
            sums = torch.zeros(len(slots), dtype=self.alpha.dtype, device=self.alpha.device)
            per_batch.append((slots, sums.index_add_(0, inverse, g.grad.to(self.alpha.dtype))))
        touched = torch.unique(torch.cat([slots for slots, _ in per_batch]))
        step = torch.zeros(len(touched), dtype=self.alpha.dtype, device=self.alpha.device)
        for slots, sums in per_batch:
            step.index_add_(0, torch.searchsorted(touched, slots), sums)
        moved = (self.alpha[touched] - self.options.lr * step).clamp_(self.options.lower, self.options.upper)
        self.alpha[touched] = moved
        return self.weights(gradients[0].batch, gradients[0].losses)

    def state_dict(self):
        return {"alpha": self.alpha.clone()}

    def load_state_dict(self, state):
        self.alpha.copy_(state["alpha"])


@hookimpl
def register_strategies(register):
    register("soseleto", Soseleto)
