"""Hypergradients through Adam and AdamW: the replayed step against the real one, and every
method against central finite differences of the target loss after real ``torch.optim.Adam``
and ``AdamW`` steps, with live moments (the optimizer has already stepped)."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reweight.components.hypergradients.one_step import OneStep, OneStepOptions, target_gradient
from reweight.components.hypergradients.replay import Replay
from reweight.components.hypergradients.unrolled import Unrolled, UnrolledOptions
from tests.conftest import make_problem, random_problem
from tests.test_hypergrad import random_weights, target_loss_after_real_steps

LR = 0.05
H = 1e-5
seeds = st.integers(0, 10_000)
names = st.sampled_from(["adam", "adamw"])
betas = st.sampled_from([(0.9, 0.999), (0.5, 0.9)])
decays = st.sampled_from([0.0, 0.05])


def adam(model, name, betas=(0.9, 0.999), weight_decay=0.0, lr=LR, **extra):
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    return cls(list(model.inner_params().values()), lr=lr, betas=betas, weight_decay=weight_decay, **extra)


def warmed(model, data, name, betas=(0.9, 0.999), weight_decay=0.0, steps=2):
    """An Adam or AdamW that has taken ``steps`` real steps on randomly weighted source losses,
    so that its step count and moments are live; the model is left where those steps put it."""
    optimizer = adam(model, name, betas, weight_decay)
    generator = torch.Generator().manual_seed(steps)
    for _ in range(steps):
        weights = torch.rand(len(data.source), generator=generator, dtype=torch.float64)
        (weights * model.source_losses(data.source.all())).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return optimizer


def after_real_steps(model, optimizer, batches, weights_per_batch):
    """A copy of the model after len(batches) steps of a copy of the real optimizer."""
    model = copy.deepcopy(model)
    replica = type(optimizer)(list(model.inner_params().values()), lr=0.0)
    replica.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    for batch, weights in zip(batches, weights_per_batch):
        replica.zero_grad()
        (weights * model.source_losses(batch)).mean().backward()
        replica.step()
    return model


def central_differences(function, base: list[torch.Tensor], k: int) -> torch.Tensor:
    """d function / d base[k][j] for every j, by central differences with step H."""
    finite = torch.empty(len(base[k]), dtype=torch.float64)
    for j in range(len(base[k])):
        plus, minus = [w.clone() for w in base], [w.clone() for w in base]
        plus[k][j] += H
        minus[k][j] -= H
        finite[j] = (function(plus) - function(minus)) / (2 * H)
    return finite


def unrolled(model, data, weights, optimizer, steps, backend, batch_size=3):
    problem = make_problem(model, data, weights, optimizer, batch_size)
    return Unrolled(UnrolledOptions(steps=steps, backend=backend))(problem)


def state_copy(optimizer):
    return copy.deepcopy(optimizer.state_dict()["state"])


def assert_state_unchanged(before, optimizer):
    after = optimizer.state_dict()["state"]
    assert before.keys() == after.keys()
    for key, state in before.items():
        for field, value in state.items():
            assert torch.equal(value, after[key][field]), (key, field)


@settings(max_examples=20, deadline=None)
@given(seed=seeds, name=names, betas=betas, weight_decay=decays, warm=st.sampled_from([0, 1, 3]))
def test_the_replayed_step_is_the_real_step_and_leaves_its_state_alone(seed, name, betas, weight_decay, warm):
    model, data = random_problem(seed, n_source=7)
    optimizer = warmed(model, data, name, betas, weight_decay, steps=warm)
    weights = random_weights(7, seed)
    replay = Replay(model, optimizer)
    params = dict(model.inner_params())
    losses = (weights * model.source_losses(data.source.all())).mean()
    grads = dict(zip(params, torch.autograd.grad(losses, list(params.values()))))
    before = state_copy(optimizer)
    replay.step(params, grads, replay.states())
    assert_state_unchanged(before, optimizer)

    real = after_real_steps(model, optimizer, [data.source.all()], [weights])
    for name_, p in real.inner_params().items():
        assert torch.equal(params[name_], p), name_


@settings(max_examples=15, deadline=None)
@given(seed=seeds, batch=st.integers(1, 6), name=names, betas=betas, weight_decay=decays,
       shared_head=st.booleans())
def test_one_step_lookahead_matches_finite_differences_of_the_real_step(seed, batch, name, betas, weight_decay,
                                                                       shared_head):
    model, data = random_problem(seed, n_source=batch, shared_head=shared_head)
    optimizer = warmed(model, data, name, betas, weight_decay)
    weights = random_weights(batch, seed)
    source = data.source.all()
    before = state_copy(optimizer)
    grad = OneStep(OneStepOptions(at="lookahead"))(make_problem(model, data, weights, optimizer)).gradients[0].grad
    assert_state_unchanged(before, optimizer)

    def target_loss(ws):
        return target_loss_after_real_steps(model, data, optimizer, [source], ws)

    torch.testing.assert_close(grad, central_differences(target_loss, [weights], 0), rtol=1e-5, atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(seed=seeds, batch=st.integers(1, 6), name=names, betas=betas, weight_decay=decays)
def test_one_step_current_is_the_derivative_of_the_linearised_target_loss(seed, batch, name, betas, weight_decay):
    """At ``current`` the hypergradient is d/dwⱼ of v · θ'(w), v = ∇_θ L_t(θ) held fixed and
    θ'(w) the real Adam step: the derivative of L_t linearised at θ."""
    model, data = random_problem(seed, n_source=batch)
    optimizer = warmed(model, data, name, betas, weight_decay)
    weights = random_weights(batch, seed)
    source = data.source.all()
    grad = OneStep(OneStepOptions(at="current"))(make_problem(model, data, weights, optimizer)).gradients[0].grad
    v = target_gradient(model, data.target.all(), model.coupled_params())

    def linearised(ws):
        theta = after_real_steps(model, optimizer, [source], ws).coupled_params()
        return sum((v[key] * p).sum() for key, p in theta.items()).item()

    torch.testing.assert_close(grad, central_differences(linearised, [weights], 0), rtol=1e-5, atol=1e-9)
    assert grad.abs().max() > 0


@settings(max_examples=10, deadline=None)
@given(seed=seeds, name=names, weight_decay=decays, at=st.sampled_from(["current", "lookahead"]))
def test_without_standing_weights_adam_is_differentiated_at_w_zero(seed, name, weight_decay, at):
    """Learning-to-Reweight's look-ahead through Adam: at w = 0 the live moments still move θ,
    and D is taken at the gradient of w = 0."""
    model, data = random_problem(seed, n_source=5)
    optimizer = warmed(model, data, name, weight_decay=weight_decay)
    grad = OneStep(OneStepOptions(at=at))(make_problem(model, data, None, optimizer)).gradients[0].grad
    source = data.source.all()
    zero = torch.zeros(5, dtype=torch.float64)
    if at == "lookahead":
        function = lambda ws: target_loss_after_real_steps(model, data, optimizer, [source], ws)  # noqa: E731
    else:
        v = target_gradient(model, data.target.all(), model.coupled_params())

        def function(ws):
            theta = after_real_steps(model, optimizer, [source], ws).coupled_params()
            return sum((v[key] * p).sum() for key, p in theta.items()).item()

    torch.testing.assert_close(grad, central_differences(function, [zero], 0), rtol=1e-5, atol=1e-9)


@settings(max_examples=12, deadline=None)
@given(seed=seeds, steps=st.integers(1, 3), name=names, betas=betas, weight_decay=decays,
       backend=st.sampled_from(["torch_func", "higher"]))
def test_unrolled_matches_finite_differences_of_real_adam_steps(seed, steps, name, betas, weight_decay, backend):
    """Perturb one weight in one of the K batches, replay K real Adam or AdamW steps."""
    model, data = random_problem(seed, n_source=6)
    optimizer = warmed(model, data, name, betas, weight_decay)
    weights = random_weights(6, seed)
    before = state_copy(optimizer)
    result = unrolled(model, data, weights, optimizer, steps, backend)
    assert_state_unchanged(before, optimizer)
    batches = [g.batch for g in result.gradients]
    base = [weights[b.index] for b in batches]

    def target_loss(ws):
        return target_loss_after_real_steps(model, data, optimizer, batches, ws)

    for k, gradient in enumerate(result.gradients):
        torch.testing.assert_close(gradient.grad, central_differences(target_loss, base, k), rtol=1e-5, atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(seed=seeds, steps=st.integers(1, 4), name=names, betas=betas, weight_decay=decays,
       warm=st.sampled_from([0, 2]))
def test_unrolled_backends_agree_through_adam(seed, steps, name, betas, weight_decay, warm):
    model, data = random_problem(seed, n_source=9)
    optimizer = warmed(model, data, name, betas, weight_decay, steps=warm)
    weights = random_weights(9, seed)
    mine, theirs = (unrolled(model, data, weights, optimizer, steps, backend, batch_size=4)
                    for backend in ("torch_func", "higher"))
    assert len(mine.gradients) == len(theirs.gradients) == steps
    for a, b in zip(mine.gradients, theirs.gradients):
        assert torch.equal(a.batch.index, b.batch.index)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(a.losses, b.losses, rtol=1e-12, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(seed=seeds, batch=st.integers(1, 8), name=names, betas=betas, weight_decay=decays)
def test_unrolled_one_step_equals_one_step_lookahead_through_adam(seed, batch, name, betas, weight_decay):
    model, data = random_problem(seed, n_source=batch)
    optimizer = warmed(model, data, name, betas, weight_decay)
    weights = random_weights(batch, seed)
    expected = OneStep(OneStepOptions(at="lookahead"))(make_problem(model, data, weights, optimizer)).gradients[0].grad
    for backend in ("torch_func", "higher"):
        got = unrolled(model, data, weights, optimizer, 1, backend, batch_size=None).gradients[0].grad
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", [OneStep(OneStepOptions(at="current")), OneStep(OneStepOptions(at="lookahead")),
                                    Unrolled(UnrolledOptions(steps=2)), Unrolled(UnrolledOptions(steps=2, backend="higher"))],
                         ids=["current", "lookahead", "unrolled", "higher"])
def test_a_fresh_adam_at_w_zero_gives_a_finite_hypergradient(method):
    """Adam's first step from w = 0 has a zero gradient and zero second moment, where √u has an
    infinite derivative; the hypergradient is still finite (and it is (λ/ε)-large, as Adam's
    update is that steep at g = 0)."""
    model, data = random_problem(4, n_source=6)
    optimizer = adam(model, "adam")
    result = method(make_problem(model, data, None, optimizer, batch_size=3))
    for gradient in result.gradients:
        assert torch.isfinite(gradient.grad).all()
    assert result.gradients[0].grad.abs().max() > 0
    assert all(p.grad is None for p in model.parameters())
