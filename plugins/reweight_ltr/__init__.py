"""Learning-to-Reweight (Ren, Zeng, Yang & Urtasun, "Learning to Reweight Examples for Robust
Deep Learning", ICML 2018).

No state is kept: every step, each example's weight is the negative of its hypergradient
taken at w = 0, clipped at zero and normalised over the batch,

    w̃ⱼ = max(−dL_t/dwⱼ, 0) / Σₖ max(−dL_t/dwₖ, 0),

with uniform weights when every entry is zero. (Ren et al. take no step at all in that case;
a uniform step keeps training moving, and is what we chose.) The engine's inner loss is the batch *mean* of
wⱼℓⱼ, so the weights it receives are B·w̃ⱼ, which makes the inner loss Ren et al.'s Σ w̃ⱼ ℓⱼ.
Because there are no standing weights, the look-ahead is taken at w = 0, where θ' = θ: the
one-step method's ``current`` and ``lookahead`` coincide, as in the paper. With a granularity
coarser than per-sample, a slot's weight comes from the sum of its members' hypergradients in
the batch. With an unrolled look-ahead only the current batch's hypergradients are used.
"""

from __future__ import annotations

import torch

from reweight import Strategy, hookimpl


class LearningToReweight(Strategy):
    """Per-batch weights from the clipped, normalised negative hypergradient."""

    weights_need_losses = False

    def weights(self, batch, losses):
        return None  # nothing in force outside an update

    def update(self, gradients):
        current = gradients[0]
        sums, inverse = self.granularity.batch_slot_sums(current.batch, current.grad)
        raw = (-sums).clamp_min(0)[inverse]
        total = raw.sum()
        uniform = torch.full_like(raw, 1.0 / len(raw))
        helps = total > 0
        normalised = torch.where(helps, raw / torch.where(helps, total, 1.0), uniform)
        return normalised * len(raw)


@hookimpl
def register_strategies(register):
    register("learning_to_reweight", LearningToReweight)
