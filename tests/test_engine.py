"""The bilevel loop: uniform weights are plain SGD, and the target loss never trains θ."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from reweight_soseleto import Soseleto, SoseletoOptions
from reweight_uniform import Uniform

from reweight.components.granularities.per_sample import PerSample
from reweight.components.hypergradients.one_step import OneStep, OneStepOptions
from reweight.core.data import Split
from reweight.core.engine import Engine, TrainSettings
from reweight.core.optimizers import OptimizerSettings
from reweight.core.plugins import NoOptions
from reweight.core.strategy import Strategy
from tests.conftest import random_problem


class ZeroWeights(Strategy):
    """Weights 0 for every example, but asks for a hypergradient: only the target loss can move θ."""

    def weights(self, batch, losses):
        return torch.zeros(len(batch), dtype=losses.dtype)

    def update(self, gradients):
        return self.weights(gradients[0].batch, gradients[0].losses)


def engine_for(model, data, strategy_cls, options=NoOptions(), at="current", **settings):
    granularity = PerSample(NoOptions(), data.source)
    strategy = strategy_cls(options, granularity, torch.device("cpu"))
    settings = TrainSettings(**{"source_batch_size": 4, **settings})
    return Engine(model, strategy, OneStep(OneStepOptions(at=at)), data, settings, seed=0)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), momentum=st.sampled_from([0.0, 0.9]), weight_decay=st.sampled_from([0.0, 1e-3]))
def test_uniform_weights_reproduce_a_plain_sgd_step(seed, momentum, weight_decay):
    model, data = random_problem(seed)
    reference = copy.deepcopy(model)
    engine = engine_for(model, data, Uniform, lr=0.1, momentum=momentum, weight_decay=weight_decay)
    plain = torch.optim.SGD([*reference.representation.parameters(), *reference.source_head.parameters()],
                            lr=0.1, momentum=momentum, weight_decay=weight_decay)
    sampler_copy = copy.deepcopy(engine.source_sampler)
    for _ in range(3):
        engine.step()
        batch = sampler_copy.next()
        plain.zero_grad()
        F.cross_entropy(reference.source_head(reference.representation(batch.x)), batch.y).backward()
        plain.step()
    for name in ("representation", "source_head"):
        for mine, theirs in zip(getattr(model, name).parameters(), getattr(reference, name).parameters()):
            assert torch.equal(mine, theirs)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), name=st.sampled_from(["adam", "adamw"]), weight_decay=st.sampled_from([0.0, 0.01]))
def test_uniform_weights_reproduce_plain_adam_steps_of_both_optimizers(seed, name, weight_decay):
    """The inner optimizer and the target head's are the chosen ones, with the given settings."""
    model, data = random_problem(seed)
    reference = copy.deepcopy(model)
    optimizer = OptimizerSettings(name, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay)
    engine = engine_for(model, data, Uniform, lr=0.01, target_lr=0.02, optimizer=optimizer, target_optimizer="adam")
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    inner = cls([*reference.representation.parameters(), *reference.source_head.parameters()], lr=0.01,
                betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay)
    head = torch.optim.Adam(reference.target_head.parameters(), lr=0.02)
    sampler_copy = copy.deepcopy(engine.source_sampler)
    for _ in range(3):
        engine.step()
        batch = sampler_copy.next()
        inner.zero_grad()
        target_head = list(reference.target_head.parameters())
        head_grads = torch.autograd.grad(reference.target_loss(data.target.all()), target_head)
        F.cross_entropy(reference.source_head(reference.representation(batch.x)), batch.y).backward()
        inner.step()
        for p, g in zip(target_head, head_grads):
            p.grad = g
        head.step()
    for mine, theirs in zip(model.parameters(), reference.parameters()):
        assert torch.equal(mine, theirs)
    assert type(engine.inner_optimizer) is cls and type(engine.target_optimizer) is torch.optim.Adam


def test_an_unknown_optimizer_from_python_is_a_config_error():
    from reweight.core.errors import ConfigError

    model, data = random_problem(0)
    with pytest.raises(ConfigError, match=r"^train.target_optimizer: unknown optimizer 'rmsprop' \(supported: sgd, "
                                          r"adam, adamw\)$"):
        engine_for(model, data, Uniform, target_optimizer="rmsprop")
    with pytest.raises(ConfigError, match="^train.optimizer: momentum is only for name: sgd, not name: adam$"):
        engine_for(model, data, Uniform, optimizer=OptimizerSettings("adam", momentum=0.5))


def test_target_loss_never_changes_theta():
    """With zero source weights, θ and φˢ stay put while φᵗ trains on the target loss."""
    model, data = random_problem(1)
    before = copy.deepcopy(model)
    engine = engine_for(model, data, ZeroWeights)
    for _ in range(5):
        engine.step()
    for name in ("representation", "source_head"):
        for mine, old in zip(getattr(model, name).parameters(), getattr(before, name).parameters()):
            assert torch.equal(mine, old)
    assert not torch.equal(model.target_head.weight, before.target_head.weight)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), at=st.sampled_from(["current", "lookahead"]))
def test_theta_does_not_depend_on_target_labels(seed, at):
    """Relabelling the target set changes the weights' path but never enters θ's gradient directly:
    with the weights frozen (λ_α tiny), θ after a step is the same for any target labels."""
    results = []
    for shift in (0, 1):
        model, data = random_problem(seed)
        data.target = Split(data.target.x, (data.target.y + shift) % data.target_classes)
        before = [p.detach().clone() for p in model.representation.parameters()]
        engine = engine_for(model, data, Soseleto, SoseletoOptions(lr=1e-300), at=at)
        engine.step()
        results.append([p.detach().clone() for p in model.representation.parameters()])
        assert any(not torch.equal(a, b) for a, b in zip(before, results[-1]))  # θ did train
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_one_engine_step_applies_the_papers_alpha_update_before_the_inner_step():
    """α after a step = clip(α + λ_α λ_p/B · ∇ℓⱼ(θ_m)·∇L_t(θ_m)), and θ_{m+1} uses those α."""
    model, data = random_problem(5, n_source=8)
    reference = copy.deepcopy(model)
    engine = engine_for(model, data, Soseleto, SoseletoOptions(lr=50.0), source_batch_size=8, momentum=0.0)
    engine.step()
    batch, target = data.source.all(), data.target.all()
    theta = reference.representation_params()
    v = torch.autograd.grad(reference.target_loss(target), list(theta.values()))
    dots = []
    for j in range(8):
        grads = torch.autograd.grad(reference.source_losses(batch)[j], list(theta.values()))
        dots.append(sum((g * u).sum() for g, u in zip(grads, v)))
    expected = (0.5 + 50.0 * 0.1 / 8 * torch.stack(dots)).clamp(0, 1)
    torch.testing.assert_close(engine.strategy.alpha.double(), expected, rtol=1e-5, atol=1e-6)
    assert expected.unique().numel() > 1  # the weights did move, and not all alike

    plain = torch.optim.SGD([*reference.representation.parameters(), *reference.source_head.parameters()], lr=0.1)
    (expected.float().double() * reference.source_losses(batch)).mean().backward()
    plain.step()
    for mine, theirs in zip(model.representation.parameters(), reference.representation.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-7)


def test_evaluate_reports_the_shared_metric_names():
    model, data = random_problem(2)
    data.source.meta["corrupted"] = torch.arange(len(data.source)) % 3 == 0
    metrics = engine_for(model, data, Soseleto, SoseletoOptions()).fit(4, eval_every=2)
    assert {"test_accuracy", "target_loss", "source_loss", "weight_noise_auc"} <= set(metrics)
    assert 0 <= metrics["weight_noise_auc"] <= 1


def test_a_shared_head_is_trained_by_both_losses():
    """One classifier: the weighted source loss trains it with θ, then the target loss trains it
    as φᵗ; θ itself still sees only the source loss."""
    model, data = random_problem(7, shared_head=True)
    reference = copy.deepcopy(model)
    engine = engine_for(model, data, Uniform, lr=0.1, momentum=0.0, target_lr=0.05)
    batch = copy.deepcopy(engine.source_sampler).next()
    engine.step()
    head = list(reference.source_head.parameters())
    target_grads = torch.autograd.grad(reference.target_loss(data.target.all()), head)  # at the step's start
    F.cross_entropy(reference(batch.x, "source_head"), batch.y).backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= 0.1 * p.grad
        for p, g in zip(head, target_grads):
            p -= 0.05 * g
    for mine, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    soseleto = engine_for(*random_problem(7, shared_head=True), Soseleto, SoseletoOptions(lr=10.0))
    soseleto.fit(3, eval_every=3)
    assert soseleto.strategy.alpha.unique().numel() > 1  # the weights still learn, through the shared head


def test_substituted_parameters_leave_a_shared_head_model_intact():
    model, data = random_problem(8, shared_head=True)
    before = list(model.parameters())
    stepped = {name: p * 2.0 for name, p in model.inner_params().items()}
    changed = model.target_loss(data.target.all(), stepped)
    assert changed.item() != model.target_loss(data.target.all()).item()  # the substitution reached the head
    after = list(model.parameters())
    assert len(after) == len(before) and all(a is b for a, b in zip(after, before))


def test_a_shared_head_needs_one_label_space():
    from reweight.components.models.mlp import MLPOptions, build_mlp
    from reweight.core.errors import ConfigError

    _, data = random_problem(0, classes=3)
    data.target_classes = 2
    with pytest.raises(ConfigError, match="model.shared_head"):
        build_mlp(MLPOptions(shared_head=True), data)


def test_source_weights_over_a_large_set_are_computed_in_chunks_without_changing_them():
    """More source examples than one chunk: the same weights as one forward over the whole set."""
    from reweight.experiment.config import validate
    from reweight.experiment.runner import build_engine

    config, options = validate({"name": "t", "data": {"name": "synthetic_2d", "n_source": 9000, "n_target": 10},
                                "model": {"name": "mlp", "hidden": [8]}, "strategy": "meta_weight_net"})
    engine = build_engine(config, options, seed=0)
    engine.fit(3, eval_every=3)
    everything = engine.data.source.all()
    with torch.no_grad():
        expected = engine.strategy.weights(everything, engine.model.source_losses(everything))
    torch.testing.assert_close(engine.source_weights(), expected.float())


def test_source_weights_are_computed_once_per_state_and_never_stale():
    from reweight.experiment.config import validate
    from reweight.experiment.runner import build_engine

    config, options = validate({"name": "t", "data": {"name": "synthetic_2d", "n_source": 64, "n_target": 10},
                                "model": {"name": "mlp", "hidden": [8]}, "strategy": "meta_weight_net"})
    engine = build_engine(config, options, seed=0)
    before = engine.source_weights()
    engine.step()  # the weight network and the losses move: the weights must be computed again
    everything = engine.data.source.all()
    with torch.no_grad():
        expected = engine.strategy.weights(everything, engine.model.source_losses(everything)).float()
    after = engine.source_weights()
    assert not torch.equal(after, before)
    torch.testing.assert_close(after, expected)
    after.zero_()  # callers get copies
    torch.testing.assert_close(engine.source_weights(), expected)
