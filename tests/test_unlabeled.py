"""Unlabeled target examples: the terms, their place in the target loss, the hypergradients
through them, and the config and data options."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import reweight
from reweight.components.hypergradients.one_step import OneStep, OneStepOptions
from reweight.components.hypergradients.unrolled import Unrolled, UnrolledOptions
from reweight.components.unlabeled import Entropy, PseudoLabel, PseudoLabelOptions, UnlabeledOptions
from reweight.core.data import BilevelData, Split
from reweight.core.errors import ConfigError
from reweight.core.plugins import register
from tests.conftest import inner_optimizer, make_problem, random_problem
from tests.test_hypergrad import random_weights
from tests.test_hypergrad_adam import after_real_steps

seeds = st.integers(0, 10_000)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, classes=st.integers(2, 6), scale=st.floats(0.01, 30.0), weight=st.floats(0.01, 3.0))
def test_entropy_lies_between_zero_and_weight_times_log_classes(seed, classes, scale, weight):
    logits = scale * torch.randn(9, classes, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    value = Entropy(UnlabeledOptions(weight=weight))(logits).item()
    assert -1e-12 <= value <= weight * math.log(classes) + 1e-9
    uniform = Entropy(UnlabeledOptions(weight=weight))(torch.zeros(4, classes, dtype=torch.float64)).item()
    assert uniform == pytest.approx(weight * math.log(classes))


def test_pseudo_labels_count_only_confident_predictions_and_carry_no_gradient():
    term = PseudoLabel(PseudoLabelOptions(weight=2.0, threshold=0.9))
    unsure = torch.zeros(5, 3, requires_grad=True)
    assert term(unsure).item() == 0.0
    logits = torch.tensor([[6.0, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 5.0]], requires_grad=True)
    term(logits).backward()
    fixed = logits.detach().clone().requires_grad_()
    losses = torch.nn.functional.cross_entropy(fixed, torch.tensor([0, 1, 2]), reduction="none")
    (2.0 * (losses * torch.tensor([1.0, 0.0, 1.0])).sum() / 3).backward()
    torch.testing.assert_close(logits.grad, fixed.grad)  # the labels are constants: CE's gradient alone


def with_unlabeled(seed: int, shared_head: bool = False):
    model, data = random_problem(seed, n_source=6, shared_head=shared_head)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    model.use_unlabeled(Entropy(UnlabeledOptions(weight=0.7)))
    return model, data, x


def target_loss_after_real_steps(model, data, x, optimizer, batches, weights_per_batch):
    """L_t, unlabeled term included, after len(batches) real optimizer steps (on copies)."""
    model = after_real_steps(model, optimizer, batches, weights_per_batch)
    target = data.target.all()
    target.unlabeled = x
    with torch.no_grad():
        return model.target_loss(target).item()


@settings(max_examples=8, deadline=None)
@given(seed=seeds, method=st.sampled_from(["lookahead", "torch_func", "higher"]), shared_head=st.booleans())
def test_hypergradients_through_the_unlabeled_term_match_finite_differences(seed, method, shared_head):
    model, data, x = with_unlabeled(seed, shared_head)
    weights = random_weights(6, seed)
    optimizer = inner_optimizer(model, 0.3, momentum=0.9)
    problem = make_problem(model, data, weights, optimizer, batch_size=3)
    problem.target.unlabeled = x
    problem.target_loss = model.target_loss(problem.target)
    if method == "lookahead":
        result = OneStep(OneStepOptions(at="lookahead"))(problem)
    else:
        result = Unrolled(UnrolledOptions(steps=2, backend=method))(problem)
    batches = [g.batch for g in result.gradients]
    base = [weights[b.index] for b in batches]
    h = 1e-5
    for k, gradient in enumerate(result.gradients):
        for j in range(len(gradient.batch)):
            plus, minus = [w.clone() for w in base], [w.clone() for w in base]
            plus[k][j] += h
            minus[k][j] -= h
            finite = (target_loss_after_real_steps(model, data, x, optimizer, batches, plus)
                      - target_loss_after_real_steps(model, data, x, optimizer, batches, minus)) / (2 * h)
            assert gradient.grad[j].item() == pytest.approx(finite, rel=1e-5, abs=1e-9)


def test_the_term_changes_the_hypergradient_and_without_unlabeled_inputs_is_absent():
    model, data, x = with_unlabeled(4)
    target = data.target.all()
    plain = model.target_loss(target)
    target.unlabeled = x
    assert model.target_loss(target).item() > plain.item()  # the entropy of 5 predictions, times 0.7
    model.use_unlabeled(None)
    assert model.target_loss(target).item() == plain.item()


def unlabeled_data(seed: int = 0) -> BilevelData:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])

    def points(n):
        y = torch.randint(0, 2, (n,), generator=generator)
        return centres[y] + torch.randn(n, 2, generator=generator), y

    data = BilevelData.from_tensors(points(80), points(8), points(50))
    x, _ = points(40)
    data.unlabeled = Split(x, torch.full((40,), -1))
    return data


CONFIG = {"name": "unlabeled", "seeds": [0], "model": {"name": "mlp", "hidden": [6]},
          "strategy": {"name": "soseleto", "lr": 20.0},
          "train": {"steps": 20, "eval_every": 10, "source_batch_size": 16, "target_lr": 0.05},
          "checkpoint": {"every": None}}


def test_an_unlabeled_term_trains_every_strategy_and_is_logged(tracking_dir):
    data = unlabeled_data()
    for strategy in ({"name": "soseleto", "lr": 20.0}, {"name": "target_only"}, {"name": "meta_weight_net"}):
        config = {**CONFIG, "strategy": strategy}
        without = reweight.run(config, data=data)
        with_term = reweight.run({**config, "unlabeled": {"name": "entropy", "weight": 1.0, "batch_size": 16}},
                                 data=data)
        assert not torch.equal(with_term.model.state_dict()["target_head.weight"],
                               without.model.state_dict()["target_head.weight"]), strategy
    import mlflow

    logged = mlflow.get_run(with_term.runs[0].run_id).data.params
    assert logged["unlabeled.name"] == "entropy" and logged["unlabeled.batch_size"] == "16"
    assert "unlabeled.name" not in mlflow.get_run(without.runs[0].run_id).data.params


def test_a_run_with_unlabeled_data_resumes_bit_for_bit():
    from reweight.experiment.config import validate
    from reweight.experiment.runner import build_engine

    register("dataset", "with_unlabeled", lambda options, seed: unlabeled_data(seed))
    config, options = validate({**CONFIG, "data": {"name": "with_unlabeled"},
                                "unlabeled": {"name": "pseudo_label", "threshold": 0.6, "batch_size": 16}})
    first = build_engine(config, options, 0)
    first.fit(10, 10)
    saved = copy.deepcopy(first.state_dict())
    first.fit(25, 5)
    second = build_engine(config, options, 0)
    second.load_state_dict(saved)
    second.fit(25, 5)
    for name, value in first.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[name], value), name
    assert torch.equal(first.strategy.alpha, second.strategy.alpha)


@pytest.mark.parametrize("section, message", [
    ({"name": "entropy"}, "unlabeled: data set 'synthetic_2d' has no unlabeled target examples"),
    ({"name": "entropie"}, "unlabeled.name: unknown unlabeled 'entropie' (installed: entropy, pseudo_label"),
    ({"name": "entropy", "weight": -1}, "unlabeled.weight: Input should be greater than 0"),
    ({"name": "entropy", "threshold": 0.9}, "unlabeled.threshold:"),
])
def test_a_bad_unlabeled_section_is_one_line(tracking_dir, section, message):
    config = {**CONFIG, "data": {"name": "synthetic_2d", "n_source": 40, "n_target": 10, "n_test": 20},
              "unlabeled": section}
    with pytest.raises(ConfigError) as caught:
        reweight.run(config)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value), caught.value


def test_the_term_reaches_the_representation_and_the_weights(tracking_dir):
    """Through c = 1 (target_only) the term trains θ; through the hypergradient (SOSELETO,
    c = 0) it moves the weights."""
    data, term = unlabeled_data(), {"name": "entropy", "weight": 1.0, "batch_size": 16}
    for strategy in ({"name": "target_only"}, {"name": "soseleto", "lr": 20.0}):
        config = {**CONFIG, "strategy": strategy}
        without, with_term = reweight.run(config, data=data), reweight.run({**config, "unlabeled": term}, data=data)
        theta = [name for name in without.model.state_dict() if name.startswith("representation.")]
        assert theta
        moved = any(not torch.equal(without.model.state_dict()[n], with_term.model.state_dict()[n]) for n in theta)
        assert moved, strategy
    assert not torch.equal(with_term.weights, without.weights)  # SOSELETO's α, through v = ∇θ L_t


def test_overrides_and_sweeps_treat_the_unlabeled_section_as_a_component():
    from reweight.experiment.config_file import apply_overrides

    raw = {**CONFIG, "data": {"name": "synthetic_2d"}, "unlabeled": {"name": "pseudo_label", "threshold": 0.8}}
    assert apply_overrides(dict(raw), ["unlabeled.name=entropy"])["unlabeled"] == {"name": "entropy"}
    bare = apply_overrides({**raw, "unlabeled": "entropy"}, ["unlabeled.weight=0.5"])
    assert bare["unlabeled"] == {"name": "entropy", "weight": 0.5}


def test_a_term_that_is_not_an_unlabeled_loss_is_one_line(tracking_dir):
    register("unlabeled", "plain", lambda options: (lambda logits: logits.sum()))
    with pytest.raises(ConfigError) as caught:
        reweight.run({**CONFIG, "unlabeled": {"name": "plain"}}, data=unlabeled_data())
    assert str(caught.value).startswith("unlabeled.name: unlabeled 'plain' (plugin 'python') did not build an "
                                        "UnlabeledLoss") and "\n" not in str(caught.value)


@pytest.mark.parametrize("value", [True, 0, "all", 2.5])
def test_the_transfer_unlabeled_option_is_a_count_or_rest(value):
    from pydantic import ValidationError

    from reweight.components.datasets.vision import TransferTargetOptions

    with pytest.raises(ValidationError, match="expected a count of images \\(at least 1\\) or 'rest'"):
        TransferTargetOptions(dataset="mnist", unlabeled=value)
