"""The real inner optimizer, replayed: ``torch.optim.SGD``'s update written out so that it can
be differentiated (unrolled look-aheads) or applied to copies (one-step look-aheads).

Both hypergradient methods read the optimizer's own settings and momentum buffers, so a
look-ahead lands where the real step will, whatever momentum, dampening, Nesterov flag, weight
decay or per-group learning rate the optimizer has.
"""

from __future__ import annotations

import torch

from reweight.core.errors import ConfigError
from reweight.core.models import BilevelNet

Settings = dict[str, tuple[dict, "torch.Tensor | None"]]


def sgd_settings(model: BilevelNet, optimizer: torch.optim.Optimizer) -> Settings:
    """For each inner parameter (by name): its optimizer group and current momentum buffer."""
    if not isinstance(optimizer, torch.optim.SGD):
        raise ConfigError(f"hypergrad: look-aheads replay SGD, not {type(optimizer).__name__}")
    names = {id(p): name for name, p in model.inner_params().items()}
    settings = {}
    for group in optimizer.param_groups:
        if group.get("maximize"):
            raise ConfigError("hypergrad: look-aheads do not replay a maximising optimizer")
        for p in group["params"]:
            if id(p) in names:
                settings[names[id(p)]] = (group, optimizer.state.get(p, {}).get("momentum_buffer"))
    return settings


def sgd_step(params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor | None],
             buffers: dict[str, torch.Tensor | None], settings: Settings) -> None:
    """One ``torch.optim.SGD`` step, differentiable; replaces the entries of ``params`` and
    ``buffers`` with new tensors (the tensors passed in are never modified)."""
    for name, grad in grads.items():
        if grad is None:
            continue
        group = settings[name][0]
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * params[name]
        if group["momentum"]:
            buffer = buffers.get(name)
            buffer = grad if buffer is None else group["momentum"] * buffer + (1 - group["dampening"]) * grad
            buffers[name] = buffer
            grad = grad + group["momentum"] * buffer if group["nesterov"] else buffer
        params[name] = params[name] - group["lr"] * grad


def gradient_scale(settings: Settings, name: str) -> float:
    """d(parameter update)/d(gradient) for one parameter in the next step: how far the step
    moves it per unit of loss gradient (λ for plain SGD; momentum's history does not depend on
    this step's weights, but dampening and Nesterov scale the new gradient's share)."""
    group, buffer = settings[name]
    momentum, dampening = group["momentum"], group["dampening"]
    if not momentum:
        return group["lr"]
    share = 1.0 if buffer is None else 1 - dampening  # the first step copies the gradient
    return group["lr"] * (1 + momentum * share if group["nesterov"] else share)
