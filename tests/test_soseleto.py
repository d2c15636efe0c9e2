"""SOSELETO's weight table: the update rule and its invariants."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
import numpy as np

from reweight.data import Split
from reweight.granularity import NoOptions, PerSample
from reweight.hypergrad import WeightGradient
from reweight_soseleto import Soseleto, SoseletoOptions

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
