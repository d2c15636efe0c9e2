"""The bilevel network: a shared representation θ with a source head φˢ and a target head φᵗ.

The split matters to the method: the weighted source loss trains θ and φˢ, the target loss
trains φᵗ and (through the hypergradient) the weights, never θ directly.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn
from torch.func import functional_call

from reweight.data import Batch, BilevelData

Params = Mapping[str, torch.Tensor]


class BilevelNet(nn.Module):
    """Representation plus heads. Subclasses only build the three modules."""

    def __init__(self, representation: nn.Module, source_head: nn.Module, target_head: nn.Module) -> None:
        super().__init__()
        self.representation = representation
        self.source_head = source_head
        self.target_head = target_head
        self.register_buffer("source_label_mask", None)

    def restrict_source_labels(self, mask: torch.Tensor | None) -> None:
        """Give each source task its own head: ``mask[k]`` marks task k's slice of the source
        head's outputs. The rows of one linear layer are independent heads, and a softmax
        restricted to a task's slice is that head's own cross-entropy, so one masked layer
        computes every task's loss in one vectorised pass."""
        self.source_label_mask = mask

    def mask_source_logits(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Logits outside each example's task slice set to -inf (a no-op for a one-task source)."""
        if self.source_label_mask is None:
            return logits
        return logits.masked_fill(~self.source_label_mask[batch.meta["task"]], float("-inf"))

    def representation_params(self) -> dict[str, torch.Tensor]:
        """θ, by name, in the form ``torch.func.functional_call`` takes."""
        return dict(self.representation.named_parameters())

    def features(self, x: torch.Tensor, theta: Params | None = None) -> torch.Tensor:
        if theta is None:
            return self.representation(x)
        return functional_call(self.representation, dict(theta), (x,))

    def source_losses(self, batch: Batch, theta: Params | None = None) -> torch.Tensor:
        """Per-example source losses ℓⱼ, optionally at representation parameters ``theta``."""
        logits = self.source_head(self.features(batch.x, theta))
        return F.cross_entropy(self.mask_source_logits(logits, batch), batch.y, reduction="none")

    def target_loss(self, batch: Batch, theta: Params | None = None) -> torch.Tensor:
        """Mean target loss L_t, optionally at representation parameters ``theta``."""
        return F.cross_entropy(self.target_head(self.features(batch.x, theta)), batch.y)

    @torch.no_grad()
    def predict_target(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        return torch.cat([self.target_head(self.representation(part)).argmax(1) for part in x.split(chunk)])


class MLPOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden: list[PositiveInt] = Field(default=[32, 32], min_length=1, description="Widths of the representation's layers.")


def build_mlp(options: MLPOptions, data: BilevelData) -> BilevelNet:
    """A tanh MLP on flat inputs: the representation is every hidden layer, heads are linear."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = data.source.x[0].numel()
    for hidden in options.hidden:
        layers += [nn.Linear(width, hidden), nn.Tanh()]
        width = hidden
    return BilevelNet(nn.Sequential(*layers), nn.Linear(width, data.source_classes), nn.Linear(width, data.target_classes))
