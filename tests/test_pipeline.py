"""The pipeline section: phases after the bilevel phase that act on the learned weights."""

from __future__ import annotations

import contextlib
import signal

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import reweight
from reweight.core.errors import ConfigError
from reweight.experiment.config import PhaseConfig, validate
from reweight.experiment.pipeline import kept_examples
from tests.test_checkpoints import StopAfter

BASE = {
    "name": "pipeline",
    "seeds": [0],
    "data": {"name": "synthetic_2d", "n_source": 120, "n_target": 20, "n_test": 100, "noise_rate": 0.3},
    "model": {"name": "mlp", "hidden": [8]},
    "strategy": {"name": "soseleto", "lr": 50.0},
    "train": {"steps": 30, "eval_every": 10, "source_batch_size": 16, "target_lr": 0.01},
    "checkpoint": {"every": None},
}


def config(**changes):
    return {**BASE, **changes}


def parameters(result) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in result.model.state_dict().items()}


@pytest.mark.parametrize("phase, message", [
    ({"phase": "filter_retrain", "steps": 5}, "filter_retrain needs one of drop_fraction and drop_below"),
    ({"phase": "filter_retrain", "steps": 5, "drop_fraction": 0.2, "drop_below": 0.3},
     "filter_retrain needs one of drop_fraction and drop_below"),
    ({"phase": "fine_tune", "steps": 5, "drop_fraction": 0.2}, "drop_fraction is only for phase: filter_retrain"),
    ({"phase": "fine_tune", "steps": 0}, "pipeline.0.steps: Input should be greater than or equal to 1"),
    ({"phase": "distill", "steps": 5}, "pipeline.0.phase: Input should be 'fine_tune' or 'filter_retrain'"),
])
def test_a_phase_that_does_not_fit_is_one_line(phase, message):
    with pytest.raises(ConfigError) as caught:
        validate(config(pipeline=[phase]))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_patience_would_cut_the_pipeline_short_and_is_refused():
    with pytest.raises(ConfigError, match="selection.patience would stop a pipeline"):
        validate(config(pipeline=[{"phase": "fine_tune", "steps": 5}], selection={"per_class": 2, "patience": 2}))


def test_reweighting_with_uniform_weights_then_fine_tuning_is_the_fine_tune_baseline(tracking_dir):
    """The degenerate pipeline: a uniform bilevel phase, then fine_tune, trains exactly as the
    fine_tune strategy with as many source steps."""
    piped = reweight.run(config(strategy={"name": "uniform"}, pipeline=[{"phase": "fine_tune", "steps": 20}]))
    baseline = reweight.run(config(strategy={"name": "fine_tune", "source_steps": 30},
                                   train={**BASE["train"], "steps": 50}))
    for name, value in parameters(baseline).items():
        assert torch.equal(parameters(piped)[name], value), name
    assert piped.metrics["test_accuracy"] == baseline.metrics["test_accuracy"]
    assert max(step for step, _ in piped.history["test_accuracy"]) == 50


def test_after_the_bilevel_phase_the_weights_reported_are_the_learned_ones(tracking_dir):
    """Fine-tuning trains with source weights 0, but the metrics and the weights file keep what
    the bilevel phase learned."""
    learned = reweight.run(config())
    piped = reweight.run(config(pipeline=[{"phase": "fine_tune", "steps": 10}]))
    assert torch.equal(piped.weights, learned.weights)
    assert piped.metrics["weight_noise_auc"] == learned.metrics["weight_noise_auc"]
    assert piped.metrics["target_loss"] < learned.metrics["target_loss"]  # the phase trained on the target


def corrupted_labels() -> torch.Tensor:
    """Which source labels the benchmark corrupted (seed 0), from its own builder."""
    from reweight.core.plugins import registry

    _, options = validate(config())
    return registry().get("dataset", "synthetic_2d").factory(options["data"], 0).source.meta["corrupted"].bool()


def test_filter_and_retrain_keeps_the_highest_weights_and_reports_what_it_kept(tracking_dir):
    learned = reweight.run(config()).weights
    result = reweight.run(config(pipeline=[{"phase": "filter_retrain", "steps": 10, "drop_fraction": 0.25}]))
    kept = kept_examples(learned, PhaseConfig(phase="filter_retrain", steps=1, drop_fraction=0.25))
    assert result.metrics["kept_fraction"] == pytest.approx(kept.float().mean().item()) == pytest.approx(0.75)
    assert result.metrics["kept_corrupted_fraction"] == pytest.approx(corrupted_labels()[kept].float().mean().item())
    assert learned[~kept].max() <= learned[kept].min()  # the dropped examples are the lowest-weighted ones


@pytest.mark.parametrize("restart", [True, False])
def test_a_restart_retrains_from_the_initial_model_and_continuing_does_not(restart):
    from reweight.experiment.pipeline import enter_next_phase
    from reweight.experiment.runner import build_engine

    phase = {"phase": "filter_retrain", "steps": 10, "drop_below": 0.0, "restart": restart}
    checked, options = validate(config(pipeline=[phase]))
    engine = build_engine(checked, options, 0)
    initial = {name: value.clone() for name, value in engine.model.state_dict().items()}
    engine.fit(30, 10)
    trained = {name: value.clone() for name, value in engine.model.state_dict().items()}
    enter_next_phase(engine)
    now = engine.model.state_dict()
    expected = initial if restart else trained
    assert all(torch.equal(now[name], value) for name, value in expected.items())
    assert (len(engine.inner_optimizer.state) == 0) == restart  # momentum starts afresh with the model
    assert engine.strategy.keep.all()  # every weight is at least 0


def test_a_threshold_that_drops_everything_is_one_line(tracking_dir):
    with pytest.raises(ConfigError) as caught:
        reweight.run(config(pipeline=[{"phase": "filter_retrain", "steps": 5, "drop_below": 2.0}]))
    assert str(caught.value).startswith("pipeline: filter_retrain with drop_below 2.0 drops every one of the 120 "
                                        "source examples") and "\n" not in str(caught.value)


@settings(max_examples=50, deadline=None)
@given(weights=st.lists(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]), min_size=2, max_size=40),
       fraction=st.floats(0.01, 0.99))
def test_a_fraction_drops_exactly_that_many_of_the_lowest_weights(weights, fraction):
    learned = torch.tensor(weights)
    drop = round(fraction * len(weights))
    if drop == len(weights):
        with pytest.raises(ConfigError):
            kept_examples(learned, PhaseConfig(phase="filter_retrain", steps=1, drop_fraction=fraction))
        return
    keep = kept_examples(learned, PhaseConfig(phase="filter_retrain", steps=1, drop_fraction=fraction))
    assert int((~keep).sum()) == drop
    if drop and bool(keep.any()):
        assert learned[~keep].max() <= learned[keep].min()
    again = kept_examples(learned, PhaseConfig(phase="filter_retrain", steps=1, drop_fraction=fraction))
    assert torch.equal(keep, again)


def test_a_pipeline_interrupted_in_a_later_phase_resumes_to_the_uninterrupted_result(tracking_dir, monkeypatch):
    """Stopped inside filter_retrain (after the boundary's checkpoint), resumed: the same final
    model and weights file as a run that was never stopped."""
    from reweight.experiment import runner

    phases = [{"phase": "filter_retrain", "steps": 20, "drop_fraction": 0.3}, {"phase": "fine_tune", "steps": 10}]
    piped = config(pipeline=phases, checkpoint={"every": 10})
    expected = reweight.run({**piped, "name": "uninterrupted"})
    with monkeypatch.context() as patch:
        patch.setattr(runner, "stop_on_signal", lambda: contextlib.nullcontext(StopAfter(42, signal.SIGTERM)))
        with pytest.raises(reweight.ReweightError):
            reweight.run(piped)
    resumed = reweight.run(piped, resume=True)
    for name, value in parameters(expected).items():
        assert torch.equal(parameters(resumed)[name], value), name
    assert torch.equal(resumed.weights, expected.weights)
    assert resumed.metrics["kept_fraction"] == expected.metrics["kept_fraction"]


def test_a_filtered_batch_trains_on_the_mean_of_its_kept_examples():
    """Dropped examples weigh 0 and the kept ones B / (number kept): the source loss of a batch
    is the mean over its kept examples, as if the dropped ones were not in the set."""
    from plugins.reweight_uniform import Uniform
    from reweight.components.granularities.per_sample import PerSample
    from reweight.core.data import Batch
    from reweight.experiment.pipeline import PhasedStrategy

    phase = PhaseConfig(phase="filter_retrain", steps=1, drop_fraction=0.5)
    from reweight.core.data import Split

    source = Split(torch.zeros(6, 2), torch.zeros(6, dtype=torch.long))
    strategy = PhasedStrategy(Uniform(None, PerSample(None, source), torch.device("cpu")), [phase])
    strategy.phase, strategy.keep = 1, torch.tensor([True, False, True, True, False, False])
    batch = Batch(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 2, 5]))
    assert strategy.weights(batch, None).tolist() == [2.0, 0.0, 2.0, 0.0]
    losses = torch.tensor([1.0, 7.0, 3.0, 9.0])
    assert (strategy.weights(batch, None) * losses).mean().item() == 2.0  # (1 + 3) / 2
    none_kept = Batch(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long), torch.tensor([1, 4]))
    assert strategy.weights(none_kept, None).tolist() == [0.0, 0.0]


def test_a_schedule_spans_the_pipeline_and_its_milestones_may_lie_in_a_later_phase():
    step = {"kind": "step", "milestones": [40]}
    validate(config(train={**BASE["train"], "schedule": step}, pipeline=[{"phase": "fine_tune", "steps": 20}]))
    with pytest.raises(ConfigError, match=r"^train.schedule: milestone 50 is not before the last step "
                                          r"\(train.steps: 30, and the pipeline's 20: 50\)$"):
        validate(config(train={**BASE["train"], "schedule": {**step, "milestones": [50]}},
                        pipeline=[{"phase": "fine_tune", "steps": 20}]))


def test_a_strategy_that_hides_its_state_is_caught_inside_a_pipeline_too():
    from reweight.core.errors import ContractError
    from reweight.core.plugins import register as register_component
    from reweight.experiment.runner import build_engine
    from tests.test_bad_input import ForgetfulState

    register_component("strategy", "forgetful", ForgetfulState)
    checked, options = validate(config(strategy={"name": "forgetful"}, pipeline=[{"phase": "fine_tune", "steps": 5}]))
    engine = build_engine(checked, options, 0)
    with pytest.raises(ContractError, match="its state changed in the first step"):
        engine.step()


def test_a_pipeline_stopped_exactly_where_the_bilevel_phase_ends_resumes_to_the_same_result(tracking_dir, monkeypatch,
                                                                                           capsys):
    """The checkpoint of the boundary step is saved before the next phase is entered; the
    resumed run enters it and ends as the uninterrupted one."""
    from reweight.experiment import runner

    phases = [{"phase": "filter_retrain", "steps": 20, "drop_fraction": 0.3}]
    piped = config(pipeline=phases, checkpoint={"every": 10})
    expected = reweight.run({**piped, "name": "uninterrupted"})
    with monkeypatch.context() as patch:
        patch.setattr(runner, "stop_on_signal", lambda: contextlib.nullcontext(StopAfter(30, signal.SIGTERM)))
        with pytest.raises(reweight.ReweightError, match="at step 30 of"):
            reweight.run(piped)
    resumed = reweight.run(piped, resume=True)
    assert "resuming at step 30" in capsys.readouterr().out
    for name, value in parameters(expected).items():
        assert torch.equal(parameters(resumed)[name], value), name
    assert torch.equal(resumed.weights, expected.weights)


@settings(max_examples=40, deadline=None)
@given(weights=st.lists(st.floats(0, 1), min_size=4, max_size=40), labels_seed=st.integers(0, 1000),
       fraction=st.floats(0.05, 0.6))
def test_a_per_class_filter_drops_the_fraction_within_every_class(weights, labels_seed, fraction):
    learned = torch.tensor(weights)
    labels = torch.randint(0, 3, (len(weights),), generator=torch.Generator().manual_seed(labels_seed))
    phase = PhaseConfig(phase="filter_retrain", steps=1, drop_fraction=fraction, per_class=True)
    if all(round(fraction * int((labels == c).sum())) == int((labels == c).sum()) for c in labels.unique()):
        return  # every class dropped whole: the one-line error, tested above
    keep = kept_examples(learned, phase, labels)
    for c in labels.unique():
        members = labels == c
        assert int((~keep & members).sum()) == round(fraction * int(members.sum()))
        if bool((~keep & members).any()) and bool((keep & members).any()):
            assert learned[~keep & members].max() <= learned[keep & members].min()


def test_per_class_goes_with_a_fraction():
    with pytest.raises(ConfigError, match="per_class goes with drop_fraction"):
        validate(config(pipeline=[{"phase": "filter_retrain", "steps": 5, "drop_below": 0.2, "per_class": True}]))
