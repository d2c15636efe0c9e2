"""Learning-rate schedules of the two model optimizers: torch's own schedulers, stepped once per
engine step. The look-ahead of every hypergradient method reads the optimizer's current rate, so
a scheduled rate is also the rate the weights are learned through."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, MultiStepLR

from reweight.experiment.config import ScheduleConfig


def scheduler(config: ScheduleConfig, steps: int, optimizer: Optimizer) -> LRScheduler | None:
    """The scheduler of ``optimizer`` over a run of ``steps`` steps; None for a constant rate,
    so that constant-rate training (and its checkpoints) is exactly what it was without one."""
    if config.kind == "cosine":  # from the rate set in the config down to final × that rate
        eta_min = config.final * optimizer.param_groups[0]["lr"]
        return CosineAnnealingLR(optimizer, T_max=steps, eta_min=eta_min)
    if config.kind == "step":
        return MultiStepLR(optimizer, milestones=config.milestones, gamma=config.gamma)
    return None
