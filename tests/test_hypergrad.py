"""Hypergradient methods against each other, against explicit per-sample gradients, and
against central finite differences of the target loss after the real optimizer's steps."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reweight.components.hypergradients.one_step import OneStep, OneStepOptions, lookahead_parameters, target_gradient
from reweight.components.hypergradients.unrolled import Unrolled, UnrolledOptions
from reweight.core.data import BatchSampler
from reweight.core.errors import ConfigError
from tests.conftest import inner_optimizer, make_problem, random_problem

LR = 0.3
seeds = st.integers(0, 10_000)


def explicit_dots(model, batch, direction):
    """∇ℓⱼ · v one example at a time with reverse mode: the slow, obvious way."""
    theta = model.representation_params()
    dots = []
    for j in range(len(batch)):
        grads = torch.autograd.grad(model.source_losses(batch)[j], list(theta.values()))
        dots.append(sum((g * direction[name]).sum() for g, name in zip(grads, theta)))
    return torch.stack(dots)


def random_weights(n, seed):
    return torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def one_step(model, data, weights, at, lr=LR):
    problem = make_problem(model, data, weights, inner_optimizer(model, lr))
    return OneStep(OneStepOptions(at=at))(problem)


def unrolled(model, data, weights, optimizer, steps, backend, batch_size=None):
    problem = make_problem(model, data, weights, optimizer, batch_size)
    return Unrolled(UnrolledOptions(steps=steps, backend=backend))(problem)


def target_loss_after_real_steps(model, data, optimizer, batches, weights_per_batch):
    """L_t after len(batches) steps of a copy of the real optimizer (state included)."""
    model = copy.deepcopy(model)
    replica = type(optimizer)(list(model.inner_params().values()), lr=0.0)
    replica.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # loading shares the buffers otherwise
    for batch, weights in zip(batches, weights_per_batch):
        replica.zero_grad()
        (weights * model.source_losses(batch)).mean().backward()
        replica.step()
    with torch.no_grad():
        return model.target_loss(data.target.all()).item()


def warmed_optimizer(model, data, lr, momentum, weight_decay, nesterov=False, dampening=0.0):
    """An inner optimizer that has already taken one step, so its momentum buffers are live."""
    optimizer = inner_optimizer(model, lr, momentum, weight_decay, nesterov=nesterov, dampening=dampening)
    model.source_losses(data.source.all()).mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return optimizer


@settings(max_examples=25, deadline=None)
@given(seed=seeds, batch=st.integers(1, 10))
def test_current_matches_per_sample_gradients(seed, batch):
    model, data = random_problem(seed, n_source=batch)
    result = one_step(model, data, random_weights(batch, seed), "current")
    v = target_gradient(model, data.target.all(), model.representation_params())
    expected = -(LR / batch) * explicit_dots(model, data.source.all(), v)
    torch.testing.assert_close(result.gradients[0].grad, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(result.losses, model.source_losses(data.source.all()))


@settings(max_examples=25, deadline=None)
@given(seed=seeds, batch=st.integers(1, 10))
def test_lookahead_matches_per_sample_gradients_and_finite_differences(seed, batch):
    model, data = random_problem(seed, n_source=batch)
    source = data.source.all()
    weights = random_weights(batch, seed)
    grad = one_step(model, data, weights, "lookahead").gradients[0].grad

    v_next = target_gradient(model, data.target.all(), lookahead_parameters(model, source, weights, inner_optimizer(model, LR)))
    torch.testing.assert_close(grad, -(LR / batch) * explicit_dots(model, source, v_next), rtol=1e-9, atol=1e-12)

    warmed_model = copy.deepcopy(model)  # and after the real optimizer has momentum and weight decay
    for model, optimizer in ((model, inner_optimizer(model, LR)),
                             (warmed_model, warmed_optimizer(warmed_model, data, LR, 0.9, 0.01))):
        grad = OneStep(OneStepOptions(at="lookahead"))(make_problem(model, data, weights, optimizer)).gradients[0].grad
        h, finite = 1e-5, torch.empty(batch, dtype=torch.float64)
        for j in range(batch):
            step = torch.zeros(batch, dtype=torch.float64)
            step[j] = h
            finite[j] = (target_loss_after_real_steps(model, data, optimizer, [source], [weights + step])
                         - target_loss_after_real_steps(model, data, optimizer, [source], [weights - step])) / (2 * h)
        torch.testing.assert_close(grad, finite, rtol=1e-5, atol=1e-9)


def test_current_is_the_first_order_approximation_of_lookahead():
    """At a tiny inner learning rate the two choices of v coincide."""
    model, data = random_problem(3, n_source=8)
    weights = torch.full((8,), 0.5, dtype=torch.float64)
    at_current = one_step(model, data, weights, "current", lr=1e-7).gradients[0].grad
    at_lookahead = one_step(model, data, weights, "lookahead", lr=1e-7).gradients[0].grad
    torch.testing.assert_close(at_current, at_lookahead, rtol=1e-4, atol=1e-14)
    assert at_current.abs().max() > 0


@settings(max_examples=10, deadline=None)
@given(seed=seeds, at=st.sampled_from(["current", "lookahead"]))
def test_without_standing_weights_the_look_ahead_is_at_w_zero(seed, at):
    """Learning-to-Reweight's hypergradient: finite differences around w = 0 of L_t after a
    real optimizer step (with live momentum, where θ' ≠ θ even at w = 0)."""
    model, data = random_problem(seed, n_source=5)
    optimizer = warmed_optimizer(model, data, LR, 0.9, 0.01)
    grad = OneStep(OneStepOptions(at=at))(make_problem(model, data, None, optimizer)).gradients[0].grad
    source = data.source.all()
    h, finite = 1e-5, torch.empty(5, dtype=torch.float64)
    for j in range(5):
        step = torch.zeros(5, dtype=torch.float64)
        step[j] = h
        finite[j] = (target_loss_after_real_steps(model, data, optimizer, [source], [step])
                     - target_loss_after_real_steps(model, data, optimizer, [source], [-step])) / (2 * h)
    if at == "lookahead":  # at w = 0 the step's weighted part vanishes, but momentum still moves θ
        torch.testing.assert_close(grad, finite, rtol=1e-5, atol=1e-9)
    assert grad.abs().max() > 0


@settings(max_examples=20, deadline=None)
@given(seed=seeds, batch=st.integers(1, 8), momentum=st.sampled_from([0.0, 0.9]),
       weight_decay=st.sampled_from([0.0, 0.01]), nesterov=st.booleans(), dampening=st.sampled_from([0.0, 0.3]))
def test_unrolled_one_step_equals_one_step_lookahead_for_any_sgd(seed, batch, momentum, weight_decay, nesterov,
                                                                  dampening):
    model, data = random_problem(seed, n_source=batch)
    weights = random_weights(batch, seed)
    nesterov = nesterov and momentum > 0
    dampening = 0.0 if nesterov else dampening
    optimizer = warmed_optimizer(model, data, LR, momentum, weight_decay, nesterov, dampening)
    expected = OneStep(OneStepOptions(at="lookahead"))(make_problem(model, data, weights, optimizer)).gradients[0].grad
    for backend in ("torch_func", "higher"):
        result = unrolled(model, data, weights, optimizer, 1, backend)
        torch.testing.assert_close(result.gradients[0].grad, expected, rtol=1e-9, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(seed=seeds, steps=st.integers(1, 4), momentum=st.sampled_from([0.0, 0.9]),
       weight_decay=st.sampled_from([0.0, 0.01]), nesterov=st.booleans())
def test_unrolled_backends_agree(seed, steps, momentum, weight_decay, nesterov):
    model, data = random_problem(seed, n_source=9)
    weights = random_weights(9, seed)
    nesterov = nesterov and momentum > 0
    optimizer = warmed_optimizer(model, data, LR, momentum, weight_decay, nesterov)
    before = copy.deepcopy(optimizer.state_dict())
    mine, theirs = (unrolled(model, data, weights, optimizer, steps, backend, batch_size=4)
                    for backend in ("torch_func", "higher"))
    after = optimizer.state_dict()
    for key, state in before["state"].items():  # the look-ahead left the real momentum alone
        assert torch.equal(state["momentum_buffer"], after["state"][key]["momentum_buffer"])
    assert len(mine.gradients) == len(theirs.gradients) == steps
    for a, b in zip(mine.gradients, theirs.gradients):
        assert torch.equal(a.batch.index, b.batch.index)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(a.losses, b.losses, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mine.losses, theirs.losses)


@settings(max_examples=10, deadline=None)
@given(seed=seeds, steps=st.integers(1, 3), momentum=st.sampled_from([0.0, 0.9]),
       weight_decay=st.sampled_from([0.0, 0.01]), variant=st.sampled_from(["plain", "nesterov", "dampening"]))
def test_unrolled_matches_finite_differences_of_the_real_optimizer(seed, steps, momentum, weight_decay, variant):
    """Perturb one weight in one of the K batches, replay K real torch.optim.SGD steps."""
    model, data = random_problem(seed, n_source=6)
    weights = random_weights(6, seed)
    extra = {"nesterov": {"nesterov": True}, "dampening": {"dampening": 0.3}, "plain": {}}[variant] if momentum else {}
    optimizer = warmed_optimizer(model, data, LR, momentum, weight_decay, **extra)
    result = unrolled(model, data, weights, optimizer, steps, "torch_func", batch_size=3)
    batches = [g.batch for g in result.gradients]
    base = [weights[b.index] for b in batches]
    h = 1e-5
    for k, gradient in enumerate(result.gradients):
        finite = torch.empty(len(gradient.batch), dtype=torch.float64)
        for j in range(len(gradient.batch)):
            plus = [w.clone() for w in base]
            minus = [w.clone() for w in base]
            plus[k][j] += h
            minus[k][j] -= h
            finite[j] = (target_loss_after_real_steps(model, data, optimizer, batches, plus)
                         - target_loss_after_real_steps(model, data, optimizer, batches, minus)) / (2 * h)
        torch.testing.assert_close(gradient.grad, finite, rtol=1e-5, atol=1e-9)


def test_unrolled_replays_the_batches_training_will_draw_next():
    """The look-ahead's batches are those the sampler then really draws, across an epoch end."""
    model, data = random_problem(1, n_source=10)
    problem = make_problem(model, data, random_weights(10, 1), inner_optimizer(model, LR), batch_size=4)
    result = Unrolled(UnrolledOptions(steps=4))(problem)  # 4 batches of 4 from 10 examples: two epochs
    sampler = BatchSampler(data.source, 4, 0)  # the sampler make_problem uses, replayed
    drawn = [sampler.next() for _ in range(4)]
    for gradient, batch in zip(result.gradients, drawn):
        assert torch.equal(gradient.batch.index, batch.index)
    assert torch.equal(problem.upcoming(1)[0].index, drawn[1].index)  # peeking consumed nothing


def test_look_aheads_reject_optimizers_they_cannot_replay():
    model, data = random_problem(2)
    params = list(model.inner_params().values())
    cases = ((torch.optim.RMSprop(params), "replay SGD, Adam and AdamW, not RMSprop"),
             (inner_optimizer(model, LR, maximize=True), "do not replay SGD with maximize=True; set it to False"),
             (torch.optim.Adam(params, amsgrad=True), "do not replay Adam with amsgrad=True"),
             (torch.optim.AdamW(params, capturable=True), "do not replay AdamW with capturable=True"))
    for optimizer, message in cases:
        for method in (OneStep(OneStepOptions()), Unrolled(UnrolledOptions())):
            with pytest.raises(ConfigError, match=message):
                method(make_problem(model, data, None, optimizer))


def test_missing_higher_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "higher", None)  # makes `import higher` fail
    with pytest.raises(ConfigError, match="'higher' is not installed"):
        Unrolled(UnrolledOptions(backend="higher"))


def test_no_parameter_gradient_is_left_behind():
    """Hypergradient methods must not accumulate .grad on the model (it would leak into the step)."""
    model, data = random_problem(0)
    weights = torch.ones(len(data.source), dtype=torch.float64)
    one_step(model, data, weights, "lookahead")
    for backend in ("torch_func", "higher"):
        unrolled(model, data, weights, inner_optimizer(model, LR, 0.9), 2, backend, batch_size=4)
    assert all(p.grad is None for p in model.parameters())


@settings(max_examples=10, deadline=None)
@given(seed=seeds, steps=st.integers(1, 3))
def test_a_shared_head_is_part_of_the_look_ahead(seed, steps):
    """With one classifier for both sets, L_t depends on φˢ too: every method differentiates
    through it, and all agree with finite differences of the real optimizer's steps."""
    model, data = random_problem(seed, n_source=6, shared_head=True)
    assert model.shares_head and set(model.coupled_params()) == set(model.inner_params())
    weights = random_weights(6, seed)
    optimizer = warmed_optimizer(model, data, LR, 0.9, 0.01)
    mine, theirs = (unrolled(model, data, weights, optimizer, steps, backend, batch_size=3)
                    for backend in ("torch_func", "higher"))
    batches = [g.batch for g in mine.gradients]
    h = 1e-5
    for k, (a, b) in enumerate(zip(mine.gradients, theirs.gradients)):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)
        plus = [weights[batch.index].clone() for batch in batches]
        minus = [w.clone() for w in plus]
        plus[k][0] += h
        minus[k][0] -= h
        finite = (target_loss_after_real_steps(model, data, optimizer, batches, plus)
                  - target_loss_after_real_steps(model, data, optimizer, batches, minus)) / (2 * h)
        torch.testing.assert_close(a.grad[0].item(), finite, rtol=1e-5, atol=1e-9)

    plain = inner_optimizer(model, LR)
    expected = one_step(model, data, weights, "lookahead").gradients[0].grad
    got = unrolled(model, data, weights, plain, 1, "torch_func").gradients[0].grad
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
