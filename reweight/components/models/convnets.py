"""The paper's convolutional networks, each split into a representation θ and two linear heads.

- ``digits`` — for SVHN -> MNIST style digit transfer: conv 5×5 (32) – max-pool – ReLU –
  conv 5×5 (48) – max-pool – ReLU – fc 100 – ReLU – fc 100 – ReLU, then the heads. The
  digit network of Ganin & Lempitsky's domain-adaptation experiments, which the SOSELETO
  paper's SVHN -> MNIST comparison builds on; widths are options.
- ``cifar10_quick`` — Caffe's ``cifar10_quick``: conv 5×5 (32, pad 2) – max-pool 3/2 – ReLU –
  conv 5×5 (32) – ReLU – avg-pool 3/2 – conv 5×5 (64) – ReLU – avg-pool 3/2 – fc 64, then the
  classifier (here: one linear head per label space). Caffe rounds pooled sizes up, as
  ``ceil_mode=True`` does: 32 -> 16 -> 8 -> 4. As in Caffe, there is no non-linearity between
  the 64-unit layer and the classifier.

Both start with ``InputScale`` (uint8 pixels to standardised floats, on the device) and
infer their input channels and size from the data.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from reweight.components.models.heads import build_heads, input_layers
from reweight.core.data import BilevelData
from reweight.core.models import BilevelNet


def _flat_size(layers: nn.Sequential, example: torch.Tensor) -> int:
    with torch.no_grad():
        return layers(example[:1].to(torch.float32)).shape[1]


class DigitsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channels: list[PositiveInt] = Field(default=[32, 48], min_length=2, max_length=2,
                                        description="Channels of the two 5×5 conv layers.")
    hidden: list[PositiveInt] = Field(default=[100, 100], min_length=1, description="Widths of the fully connected layers.")
    shared_head: bool = Field(False, description="One head for source and target (same label space).")


def build_digits(options: DigitsOptions, data: BilevelData) -> BilevelNet:
    channels = data.source.sample_inputs().shape[1]
    first, second = options.channels
    convs = nn.Sequential(
        nn.Conv2d(channels, first, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(first, second, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(),
    )
    width = _flat_size(convs, data.source.sample_inputs())
    fully: list[nn.Module] = []
    for hidden in options.hidden:
        fully += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return build_heads(nn.Sequential(*input_layers(data), *convs, *fully), width, data, options.shared_head)


class CifarQuickOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fc: PositiveInt = Field(64, description="Width of the fully connected layer before the classifier.")
    shared_head: bool = Field(False, description="One head for source and target (same label space).")


def build_cifar10_quick(options: CifarQuickOptions, data: BilevelData) -> BilevelNet:
    channels = data.source.sample_inputs().shape[1]
    convs = nn.Sequential(
        nn.Conv2d(channels, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(),
        nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Flatten(),
    )
    width = _flat_size(convs, data.source.sample_inputs())
    return build_heads(nn.Sequential(*input_layers(data), *convs, nn.Linear(width, options.fc)), options.fc, data,
                       options.shared_head)
