"""The real inner optimizer, replayed: the updates of ``torch.optim.SGD``, ``Adam`` and ``AdamW``
written out so that they can be differentiated (unrolled look-aheads), applied to copies
(one-step look-aheads) and differentiated with respect to this step's gradient (the one-step
method's factor D).

Every method reads the optimizer's own param groups and state (learning rate, momentum,
dampening, Nesterov flag, weight decay, betas, eps, momentum buffers, Adam's step count and
moments), so a look-ahead lands where the real step will; none of them changes that state.
Flags whose update is not replayed here (``maximize``, ``amsgrad``, ``capturable``,
``differentiable``, ``fused``) are refused rather than approximated.
"""

from __future__ import annotations

from typing import Any

import torch

from reweight.core.errors import ConfigError
from reweight.core.models import BilevelNet

SUPPORTED = "SGD, Adam and AdamW"
REFUSED_FLAGS = ("maximize", "amsgrad", "capturable", "differentiable", "fused")
State = dict[str, Any]  # one parameter's state: momentum_buffer (SGD); step, exp_avg, exp_avg_sq (Adam)


class Replay:
    """The real optimizer's group and state for each inner parameter, by full name.

    ``kind`` is ``"sgd"`` or ``"adam"`` (AdamW is Adam with decoupled weight decay, as in torch).
    """

    def __init__(self, model: BilevelNet, optimizer: torch.optim.Optimizer) -> None:
        if isinstance(optimizer, torch.optim.SGD):
            self.kind = "sgd"
        elif isinstance(optimizer, torch.optim.Adam):  # AdamW included
            self.kind = "adam"
        else:
            raise ConfigError(f"hypergrad: look-aheads replay {SUPPORTED}, not {type(optimizer).__name__}")
        names = {id(p): name for name, p in model.inner_params().items()}
        self.groups: dict[str, dict] = {}
        self.initial: dict[str, State] = {}
        for group in optimizer.param_groups:
            for flag in REFUSED_FLAGS:
                if group.get(flag):
                    raise ConfigError(f"hypergrad: look-aheads do not replay {type(optimizer).__name__} with "
                                      f"{flag}=True; set it to False")
            if self.kind == "adam":
                group = adam_group(optimizer, group)
            for p in group["params"]:
                if id(p) in names:
                    self.groups[names[id(p)]] = group
                    self.initial[names[id(p)]] = read_state(self.kind, optimizer.state.get(p, {}))

    def states(self) -> dict[str, State]:
        """A fresh copy of the per-parameter states to step with (the tensors are the real
        ones, shared: the updates below build new tensors and never write into them)."""
        return {name: dict(state) for name, state in self.initial.items()}

    def update(self, name: str, param: torch.Tensor, grad: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One parameter's next value and state after the real step with gradient ``grad``."""
        rule = sgd_update if self.kind == "sgd" else adam_update
        return rule(param, grad, state, self.groups[name])

    def step(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor | None],
             states: dict[str, State]) -> None:
        """One real step, differentiable; replaces the entries of ``params`` and ``states``
        with new tensors (the tensors passed in are never modified). A parameter without a
        gradient is skipped, as the real optimizer skips a parameter whose ``.grad`` is None."""
        for name, grad in grads.items():
            if grad is not None:
                params[name], states[name] = self.update(name, params[name], grad, states[name])

    @property
    def needs_gradient(self) -> bool:
        """Whether the step's derivative with respect to its gradient depends on the gradient
        (Adam's does; SGD's is a constant)."""
        return self.kind == "adam"

    def moves_without_gradient(self) -> bool:
        """Whether the step moves parameters even when the weights are all 0 (a zero
        gradient): momentum with a live buffer, Adam with live moments, weight decay."""
        for name, group in self.groups.items():
            state = self.initial[name]
            if group["weight_decay"]:
                return True
            if self.kind == "sgd" and group["momentum"] and state["momentum_buffer"] is not None:
                return True
            if self.kind == "adam" and state["exp_avg"] is not None:
                return True
        return False

    def gradient_derivative(self, name: str, param: torch.Tensor, grad: torch.Tensor | None) -> float | torch.Tensor:
        """D with ∂θ'/∂g = −D elementwise, for one parameter at gradient ``grad``: how far the
        step moves it back per unit of this step's loss gradient. A constant for SGD; for Adam a
        tensor that depends on ``grad`` (None: the parameter gets no gradient and stays put)."""
        group, state = self.groups[name], self.initial[name]
        if self.kind == "sgd":
            return sgd_gradient_scale(group, state)
        if grad is None:
            return 0.0
        return adam_gradient_derivative(param, grad, state, group)


def adam_group(optimizer: torch.optim.Optimizer, group: dict) -> dict:
    """An Adam param group with ``decoupled_weight_decay`` spelt out: AdamW's decay (torch's
    ``AdamW``, or ``Adam(decoupled_weight_decay=True)``) or Adam's L2 decay."""
    decoupled = isinstance(optimizer, torch.optim.AdamW) or bool(group.get("decoupled_weight_decay"))
    return {**group, "decoupled_weight_decay": decoupled}


def read_state(kind: str, state: dict) -> State:
    """A parameter's state as the replay keeps it (the step count as a Python number, as torch
    reads it for the bias correction; None for moments the first step will create)."""
    if kind == "sgd":
        return {"momentum_buffer": state.get("momentum_buffer")}
    return {"step": float(state["step"]) if "step" in state else 0.0,
            "exp_avg": state.get("exp_avg"), "exp_avg_sq": state.get("exp_avg_sq")}


def sgd_update(param: torch.Tensor, grad: torch.Tensor, state: State, group: dict) -> tuple[torch.Tensor, State]:
    """``torch.optim.SGD``'s step for one parameter."""
    if group["weight_decay"]:
        grad = grad + group["weight_decay"] * param
    buffer = state["momentum_buffer"]
    if group["momentum"]:
        buffer = grad if buffer is None else group["momentum"] * buffer + (1 - group["dampening"]) * grad
        grad = grad + group["momentum"] * buffer if group["nesterov"] else buffer
    return param - group["lr"] * grad, {"momentum_buffer": buffer}


def sgd_gradient_scale(group: dict, state: State) -> float:
    """d(parameter update)/d(gradient) for one parameter in the next SGD step: λ for plain SGD;
    momentum's history does not depend on this step's weights, but dampening and Nesterov scale
    the new gradient's share."""
    momentum, dampening = group["momentum"], group["dampening"]
    if not momentum:
        return group["lr"]
    share = 1.0 if state["momentum_buffer"] is None else 1 - dampening  # the first step copies the gradient
    return group["lr"] * (1 + momentum * share if group["nesterov"] else share)


def _moments(param: torch.Tensor, grad: torch.Tensor, state: State, group: dict):
    """What Adam's step computes before its update: the decayed parameter, the gradient with L2
    decay, the new moments and the bias corrections, in torch's order of operations."""
    beta1, beta2 = group["betas"]
    lr, weight_decay = group["lr"], group["weight_decay"]
    step = state["step"] + 1  # the step count the real step will use
    if weight_decay:
        if group["decoupled_weight_decay"]:  # AdamW: θ ← θ(1 − λ·wd), outside the moments
            param = param.mul(1 - lr * weight_decay)
        else:  # Adam: L2 decay, added to the gradient
            grad = grad.add(param, alpha=weight_decay)
    exp_avg = torch.zeros_like(param) if state["exp_avg"] is None else state["exp_avg"]
    exp_avg_sq = torch.zeros_like(param) if state["exp_avg_sq"] is None else state["exp_avg_sq"]
    exp_avg = exp_avg.lerp(grad, 1 - beta1)
    exp_avg_sq = exp_avg_sq.mul(beta2).addcmul(grad, grad, value=1 - beta2)
    correction1 = 1 - beta1**step
    correction2_sqrt = (1 - beta2**step) ** 0.5
    return param, grad, exp_avg, exp_avg_sq, step, lr / correction1, correction2_sqrt


def adam_update(param: torch.Tensor, grad: torch.Tensor, state: State, group: dict) -> tuple[torch.Tensor, State]:
    """``torch.optim.Adam``'s (and ``AdamW``'s) step for one parameter, without amsgrad: bias
    correction with the coming step count, eps outside the square root."""
    param, _, exp_avg, exp_avg_sq, step, step_size, correction2_sqrt = _moments(param, grad, state, group)
    denom = (_sqrt(exp_avg_sq) / correction2_sqrt).add(group["eps"])
    return param.addcdiv(exp_avg, denom, value=-step_size), {"step": step, "exp_avg": exp_avg,
                                                             "exp_avg_sq": exp_avg_sq}


def adam_gradient_derivative(param: torch.Tensor, grad: torch.Tensor, state: State, group: dict) -> torch.Tensor:
    """D = −∂θ'/∂g for Adam, elementwise (each coordinate's update depends on its own gradient
    only). With g̃ = g (+ wd·θ for Adam's L2 decay; dg̃/dg = 1), m = β₁m₀ + (1−β₁)g̃,
    u = β₂u₀ + (1−β₂)g̃², c₁ = 1 − β₁ᵗ, c₂ = 1 − β₂ᵗ and d = √u/√c₂ + ε, the step is
    θ' = θ̂ − (λ/c₁) m/d (θ̂ = θ, or θ(1 − λ·wd) for AdamW, which does not depend on g), so

        D = (λ/c₁) [(1−β₁)/d − m (1−β₂) g̃ / (√c₂ √u d²)].

    Where u = 0 (every gradient so far, this one included, was 0, so m = 0) the second term's
    limit is 0."""
    _, grad, exp_avg, exp_avg_sq, _, step_size, correction2_sqrt = _moments(param, grad, state, group)
    beta1, beta2 = group["betas"]
    root = exp_avg_sq.sqrt()
    denom = root / correction2_sqrt + group["eps"]
    ratio = torch.where(root > 0, grad / torch.where(root > 0, root, 1.0), 0.0)
    return step_size * ((1 - beta1) - exp_avg * (1 - beta2) * ratio / (correction2_sqrt * denom)) / denom


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    """√x, whose derivative at 0 is taken as 0 instead of ∞. x is a running mean of squared
    gradients, 0 only where every gradient so far was 0; there the chain rule multiplies that
    derivative by 0 (the gradient), and ∞·0 would make the hypergradient NaN."""
    if not x.requires_grad:
        return x.sqrt()
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, 1.0).sqrt(), 0.0)
