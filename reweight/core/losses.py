"""The per-example loss ℓ: ``loss(logits, batch)`` returns one loss per example of the batch.

The weighted source loss is (1/B) Σⱼ wⱼ ℓⱼ and the target loss the mean of ℓ over the target
batch, whatever ℓ is; the hypergradient methods only ever see the per-example losses, so any
differentiable ℓ works with every method. Cross-entropy of class labels is the default; a
plugin (the ``register_losses`` hook) or any Python callable may supply another, e.g. binary
cross-entropy for multi-label targets.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from reweight.core.data import Batch

PerExampleLoss = Callable[[torch.Tensor, Batch], torch.Tensor]  # (logits, batch) -> B losses


class Loss:
    """A per-example loss and its batch mean (which a loss may compute its own way)."""

    def __call__(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def mean(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self(logits, batch).mean()


class CallableLoss(Loss):
    """Any ``(logits, batch) -> per-example losses`` callable, as a ``Loss``."""

    def __init__(self, function: PerExampleLoss) -> None:
        self.function = function

    def __call__(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.function(logits, batch)


class CrossEntropy(Loss):
    """Cross-entropy of class labels ``batch.y``, optionally with label smoothing s: the target
    distribution puts 1 − s on the label and s spread evenly over the classes, as
    ``F.cross_entropy(..., label_smoothing=s)`` does. Classes whose logits are −∞ (another
    task's slice of a per-task source head) are not classes of that example, so the smoothing
    is spread over the example's own classes only."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def __call__(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        if not self.label_smoothing:
            return F.cross_entropy(logits, batch.y, reduction="none")
        log_p = F.log_softmax(logits, dim=1)
        nll = -log_p.gather(1, batch.y[:, None]).squeeze(1)
        own = torch.isfinite(logits)
        uniform = -torch.where(own, log_p, 0.0).sum(1) / own.sum(1)
        return (1 - self.label_smoothing) * nll + self.label_smoothing * uniform

    def mean(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        if not self.label_smoothing:  # torch's own mean: what the target loss always was
            return F.cross_entropy(logits, batch.y)
        return self(logits, batch).mean()


def as_loss(loss: Loss | PerExampleLoss) -> Loss:
    """A ``Loss`` from itself or from a plain callable."""
    if isinstance(loss, Loss):
        return loss
    if not callable(loss):
        raise TypeError(f"a loss must be callable as loss(logits, batch), got {type(loss).__name__}")
    return CallableLoss(loss)
