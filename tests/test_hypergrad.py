"""The one-step hypergradient against explicit per-sample gradients and finite differences."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reweight.hypergrad import HypergradientProblem, OneStep, OneStepOptions, lookahead_parameters, target_gradient
from tests.conftest import random_problem

LR = 0.3


def explicit_dots(model, batch, direction):
    """∇ℓⱼ · v one example at a time with reverse mode: the slow, obvious way."""
    theta = model.representation_params()
    dots = []
    for j in range(len(batch)):
        loss = model.source_losses(batch)[j]
        grads = torch.autograd.grad(loss, list(theta.values()))
        dots.append(sum((g * direction[name]).sum() for g, name in zip(grads, theta)))
    return torch.stack(dots)


def lookahead_target_loss(model, source, target, weights):
    return model.target_loss(target, lookahead_parameters(model, source, weights, LR)).item()


def solve(model, data, weights, at):
    source, target = data.source.all(), data.target.all()
    v = target_gradient(model, target, model.representation_params())
    problem = HypergradientProblem(model, source, target, v, LR, lambda losses: weights)
    return OneStep(OneStepOptions(at=at))(problem)


seeds = st.integers(0, 10_000)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, batch=st.integers(1, 10))
def test_current_matches_per_sample_gradients(seed, batch):
    model, data = random_problem(seed, n_source=batch)
    losses, hypergradient = solve(model, data, torch.rand(batch, dtype=torch.float64), "current")
    v = target_gradient(model, data.target.all(), model.representation_params())
    expected = -(LR / batch) * explicit_dots(model, data.source.all(), v)
    torch.testing.assert_close(hypergradient, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(losses, model.source_losses(data.source.all()))


@settings(max_examples=25, deadline=None)
@given(seed=seeds, batch=st.integers(1, 10))
def test_lookahead_matches_per_sample_gradients_and_finite_differences(seed, batch):
    model, data = random_problem(seed, n_source=batch)
    source, target = data.source.all(), data.target.all()
    weights = torch.rand(batch, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    _, hypergradient = solve(model, data, weights, "lookahead")

    v_next = target_gradient(model, target, lookahead_parameters(model, source, weights, LR))
    torch.testing.assert_close(hypergradient, -(LR / batch) * explicit_dots(model, source, v_next),
                               rtol=1e-9, atol=1e-12)

    h = 1e-5
    finite = torch.empty(batch, dtype=torch.float64)
    for j in range(batch):
        step = torch.zeros(batch, dtype=torch.float64)
        step[j] = h
        finite[j] = (lookahead_target_loss(model, source, target, weights + step)
                     - lookahead_target_loss(model, source, target, weights - step)) / (2 * h)
    torch.testing.assert_close(hypergradient, finite, rtol=1e-5, atol=1e-9)


def test_current_is_the_first_order_approximation_of_lookahead():
    """At a tiny inner learning rate the two choices of v coincide."""
    model, data = random_problem(3, n_source=8)
    source, target = data.source.all(), data.target.all()
    weights = torch.full((8,), 0.5, dtype=torch.float64)
    v = target_gradient(model, target, model.representation_params())
    current = HypergradientProblem(model, source, target, v, 1e-7, lambda losses: weights)
    _, at_current = OneStep(OneStepOptions(at="current"))(current)
    _, at_lookahead = OneStep(OneStepOptions(at="lookahead"))(current)
    torch.testing.assert_close(at_current, at_lookahead, rtol=1e-4, atol=1e-14)
    assert at_current.abs().max() > 0


def test_no_parameter_gradient_is_left_behind():
    """The hypergradient must not accumulate .grad on the model (that would leak into the step)."""
    model, data = random_problem(0)
    solve(model, data, torch.ones(len(data.source), dtype=torch.float64), "lookahead")
    assert all(p.grad is None for p in model.parameters())
