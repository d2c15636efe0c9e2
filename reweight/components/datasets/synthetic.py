"""The paper's synthetic 2-D experiment: a noisy source and a small clean target of one task.

Two interleaved half-moons (a boundary a linear model cannot draw, so memorising flipped
labels actually hurts). The source has a fraction of its labels flipped to the other class,
and records which, so that ``weight_noise_auc`` can check that they get low weights.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field

from reweight.core.data import BilevelData, Split


class Synthetic2DOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_source: int = Field(500, ge=2, description="Source points.")
    n_target: int = Field(50, ge=2, description="Clean target points.")
    n_test: int = Field(2000, ge=2, description="Clean test points.")
    noise_rate: float = Field(0.2, ge=0.0, le=1.0, description="Fraction of source labels flipped.")
    spread: float = Field(0.15, ge=0.0, description="Gaussian jitter around the moons.")


def two_moons(n: int, spread: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n) % 2
    angle = torch.rand(n, generator=generator) * math.pi
    upper = torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    lower = torch.stack([1 - torch.cos(angle), 0.5 - torch.sin(angle)], 1)
    x = torch.where(y[:, None] == 0, upper, lower)
    x = x + spread * torch.randn(n, 2, generator=generator)
    x = (x - torch.tensor([0.5, 0.25])) / torch.tensor([0.87, 0.5])  # roughly standardised
    return x.float(), y


def flip_labels(y: torch.Tensor, rate: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip exactly round(rate·n) binary labels, chosen at random; return (labels, corrupted mask)."""
    corrupted = torch.zeros(len(y), dtype=torch.bool)
    corrupted[torch.randperm(len(y), generator=generator)[: round(rate * len(y))]] = True
    return torch.where(corrupted, 1 - y, y), corrupted


def build_synthetic_2d(options: Synthetic2DOptions, seed: int) -> BilevelData:
    generator = torch.Generator().manual_seed(seed)
    x_source, y_clean = two_moons(options.n_source, options.spread, generator)
    y_source, corrupted = flip_labels(y_clean, options.noise_rate, generator)
    x_target, y_target = two_moons(options.n_target, options.spread, generator)
    x_test, y_test = two_moons(options.n_test, options.spread, generator)
    return BilevelData(
        source=Split(x_source, y_source, {"corrupted": corrupted}),
        target=Split(x_target, y_target),
        test=Split(x_test, y_test),
        source_classes=2,
        target_classes=2,
    )
