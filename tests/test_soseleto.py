"""SOSELETO's weight table: the update rule and its invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from reweight_soseleto import Soseleto, SoseletoOptions

from reweight.components.granularities.per_sample import PerSample
from reweight.core.data import Split
from reweight.core.hypergrad import WeightGradient
from reweight.core.plugins import NoOptions

N = 20
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


def one(batch, grad):
    """The hypergradient of a single look-ahead batch."""
    return [WeightGradient(batch, torch.zeros(len(batch)), grad)]


def table(init: float = 0.5, lr: float = 1.0) -> tuple[Soseleto, Split]:
    source = Split(torch.zeros(N, 2), torch.zeros(N, dtype=torch.long))
    return Soseleto(SoseletoOptions(lr=lr, init=init), PerSample(NoOptions(), source), torch.device("cpu")), source


@settings(max_examples=200, deadline=None)
@given(
    init=st.floats(0, 1),
    lr=st.floats(1e-6, 1e6),
    updates=st.lists(
        st.tuples(arrays(np.int64, st.integers(1, 8), elements=st.integers(0, N - 1)),
                  arrays(np.float64, 8, elements=finite)),
        min_size=1, max_size=10,
    ),
)
def test_weights_stay_in_unit_interval(init, lr, updates):
    strategy, source = table(init, lr)
    for index, grads in updates:
        batch = source.gather(torch.from_numpy(index))
        weights = strategy.update(one(batch, torch.from_numpy(grads[: len(batch)])))
        assert ((weights >= 0) & (weights <= 1)).all()
        assert ((strategy.alpha >= 0) & (strategy.alpha <= 1)).all()


def test_update_is_the_papers_rule_and_only_touches_the_batch():
    strategy, source = table(init=0.5, lr=2.0)
    batch = source.gather(torch.tensor([3, 7, 11]))
    hypergradient = torch.tensor([0.1, -0.05, 0.3])
    weights = strategy.update(one(batch, hypergradient))
    torch.testing.assert_close(weights, torch.tensor([0.3, 0.6, 0.0]))  # clip(0.5 - 2 g)
    untouched = torch.ones(N, dtype=torch.bool)
    untouched[[3, 7, 11]] = False
    assert (strategy.alpha[untouched] == 0.5).all()


def test_repeated_slot_receives_the_sum_of_its_hypergradients():
    strategy, source = table(init=0.5, lr=1.0)
    batch = source.gather(torch.tensor([4, 4]))
    strategy.update(one(batch, torch.tensor([0.1, 0.2])))
    assert strategy.alpha[4].item() == pytest.approx(0.2, abs=1e-7)


def test_batches_of_an_unrolled_look_ahead_are_summed_before_one_projection():
    strategy, source = table(init=0.5, lr=1.0)
    first, second = source.gather(torch.tensor([2, 5])), source.gather(torch.tensor([5, 9]))
    weights = strategy.update(one(first, torch.tensor([0.3, 0.4]))
                              + one(second, torch.tensor([-0.6, 0.1])))
    torch.testing.assert_close(strategy.alpha[[2, 5, 9]], torch.tensor([0.2, 0.7, 0.4]))
    torch.testing.assert_close(weights, torch.tensor([0.2, 0.7]))  # the first batch's weights


def test_state_round_trip():
    strategy, source = table()
    strategy.update(one(source.gather(torch.tensor([0, 1])), torch.tensor([0.2, -0.2])))
    fresh, _ = table()
    fresh.load_state_dict(strategy.state_dict())
    assert torch.equal(fresh.alpha, strategy.alpha)


def test_init_outside_bounds_is_rejected():
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="lower <= init <= upper"):
        SoseletoOptions(init=1.5)


def _one_engine_step(target_weight: float | None):
    """One engine step of SOSELETO (plain SGD, no momentum) on a fixed random problem; returns
    the model before and after, and the weight table."""
    import copy

    from reweight.components.hypergradients.one_step import OneStep, OneStepOptions
    from reweight.core.engine import Engine, TrainSettings
    from tests.conftest import random_problem

    model, data = random_problem(3)
    before = copy.deepcopy(model)
    options = SoseletoOptions(lr=5.0) if target_weight is None else SoseletoOptions(lr=5.0, target_weight=target_weight)
    strategy = Soseleto(options, PerSample(NoOptions(), data.source), torch.device("cpu"))
    settings = TrainSettings(source_batch_size=4, lr=0.1, momentum=0.0, target_lr=0.1)
    engine = Engine(model, strategy, OneStep(OneStepOptions()), data, settings, seed=0)
    engine.step()
    return before, model, strategy.alpha, data


def test_target_weight_defaults_to_the_papers_rule():
    assert SoseletoOptions().target_weight == 0.0
    strategy, _ = table()
    assert strategy.representation_target_weight() == 0.0
    _, default, alpha_default, _ = _one_engine_step(None)
    _, zero, alpha_zero, _ = _one_engine_step(0.0)
    for mine, theirs in zip(default.parameters(), zero.parameters()):
        assert torch.equal(mine, theirs)
    assert torch.equal(alpha_default, alpha_zero)


def test_target_weight_lets_the_target_loss_train_theta():
    """θ's step gains exactly −lr · c · ∇_θ L_t; the weights and the heads are unchanged."""
    c = 0.7
    before, plain, alpha_plain, data = _one_engine_step(0.0)
    _, mixed, alpha_mixed, _ = _one_engine_step(c)
    assert torch.equal(alpha_plain, alpha_mixed)
    target_loss = before.target_loss(data.target.all())
    theta = list(before.representation.parameters())
    expected = torch.autograd.grad(target_loss, theta)
    for p_plain, p_mixed, g in zip(plain.representation.parameters(), mixed.representation.parameters(), expected):
        torch.testing.assert_close(p_plain - p_mixed, 0.1 * c * g)
    assert any(not torch.equal(a, b) for a, b in zip(plain.representation.parameters(), mixed.representation.parameters()))
    for name in ("source_head", "target_head"):
        for a, b in zip(getattr(plain, name).parameters(), getattr(mixed, name).parameters()):
            assert torch.equal(a, b)


def test_target_weight_must_not_be_negative():
    import pydantic

    with pytest.raises(pydantic.ValidationError):
        SoseletoOptions(target_weight=-1.0)
