"""The two model optimizers the engine builds: the inner one (θ and φˢ, trained by the weighted
source loss) and the target head's (φᵗ). Each is SGD, Adam or AdamW from ``torch.optim``; the
hypergradient methods replay whichever the inner one is."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from reweight.core.errors import ConfigError

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


@dataclass(frozen=True)
class OptimizerSettings:
    """One optimizer's kind and settings; its learning rate is the engine's (``lr`` or
    ``target_lr``), so that schedules apply to every kind alike.

    ``momentum`` (SGD only) and ``weight_decay`` default to the engine's own ``momentum`` and
    ``weight_decay`` (the target head's weight decay to 0), which is what they were before
    optimizers could be chosen."""

    name: str = "sgd"
    momentum: float | None = None
    weight_decay: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    @classmethod
    def of(cls, value: OptimizerSettings | str) -> OptimizerSettings:
        """Settings from themselves or from a bare name (``"adam"``)."""
        return cls(value) if isinstance(value, str) else value


def build_optimizer(params: Iterable[torch.nn.Parameter], lr: float, settings: OptimizerSettings | str,
                    momentum: float, weight_decay: float, role: str = "optimizer") -> torch.optim.Optimizer:
    """The torch optimizer ``settings`` describe; ``momentum`` and ``weight_decay`` are used where
    the settings leave them unset. ``role`` names the setting in errors (``optimizer``,
    ``target_optimizer``)."""
    settings = OptimizerSettings.of(settings)
    if settings.name not in OPTIMIZERS:
        raise ConfigError(f"train.{role}: unknown optimizer {settings.name!r} (supported: {', '.join(OPTIMIZERS)})")
    weight_decay = weight_decay if settings.weight_decay is None else settings.weight_decay
    if settings.name == "sgd":
        momentum = momentum if settings.momentum is None else settings.momentum
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if settings.momentum is not None:
        raise ConfigError(f"train.{role}: momentum is only for name: sgd, not name: {settings.name}")
    return OPTIMIZERS[settings.name](params, lr=lr, betas=tuple(settings.betas), eps=settings.eps,
                                     weight_decay=weight_decay)
