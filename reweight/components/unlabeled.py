"""The built-in unlabeled-target terms (``reweight.core.unlabeled``):

- ``entropy``: μ · mean Shannon entropy of the target head's predictions, so that the head
  and the weights favour a representation where unlabeled target inputs fall far from the
  decision boundaries (entropy minimisation, Grandvalet & Bengio);
- ``pseudo_label``: μ · cross-entropy to the head's own prediction on the unlabeled inputs it
  is at least ``threshold`` sure of, summed over those and divided by the batch size (confident
  pseudo-labels, as in FixMatch without augmentation); the pseudo-labels carry no gradient.

The SOSELETO slides report leveraging unlabeled MNIST without stating the term; these are our
choices, not the paper's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from reweight.core.unlabeled import UnlabeledLoss


class UnlabeledOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: float = Field(0.1, gt=0, description="μ, the term's weight beside the labelled target loss.")
    batch_size: int = Field(128, ge=1, description="Unlabeled target examples drawn per step.")


class PseudoLabelOptions(UnlabeledOptions):
    weight: float = Field(1.0, gt=0, description="μ, the term's weight beside the labelled target loss.")
    threshold: float = Field(0.95, gt=0, lt=1, description="Least predicted probability for a pseudo-label.")


class Entropy(UnlabeledLoss):
    def __init__(self, options: UnlabeledOptions) -> None:
        self.weight, self.batch_size = options.weight, options.batch_size

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1)
        return -self.weight * (log_p.exp() * log_p).sum(1).mean()


class PseudoLabel(UnlabeledLoss):
    def __init__(self, options: PseudoLabelOptions) -> None:
        self.weight, self.batch_size, self.threshold = options.weight, options.batch_size, options.threshold

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            confidence, labels = F.softmax(logits, dim=1).max(1)
            sure = (confidence >= self.threshold).to(logits.dtype)
        losses = F.cross_entropy(logits, labels, reduction="none")
        return self.weight * (losses * sure).sum() / len(logits)
