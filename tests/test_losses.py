"""The per-example loss as a component: cross-entropy by default (exactly as before), label
smoothing as torch defines it, and any loss from a plugin or a Python callable, with which the
hypergradients still match finite differences of the real optimizer's steps."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from reweight.components.granularities.per_sample import PerSample
from reweight.components.hypergradients.one_step import OneStep, OneStepOptions
from reweight.components.hypergradients.unrolled import Unrolled, UnrolledOptions
from reweight.core.data import Batch, BilevelData, Split
from reweight.core.engine import Engine, TrainSettings
from reweight.core.errors import ConfigError
from reweight.core.losses import CrossEntropy
from reweight.core.plugins import NoOptions, registry
from reweight.experiment.config import validate
from reweight.experiment.runner import build_engine
from tests.conftest import make_problem, random_problem
from tests.test_hypergrad import random_weights, target_loss_after_real_steps, warmed_optimizer
from tests.test_hypergrad_adam import central_differences, warmed
from tests.test_plugins import install

seeds = st.integers(0, 10_000)


def binary_cross_entropy(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """A multi-label loss: one sigmoid per label, summed over the labels of each example."""
    return F.binary_cross_entropy_with_logits(logits, batch.y, reduction="none").sum(1)


def multi_label_problem(seed: int, n_source: int = 6, labels: int = 3):
    """A random MLP and data whose labels are 0/1 vectors, scored by binary cross-entropy."""
    model, data = random_problem(seed, n_source=n_source, classes=labels)
    generator = torch.Generator().manual_seed(seed + 1)

    def multi_hot(split: Split) -> Split:
        return Split(split.x, (torch.rand(len(split), labels, generator=generator) < 0.5).double())

    data = BilevelData(multi_hot(data.source), multi_hot(data.target), multi_hot(data.test), labels, labels)
    model.use_loss(binary_cross_entropy)
    return model, data


@settings(max_examples=30, deadline=None)
@given(seed=seeds, batch=st.integers(1, 9), classes=st.integers(2, 6), smoothing=st.floats(0.01, 1.0))
def test_label_smoothing_is_torchs(seed, batch, classes, smoothing):
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(batch, classes, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    examples = Batch(logits, labels, torch.arange(batch))
    loss = CrossEntropy(smoothing)
    expected = F.cross_entropy(logits, labels, reduction="none", label_smoothing=smoothing)
    torch.testing.assert_close(loss(logits, examples), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss.mean(logits, examples), F.cross_entropy(logits, labels, label_smoothing=smoothing),
                               rtol=1e-12, atol=1e-12)


def test_label_smoothing_spreads_over_each_tasks_own_classes():
    """With per-task source heads, another task's logits are −∞; smoothing covers the example's
    own task only: the smoothed cross-entropy of that task's slice of the logits."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[True, True, False, False, False], [False, False, True, True, True]])
    task = torch.tensor([0, 1, 1, 0])
    labels = torch.tensor([1, 2, 4, 0])
    masked = logits.masked_fill(~mask[task], float("-inf"))
    losses = CrossEntropy(0.2)(masked, Batch(masked, labels, torch.arange(4)))
    for j in range(4):
        own = mask[task[j]].nonzero().squeeze(1)
        expected = F.cross_entropy(logits[j, own][None], (labels[j] - own[0])[None], label_smoothing=0.2)
        torch.testing.assert_close(losses[j], expected, rtol=1e-12, atol=1e-12)


def test_the_default_loss_is_exactly_the_cross_entropy_it_always_was():
    model, data = random_problem(1)
    source, target = data.source.all(), data.target.all()
    assert torch.equal(model.source_losses(source), F.cross_entropy(model(source.x, "source_head"), source.y,
                                                                    reduction="none"))
    assert torch.equal(model.target_loss(target), F.cross_entropy(model(target.x), target.y))


@settings(max_examples=10, deadline=None)
@given(seed=seeds, smoothing=st.sampled_from([0.1, 0.5]), at=st.sampled_from(["current", "lookahead"]))
def test_label_smoothing_from_the_config_reaches_the_model_and_its_hypergradient(seed, smoothing, at):
    config, options = validate({"name": "t", "data": {"name": "synthetic_2d", "n_source": 20, "n_target": 6},
                                "loss": {"name": "cross_entropy", "label_smoothing": smoothing},
                                "hypergrad": {"name": "one_step", "at": at}, "train": {"source_batch_size": 5}})
    engine = build_engine(config, options, seed=seed)
    batch = engine.data.source.all()
    logits = engine.model(batch.x, "source_head")
    expected = F.cross_entropy(logits, batch.y, reduction="none", label_smoothing=smoothing)
    torch.testing.assert_close(engine.model.source_losses(batch), expected, rtol=1e-6, atol=1e-6)
    engine.fit(3, eval_every=3)


@settings(max_examples=10, deadline=None)
@given(seed=seeds, batch=st.integers(1, 6), momentum=st.sampled_from([0.0, 0.9]))
def test_one_step_through_a_custom_multi_label_loss_matches_finite_differences(seed, batch, momentum):
    model, data = multi_label_problem(seed, n_source=batch)
    optimizer = warmed_optimizer(model, data, 0.3, momentum, 0.01)
    weights = random_weights(batch, seed)
    grad = OneStep(OneStepOptions(at="lookahead"))(make_problem(model, data, weights, optimizer)).gradients[0].grad
    source = data.source.all()

    def target_loss(ws):
        return target_loss_after_real_steps(model, data, optimizer, [source], ws)

    torch.testing.assert_close(grad, central_differences(target_loss, [weights], 0), rtol=1e-5, atol=1e-9)
    assert grad.abs().max() > 0


@settings(max_examples=10, deadline=None)
@given(seed=seeds, steps=st.integers(1, 3), optimizer=st.sampled_from(["sgd", "adam"]))
def test_unrolled_through_a_custom_multi_label_loss_matches_finite_differences(seed, steps, optimizer):
    model, data = multi_label_problem(seed)
    real = warmed_optimizer(model, data, 0.3, 0.9, 0.01) if optimizer == "sgd" else warmed(model, data, "adam")
    weights = random_weights(6, seed)
    results = [Unrolled(UnrolledOptions(steps=steps, backend=backend))(make_problem(model, data, weights, real, 3))
               for backend in ("torch_func", "higher")]
    batches = [g.batch for g in results[0].gradients]
    base = [weights[b.index] for b in batches]

    def target_loss(ws):
        return target_loss_after_real_steps(model, data, real, batches, ws)

    for k, (mine, theirs) in enumerate(zip(*(result.gradients for result in results))):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(mine.grad, central_differences(target_loss, base, k), rtol=1e-5, atol=1e-9)


def test_a_custom_multi_label_loss_trains():
    """The engine trains on multi-label targets through a loss of its own: the target loss
    falls, the weights move, and evaluation reports losses (no accuracy: there are no classes)."""
    from reweight_soseleto import Soseleto, SoseletoOptions

    model, data = multi_label_problem(3, n_source=24)
    strategy = Soseleto(SoseletoOptions(lr=20.0), PerSample(NoOptions(), data.source), torch.device("cpu"))
    engine = Engine(model, strategy, OneStep(OneStepOptions()), data,
                    TrainSettings(source_batch_size=6, lr=0.3, target_lr=0.3), seed=0)
    start = model.target_loss(data.target.all()).item()
    metrics = engine.fit(60, eval_every=30)
    assert metrics["target_loss"] < start and "test_accuracy" not in metrics
    assert strategy.alpha.unique().numel() > 1


def test_a_python_callable_needs_the_loss_signature():
    model, _ = random_problem(0)
    with pytest.raises(TypeError, match="a loss must be callable as loss"):
        model.use_loss("binary_cross_entropy")
    state = list(model.state_dict())
    model.use_loss(torch.nn.BCEWithLogitsLoss(pos_weight=torch.ones(3)))  # even a module is not a submodule
    assert list(model.state_dict()) == state and "example_loss" not in dict(model.named_modules())


MULTI_LABEL_PLUGIN = '''
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from reweight import BilevelData, NoOptions, Split, hookimpl


class BCEOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pos_weight: float = 1.0


def build_bce(options):
    def loss(logits, batch):
        weight = torch.full_like(logits[0], options.pos_weight)
        return F.binary_cross_entropy_with_logits(logits, batch.y, pos_weight=weight, reduction="none").sum(1)
    return loss


def build_toy(options, seed):
    generator = torch.Generator().manual_seed(seed)
    def split(n):
        x = torch.randn(n, 2, generator=generator)
        return Split(x, torch.stack([x[:, 0] > 0, x[:, 1] > 0, x.sum(1) > 0], 1).float())
    return BilevelData(split(40), split(10), split(20), 3, 3)


@hookimpl
def register_losses(register):
    register("binary_cross_entropy", build_bce, options=BCEOptions)


@hookimpl
def register_datasets(register):
    register("multi_label_toy", build_toy, options=NoOptions)
'''


@pytest.fixture
def loss_plugin(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.cache_clear()
    install(tmp_path, "reweight_bce", "0.1", textwrap.dedent(MULTI_LABEL_PLUGIN))
    yield
    registry.cache_clear()
    sys.modules.pop("reweight_bce", None)


def test_a_plugin_supplies_a_loss_through_its_hook(loss_plugin):
    raw = {"name": "t", "data": "multi_label_toy", "loss": {"name": "binary_cross_entropy", "pos_weight": 2.0},
           "model": {"name": "mlp", "hidden": [8]}, "train": {"source_batch_size": 8, "lr": 0.3}}
    config, options = validate(raw)
    assert registry().get("loss", "binary_cross_entropy").plugin == "reweight_bce"
    engine = build_engine(config, options, seed=0)
    start = engine.model.target_loss(engine.data.target.all()).item()
    metrics = engine.fit(40, eval_every=20)
    assert metrics["target_loss"] < start and "test_accuracy" not in metrics
    with pytest.raises(ConfigError, match=r"^loss.pos_wieght: unknown field$"):
        validate({**raw, "loss": {"name": "binary_cross_entropy", "pos_wieght": 2.0}})


@pytest.mark.parametrize(("loss", "message"), [
    ({"name": "cross_entropy", "label_smoothing": 1.5}, "loss.label_smoothing: Input should be less than or equal to 1"),
    ("focal", "loss.name: unknown loss 'focal' (installed: cross_entropy)"),
])
def test_a_bad_loss_is_a_config_error(loss, message):
    """As any component section: checked before anything is built, with the field path."""
    with pytest.raises(ConfigError) as caught:
        validate({"name": "t", "data": "synthetic_2d", "loss": loss})
    assert str(caught.value).startswith(message)  # an unknown name goes on with the hint about entry points


def test_the_loss_section_takes_overrides_like_any_component():
    from reweight.experiment.config_file import apply_overrides

    raw = apply_overrides({"name": "t", "data": "synthetic_2d"}, ["loss.label_smoothing=0.1"])
    _, options = validate(raw)
    assert options["loss"].label_smoothing == 0.1
