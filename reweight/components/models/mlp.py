"""The MLP model: a tanh network on flat inputs, for the synthetic sets and MNIST-sized images."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from reweight.components.models.heads import build_heads, input_layers
from reweight.core.data import BilevelData
from reweight.core.models import BilevelNet


class MLPOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden: list[PositiveInt] = Field(default=[32, 32], min_length=1, description="Widths of the representation's layers.")
    shared_head: bool = Field(False, description="One classifier for source and target (same label space).")


def build_mlp(options: MLPOptions, data: BilevelData) -> BilevelNet:
    """A tanh MLP on flat inputs: the representation is every hidden layer, heads are linear.
    uint8 images are scaled and standardised first (``InputScale``)."""
    layers: list[nn.Module] = [*input_layers(data), nn.Flatten()]
    width = data.source.sample_inputs()[0].numel()
    for hidden in options.hidden:
        layers += [nn.Linear(width, hidden), nn.Tanh()]
        width = hidden
    return build_heads(nn.Sequential(*layers), width, data, options.shared_head)
