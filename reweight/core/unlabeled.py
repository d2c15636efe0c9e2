"""Unlabeled target examples: a term added to the target loss on inputs of the target task
whose labels are unknown.

    L_t = mean ℓ(labelled target batch) + U(unlabeled target batch),

U computed through the target head like the labelled loss. Because it is part of L_t it trains
the target head φᵗ, reaches θ wherever the target loss does (a strategy's
``representation_target_weight``: fine-tuning, joint and target-only training), and reaches
the weights through the hypergradient v = ∇_θ L_t in every method. The engine draws an
unlabeled batch each step beside the target batch (``Batch.unlabeled``); evaluation's target
loss is the labelled one alone. Terms are plugins (the ``register_unlabeled`` hook); the
built-in ones are in ``reweight.components.unlabeled``.
"""

from __future__ import annotations

import torch


class UnlabeledLoss:
    """U: logits of an unlabeled batch -> a scalar, already scaled by the term's weight."""

    batch_size: int = 128  # unlabeled examples drawn per step

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
