"""The peer strategies: Learning-to-Reweight's weights and Meta-Weight-Net's chain rule."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from reweight_ltr import LearningToReweight
from reweight_mwn import MetaWeightNet, MetaWeightNetOptions

from reweight.components.granularities.per_sample import PerSample
from reweight.components.hypergradients.one_step import OneStep, OneStepOptions
from reweight.components.hypergradients.unrolled import Unrolled, UnrolledOptions
from reweight.core.data import Split
from reweight.core.hypergrad import WeightGradient
from reweight.core.plugins import NoOptions
from tests.conftest import inner_optimizer, make_problem, random_problem

CPU = torch.device("cpu")


def ltr_weights(grad: torch.Tensor) -> torch.Tensor:
    source = Split(torch.zeros(len(grad), 2), torch.zeros(len(grad), dtype=torch.long))
    strategy = LearningToReweight(NoOptions(), PerSample(NoOptions(), source), CPU)
    batch = source.all()
    return strategy.update([WeightGradient(batch, torch.zeros(len(grad)), grad)])


@settings(max_examples=200, deadline=None)
@given(grad=arrays(np.float64, st.integers(1, 16), elements=st.floats(-1e3, 1e3, allow_nan=False)))
def test_ltr_weights_are_nonnegative_and_average_one(grad):
    weights = ltr_weights(torch.from_numpy(grad))
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.mean(), torch.tensor(1.0, dtype=torch.float64))


def test_ltr_weights_are_the_clipped_normalised_negative_hypergradient():
    weights = ltr_weights(torch.tensor([-0.3, 0.2, -0.1, 0.0]))
    torch.testing.assert_close(weights, 4 * torch.tensor([0.75, 0.0, 0.25, 0.0]))


def test_ltr_falls_back_to_uniform_when_no_example_helps():
    torch.testing.assert_close(ltr_weights(torch.tensor([0.3, 0.0, 0.1])), torch.ones(3))


def test_ltr_has_no_standing_weights():
    source = Split(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
    strategy = LearningToReweight(NoOptions(), PerSample(NoOptions(), source), CPU)
    assert strategy.weights(source.all(), torch.zeros(3)) is None


def mwn(seed: int, n: int) -> MetaWeightNet:
    torch.manual_seed(seed)
    source = Split(torch.zeros(n, 2), torch.zeros(n, dtype=torch.long))
    strategy = MetaWeightNet(MetaWeightNetOptions(hidden=[7]), PerSample(NoOptions(), source), CPU)
    strategy.net.double()  # float64 to compare derivatives tightly; the optimizer keeps the same tensors
    return strategy


def meta_gradient_by_hand(model, data, net, steps, lr, batch_size):
    """dL_t/dψ with V(ℓ; ψ) inside K plain SGD steps, written with ordinary autograd."""
    problem = make_problem(model, data, None, inner_optimizer(model, lr), batch_size)
    batches = [problem.source, *problem.upcoming(steps - 1)]
    params = dict(model.inner_params())
    for batch in batches:
        losses = model.source_losses(batch, params)
        weights = net(losses.detach().unsqueeze(1)).squeeze(1)
        grads = torch.autograd.grad((weights * losses).mean(), list(params.values()), create_graph=True)
        params = {name: p - lr * g for (name, p), g in zip(params.items(), grads)}
    return torch.autograd.grad(model.target_loss(data.target.all(), params), list(net.parameters()))


@pytest.mark.parametrize("method", [OneStep(OneStepOptions(at="lookahead")),
                                    Unrolled(UnrolledOptions(steps=1)),
                                    Unrolled(UnrolledOptions(steps=3)),
                                    Unrolled(UnrolledOptions(steps=3, backend="higher"))],
                         ids=["one_step-lookahead", "unrolled-1", "unrolled-3", "unrolled-3-higher"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mwn_receives_the_exact_gradient_of_its_network(method, seed):
    model, data = random_problem(seed, n_source=12)
    strategy = mwn(seed, 12)
    steps = getattr(method.options, "steps", 1)
    expected = meta_gradient_by_hand(model, data, copy.deepcopy(strategy.net), steps, 0.3, 4)

    problem = make_problem(model, data, None, inner_optimizer(model, 0.3), batch_size=4)
    problem.weight_fn = strategy.weights
    strategy.update(method(problem).gradients)
    for p, g in zip(strategy.net.parameters(), expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-8, atol=1e-12)
    assert any(g.abs().max() > 0 for g in expected)


def test_mwn_weights_are_in_the_unit_interval_and_its_state_round_trips():
    strategy = mwn(0, 5)
    source = Split(torch.zeros(5, 2), torch.zeros(5, dtype=torch.long))
    losses = torch.tensor([0.0, 0.1, 1.0, 5.0, 50.0], dtype=torch.float64)
    weights = strategy.weights(source.all(), losses)
    assert ((weights > 0) & (weights < 1)).all()
    grad = torch.linspace(-1, 1, 5, dtype=torch.float64)
    strategy.update([WeightGradient(source.all(), losses, grad)])
    fresh = mwn(1, 5)
    fresh.load_state_dict(strategy.state_dict())
    torch.testing.assert_close(fresh.weights(source.all(), losses), strategy.weights(source.all(), losses))


def test_ltr_and_mwn_give_one_weight_per_group():
    from reweight.components.granularities.groups import PerGroup, PerGroupOptions

    source = Split(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), meta={"g": torch.tensor([0, 0, 1, 1])})
    granularity = PerGroup(PerGroupOptions(by="meta", column="g"), source)
    batch = source.all()
    ltr = LearningToReweight(NoOptions(), granularity, CPU)
    weights = ltr.update([WeightGradient(batch, torch.zeros(4), torch.tensor([-0.3, 0.1, 0.2, 0.0]))])
    # group 0's hypergradient sums to -0.2 (it helps), group 1's to +0.2 (weight 0); the two
    # members of group 0 share the batch's total weight
    torch.testing.assert_close(weights, torch.tensor([2.0, 2.0, 0.0, 0.0]))

    torch.manual_seed(0)
    mwn = MetaWeightNet(MetaWeightNetOptions(hidden=[5]), granularity, CPU)
    losses = torch.tensor([0.1, 0.3, 1.0, 2.0])
    weights = mwn.weights(batch, losses)
    with torch.no_grad():
        expected = mwn.net(torch.tensor([[0.2], [1.5]])).squeeze(1)  # V of each group's mean loss
    torch.testing.assert_close(weights, expected[[0, 0, 1, 1]])
