"""What the built-in models share: the input layer of image models and the linear heads."""

from __future__ import annotations

import torch
from torch import nn

from reweight.core.data import BilevelData
from reweight.core.errors import ConfigError
from reweight.core.models import BilevelNet


class InputScale(nn.Module):
    """The first layer of an image representation: uint8 pixels to standardised floats, on the
    device where the whole data set lives. ``mean`` and ``std`` (per channel, on the 0-1 scale,
    shaped to broadcast) are buffers, not parameters, so θ is only the learnable layers."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())

    @classmethod
    def fit(cls, x: torch.Tensor, chunk: int = 8192) -> InputScale:
        """Per-channel mean and std of images N×C×H×W (per feature for N×D inputs)."""
        dims = [0, 2, 3] if x.dim() == 4 else [0]
        total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        squares = torch.zeros_like(total)
        for part in x.split(chunk):
            part = part.double() / 255 if part.dtype == torch.uint8 else part.double()
            total += part.sum(dims)
            squares += (part * part).sum(dims)
        count = x.numel() // x.shape[1]
        mean = total / count
        std = (squares / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-3)
        shape = (1, -1, 1, 1) if x.dim() == 4 else (1, -1)
        return cls(mean.reshape(shape), std.reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255
        return (x - self.mean) / self.std


def input_layers(data: BilevelData) -> list[nn.Module]:
    """``[InputScale]`` for uint8 images, nothing for inputs that are already floats."""
    inputs = data.source.sample_inputs()  # the whole set in memory, a sample of a streamed one
    return [InputScale.fit(inputs)] if inputs.dtype == torch.uint8 else []


def build_heads(representation: nn.Module, width: int, data: BilevelData, shared: bool = False) -> BilevelNet:
    """Linear source and target heads on a ``width``-wide representation. ``shared``: one head
    serves both (source and target must have one label space): the target loss then trains the
    classifier the source trains, and hypergradients flow through it as well as θ."""
    source_head = nn.Linear(width, data.source_classes)
    if not shared:
        return BilevelNet(representation, source_head, nn.Linear(width, data.target_classes))
    if data.source_classes != data.target_classes or data.source_tasks:
        raise ConfigError(
            f"model.shared_head: the source has {data.source_classes} classes and the target "
            f"{data.target_classes}; one head needs one label space"
        )
    return BilevelNet(representation, source_head)
