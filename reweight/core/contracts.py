"""The rules a plugin's objects must keep where they hand something to the engine, checked
there so that a broken plugin stops at once, in one line that states the rule, instead of
failing far from the cause or training a whole run that cannot be saved or resumed.

The checks are cheap: shapes and types on every call, values (finiteness) and hidden state
on the first step only, the checkpoint round trip once before training and at each save.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from torch import nn

from reweight.core.data import Batch
from reweight.core.errors import ContractError


def describe_tensor(value: Any) -> str:
    if not isinstance(value, torch.Tensor):
        return f"a {type(value).__name__}"
    return f"a {value.dtype} tensor of shape {tuple(value.shape)} on {value.device}"


def check_weights(weights: Any, batch: Batch, method: str, first: bool, optional: bool = False) -> None:
    """Weights for ``batch`` are a floating tensor of shape (len(batch),) on the batch's device
    (``optional``: or None), finite on the first step. ``method`` names what returned them."""
    if weights is None and optional:
        return
    expected = f"a floating tensor of shape ({len(batch)},), one weight per example of the batch, on {batch.y.device}"
    problem = None
    if not isinstance(weights, torch.Tensor):
        problem = "got " + ("None" if weights is None else describe_tensor(weights))
    elif tuple(weights.shape) != (len(batch),) or not weights.is_floating_point() or weights.device != batch.y.device:
        problem = f"got {describe_tensor(weights)}"
    elif first and not bool(torch.isfinite(weights).all()):
        problem = "got NaN or infinite weights"
    if problem:
        allowed = " (or None)" if optional else ""
        raise ContractError("strategy", f"{method} must return {expected}{allowed}; {problem}")


def check_hypergradient(result: Any, source: Batch) -> None:
    """A method's result holds the source losses and one gradient per example of each batch."""
    losses, gradients = getattr(result, "losses", None), getattr(result, "gradients", None)
    if not isinstance(losses, torch.Tensor) or tuple(losses.shape) != (len(source),):
        raise ContractError("hypergradient", f"the result's losses must be one loss per source example, shape "
                            f"({len(source)},); got {describe_tensor(losses)}")
    if not gradients:
        raise ContractError("hypergradient", "the result must hold one WeightGradient per look-ahead batch, "
                            "the first for the source batch; got none")
    for position, gradient in enumerate(gradients):
        grad = getattr(gradient, "grad", None)
        size = len(gradient.batch)
        if not isinstance(grad, torch.Tensor) or tuple(grad.shape) != (size,):
            raise ContractError("hypergradient", f"gradients[{position}].grad must be dL_t/dw of each example of its "
                                f"batch, shape ({size},); got {describe_tensor(grad)}")


def check_checkpointable(state: Any, what: str, kind: str = "strategy") -> None:
    """``state`` survives the checkpoint format: ``torch.save``, then ``torch.load(weights_only=True)``,
    which admits tensors, numbers, strings and containers of them, and nothing that runs code."""
    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickling or the safe loader refused something
        where = unsafe_path(state)
        found = f"{where[0]} is {where[1]}" if where else " ".join(str(error).split())[:200]
        raise ContractError(kind, f"{what} must hold only tensors, numbers, strings and lists, tuples or dicts of "
                            f"them, so that a checkpoint can be resumed; {found}") from None


SAFE_LEAVES = (torch.Tensor, int, float, bool, str, bytes, type(None), torch.Size, torch.dtype, torch.device)


def unsafe_path(state: Any, path: str = "state_dict()") -> tuple[str, str] | None:
    """The first value in ``state`` that the checkpoint format does not admit, and what it is."""
    if isinstance(state, SAFE_LEAVES):
        return None
    if isinstance(state, dict):
        for key, value in state.items():
            if not isinstance(key, (str, int, float, bool, type(None))):
                return f"{path} key {key!r}", f"a {type(key).__module__}.{type(key).__qualname__}"
            found = unsafe_path(value, f"{path}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(state, (list, tuple)):
        for position, value in enumerate(state):
            found = unsafe_path(value, f"{path}[{position}]")
            if found:
                return found
        return None
    return path, f"a {type(state).__module__}.{type(state).__qualname__}"


def tensors_of(obj: Any, path: str = "", seen: set[int] | None = None, alive: list | None = None) -> dict[str, torch.Tensor]:
    """Every tensor an object keeps in its attributes (through containers, modules and
    optimizers), by path: the state a strategy would lose if its ``state_dict`` left it out."""
    seen = set() if seen is None else seen
    alive = [] if alive is None else alive  # temporaries stay alive, so that no id in ``seen`` is reused
    if id(obj) in seen:
        return {}
    seen.add(id(obj))
    alive.append(obj)
    if isinstance(obj, torch.Tensor):
        return {path: obj}
    if isinstance(obj, (nn.Module, torch.optim.Optimizer)):
        return tensors_of(obj.state_dict(), path, seen, alive)
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type) and path.count(".") < 3:
        items = vars(obj).items()
    else:
        return {}
    found: dict[str, torch.Tensor] = {}
    for key, value in items:
        found.update(tensors_of(value, f"{path}.{key}" if path else str(key), seen, alive))
    return found


def same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shape and values, NaN equal to NaN, on whichever devices they are."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = a.detach().cpu(), b.detach().cpu()
    if a.is_floating_point() or a.is_complex():
        return bool(torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0)))
    return bool(torch.equal(a, b))


def state_if_any(strategy: Any) -> Any:
    """``strategy.state_dict()``, or None while it cannot be taken (a state the first update
    makes); a state that is never taken is reported after the first step, by ``strategy_state``."""
    try:
        return strategy.state_dict()
    except Exception:  # noqa: BLE001 - any plugin bug, reported later
        return None


def strategy_state(strategy: Any) -> Any:
    """``strategy.state_dict()``, with a plugin's exception reported as a broken rule."""
    try:
        return strategy.state_dict()
    except Exception as error:  # noqa: BLE001 - any plugin bug
        text = " ".join(str(error).split())[:200]
        raise ContractError("strategy", f"state_dict() raised {type(error).__name__}: {text}") from None


class HiddenStateWatch:
    """Snapshot a strategy's tensors before its first step, when its ``state_dict()`` is empty;
    afterwards, tensors that changed while ``state_dict()`` stayed empty would make a resumed
    run differ. (Tensors that exist before the first step; state kept in plain Python numbers
    or created during the step is not seen.)"""

    def __init__(self, strategy: Any) -> None:
        # a strategy that wraps another (a pipeline's phases) checkpoints the other's state in its
        # own: the wrapped strategy is the one watched
        self.wrapper = strategy if getattr(strategy, "wrapped", None) is not None else None
        strategy = strategy.wrapped if self.wrapper is not None else strategy
        self.strategy = strategy
        self.before: dict[str, torch.Tensor] = {}
        self.owned_keys: list[str] = []
        if state_if_any(strategy) != {}:
            return  # the strategy checkpoints something (or cannot say yet): nothing to watch
        skip = {id(strategy.granularity), id(getattr(strategy, "options", None))}
        owned = {key: value for key, value in vars(strategy).items() if id(value) not in skip}
        self.before = {path: tensor.detach().clone() for path, tensor in tensors_of(owned).items()}
        self.owned_keys = list(owned)

    def check(self, state: Any) -> None:
        """``state``: the strategy's ``state_dict()`` after the first step."""
        if self.wrapper is not None:
            state = strategy_state(self.strategy)
        if not self.before or state:
            return
        owned = {key: vars(self.strategy)[key] for key in self.owned_keys if key in vars(self.strategy)}
        after = tensors_of(owned)
        changed = [path for path, tensor in self.before.items() if path in after and not same_values(after[path], tensor)]
        if changed:
            raise ContractError("strategy", f"its state changed in the first step ({changed[0]}) but state_dict() is "
                                "empty, so a resumed run would silently differ; return that state from state_dict() "
                                "and restore it in load_state_dict()")
