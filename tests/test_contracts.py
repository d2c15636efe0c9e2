"""The contract checks themselves: they see every tensor a strategy keeps, and they do not
flag legitimate strategies."""

from __future__ import annotations

import torch
from torch import nn

from reweight.core.contracts import HiddenStateWatch, same_values, tensors_of


class Holder:
    def __init__(self) -> None:
        self.modules = [nn.Linear(2, 2) for _ in range(20)]
        self.optimizers = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in self.modules]


def test_every_tensor_of_many_modules_and_optimizers_is_seen():
    holder = Holder()
    for module, optimizer in zip(holder.modules, holder.optimizers):  # momentum buffers exist after a step
        module(torch.ones(1, 2)).sum().backward()
        optimizer.step()
    found = tensors_of(vars(holder))
    assert len(found) == 20 * 2 + 20 * 2  # weight and bias of each module, a momentum buffer for each


def test_nan_equals_nan_and_devices_do_not_matter():
    constant = torch.full((3,), float("nan"))
    assert same_values(constant, constant.clone())
    assert not same_values(torch.tensor([1.0, float("nan")]), torch.tensor([2.0, float("nan")]))
    assert not same_values(torch.zeros(2), torch.zeros(3))


class Stub:
    granularity = None
    options = None


class Lazy(Stub):
    """A state that exists only once the first update made it."""

    def __init__(self) -> None:
        self.alpha = None

    def state_dict(self):
        return {"alpha": self.alpha.clone()}


class Forgetful(Stub):
    def __init__(self) -> None:
        self.net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
        self.sentinel = torch.full((2,), float("nan"))

    def state_dict(self):
        return {}


def test_a_lazily_made_state_is_not_an_error_before_it_exists():
    strategy = Lazy()
    watch = HiddenStateWatch(strategy)  # state_dict() raises now: nothing to watch yet, no crash
    strategy.alpha = torch.zeros(3)
    watch.check(strategy.state_dict())


def test_a_change_in_the_last_of_several_modules_is_caught_and_a_nan_constant_is_not():
    strategy = Forgetful()
    HiddenStateWatch(strategy).check(strategy.state_dict())  # nothing changed (the NaN sentinel included)
    watch = HiddenStateWatch(strategy)
    with torch.no_grad():
        strategy.net[2].weight.add_(1.0)
    try:
        watch.check(strategy.state_dict())
    except Exception as error:  # noqa: BLE001
        assert "net.2.weight" in str(error)
    else:
        raise AssertionError("a changed module went unnoticed")
