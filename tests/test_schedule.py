"""Learning-rate schedules: the rates follow their formulas, a scheduled step is exactly a
constant-rate step at the scheduled rate (look-ahead included), and a restored engine continues
its schedule bit for bit."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reweight.experiment import checkpoint
from reweight.experiment.config import validate
from reweight.experiment.runner import build_engine

LR, TARGET_LR = 0.2, 0.05


def engine_with(schedule: dict, steps: int, strategy: str = "soseleto", hypergrad: dict | None = None):
    config, options = validate({
        "name": "t", "data": {"name": "synthetic_2d", "n_source": 40, "n_target": 10, "n_test": 20},
        "model": {"name": "mlp", "hidden": [8]}, "strategy": {"name": strategy},
        "hypergrad": hypergrad or {"name": "one_step"},
        "train": {"steps": steps, "source_batch_size": 16, "target_batch_size": 4, "lr": LR,
                  "target_lr": TARGET_LR, "schedule": schedule},
    })
    return build_engine(config, options, seed=1)


def rates(engine) -> tuple[float, float]:
    return engine.inner_optimizer.param_groups[0]["lr"], engine.target_optimizer.param_groups[0]["lr"]


def test_a_constant_rate_has_no_scheduler_and_never_changes():
    engine = engine_with({"kind": "constant"}, steps=5)
    assert "lr" not in engine.fit(5, eval_every=5)
    assert engine.schedulers == [] and engine.state_dict()["schedulers"] == []
    assert rates(engine) == (LR, TARGET_LR)


@settings(max_examples=10, deadline=None)
@given(steps=st.integers(2, 12), final=st.floats(0, 1))
def test_cosine_rates_fall_from_the_configured_rate_to_final_times_it(steps, final):
    engine = engine_with({"kind": "cosine", "final": final}, steps=steps)
    for t in range(steps + 1):
        shape = (1 + math.cos(math.pi * t / steps)) / 2
        for got, start in zip(rates(engine), (LR, TARGET_LR), strict=True):
            assert got == pytest.approx(start * (final + (1 - final) * shape), rel=1e-9, abs=1e-15)
        if t < steps:
            engine.step()


@settings(max_examples=10, deadline=None)
@given(milestones=st.lists(st.integers(1, 9), min_size=1, max_size=3, unique=True).map(sorted),
       gamma=st.floats(0.01, 1))
def test_step_rates_are_multiplied_by_gamma_at_each_milestone(milestones, gamma):
    engine = engine_with({"kind": "step", "milestones": milestones, "gamma": gamma}, steps=10)
    for t in range(10):
        passed = sum(m <= t for m in milestones)
        assert rates(engine) == pytest.approx((LR * gamma**passed, TARGET_LR * gamma**passed), rel=1e-12)
        engine.step()


HYPERGRADS = {
    "one_step": {"name": "one_step"},
    "lookahead": {"name": "one_step", "at": "lookahead"},
    "unrolled": {"name": "unrolled", "steps": 2},
    "higher": {"name": "unrolled", "steps": 2, "backend": "higher"},
}


@pytest.mark.parametrize("hypergrad", HYPERGRADS.values(), ids=HYPERGRADS.keys())
def test_a_scheduled_step_is_a_constant_step_at_the_scheduled_rate(hypergrad):
    """Scheduling changes the rates and nothing else: past the milestone, the run is the
    constant-rate run with its rates halved by hand, look-ahead and weights included."""
    scheduled = engine_with({"kind": "step", "milestones": [3], "gamma": 0.5}, steps=6, hypergrad=hypergrad)
    by_hand = engine_with({"kind": "constant"}, steps=6, hypergrad=hypergrad)
    for t in range(6):
        if t == 3:
            for optimizer in (by_hand.inner_optimizer, by_hand.target_optimizer):
                optimizer.param_groups[0]["lr"] *= 0.5
        scheduled.step()
        by_hand.step()
    for (name, a), b in zip(scheduled.model.state_dict().items(), by_hand.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(scheduled.source_weights(), by_hand.source_weights())


@pytest.mark.parametrize("schedule", [{"kind": "cosine", "final": 0.1}, {"kind": "step", "milestones": [4, 9]}])
@settings(max_examples=3, deadline=None)
@given(stop=st.integers(1, 13))
def test_a_restored_engine_continues_its_schedule_bit_for_bit(tmp_path_factory, schedule, stop):
    path = tmp_path_factory.mktemp("ckpt") / "run.pt"
    straight = engine_with(schedule, steps=14)

    def save_once(step: int) -> None:
        if step == stop:
            checkpoint.save(path, {"engine": straight.state_dict()})

    expected = straight.fit(14, eval_every=4, after_step=save_once)
    resumed = engine_with(schedule, steps=14)
    resumed.load_state_dict(checkpoint.load(path)["engine"])
    assert resumed.fit(14, eval_every=4) == expected
    assert expected["lr"] == rates(straight)[0] < LR
    assert rates(resumed) == rates(straight)
    for (name, a), b in zip(resumed.model.state_dict().items(), straight.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(("saved", "loaded"), [("constant", "cosine"), ("cosine", "constant")])
def test_a_checkpoint_of_another_schedule_is_refused(saved, loaded):
    """An optimizer restores its saved rate: a state from another schedule would silently
    train at the wrong rates."""
    state = engine_with({"kind": saved}, steps=8)
    state.fit(3, eval_every=3)
    with pytest.raises(ValueError, match="learning-rate schedulers"):
        engine_with({"kind": loaded}, steps=8).load_state_dict(state.state_dict())
