"""Model selection on a validation part of the target set."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reweight.core.data import BilevelData, Split
from reweight.core.errors import ConfigError, DataError
from reweight.experiment import checkpoint
from reweight.experiment.config import validate
from reweight.experiment.runner import build_engine


def data_with_target(labels: list[int]) -> BilevelData:
    y = torch.tensor(labels, dtype=torch.long)
    target = Split(torch.arange(len(y), dtype=torch.float32)[:, None], y)
    source = Split(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))
    return BilevelData(source, target, target, 3, 3)


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(2, 12), min_size=1, max_size=3), fraction=st.floats(0.05, 0.6),
       seed=st.integers(0, 2**16))
def test_the_validation_part_is_a_stratified_disjoint_draw_by_seed(counts, fraction, seed):
    labels = [label for label, count in enumerate(counts) for _ in range(count)]
    data = data_with_target(labels)
    split = data.hold_out(seed, fraction=fraction)
    kept, held = split.target.x.flatten().long().tolist(), split.validation.x.flatten().long().tolist()
    assert sorted(kept + held) == list(range(len(labels))) and not set(kept) & set(held)
    for label, count in enumerate(counts):
        assert int((split.validation.y == label).sum()) == max(1, round(fraction * count))
        assert int((split.target.y == label).sum()) >= 1
    again = data.hold_out(seed, fraction=fraction)
    assert torch.equal(again.validation.x, split.validation.x)


def test_per_class_counts_and_a_class_too_small_to_hold_out():
    data = data_with_target([0] * 5 + [1] * 3)
    split = data.hold_out(0, per_class=2)
    assert split.validation.y.tolist().count(0) == 2 and split.validation.y.tolist().count(1) == 2
    with pytest.raises(DataError, match=r"^selection: class 1 has 3 target examples; holding out 3 would leave none"):
        data.hold_out(0, per_class=3)


def engine(selection: dict, steps: int = 40):
    config, options = validate({
        "name": "t", "data": {"name": "synthetic_2d", "n_source": 60, "n_target": 20, "n_test": 40},
        "model": {"name": "mlp", "hidden": [8]}, "selection": selection,
        "train": {"source_batch_size": 16, "eval_every": 5, "steps": steps},
    })
    return config, build_engine(config, options, seed=1)


def test_the_best_evaluation_is_the_one_with_the_highest_val_accuracy():
    _, straight = engine({"per_class": 3})
    assert len(straight.data.target) == 14 and len(straight.data.validation) == 6
    held = {tuple(row) for row in straight.data.validation.x.tolist()}
    trained = straight.target_sampler.split  # what the target loss (and so the weights) ever sees
    assert len(trained) == 14 and not held & {tuple(row) for row in trained.x.tolist()}
    history = []
    straight.fit(40, eval_every=5, on_eval=lambda step, metrics: history.append((step, dict(metrics))))
    best_step, best = max(history, key=lambda item: (item[1]["val_accuracy"], -item[1]["val_loss"], -item[0]))
    last = history[-1][1]
    assert last["best_step"] == best_step and last["test_accuracy_at_best"] == best["test_accuracy"]
    assert last["val_accuracy_at_best"] == best["val_accuracy"]
    assert straight.best.step == best_step


def test_patience_stops_after_that_many_evaluations_without_improvement():
    _, run = engine({"fraction": 0.3, "patience": 2}, steps=400)
    history = []
    run.fit(400, eval_every=5, patience=2, on_eval=lambda step, metrics: history.append(metrics))
    last = history[-1]
    assert run.step_count < 400, "the toy problem should plateau within 400 steps"
    assert run.step_count == last["best_step"] + 2 * 5


@settings(max_examples=3, deadline=None)
@given(stop=st.integers(1, 29))
def test_a_restored_engine_continues_its_selection_bit_for_bit(tmp_path_factory, stop):
    path = tmp_path_factory.mktemp("ckpt") / "run.pt"
    _, straight = engine({"per_class": 3})

    def save_once(step: int) -> None:
        if step == stop:
            checkpoint.save(path, {"engine": straight.state_dict()})

    expected = straight.fit(30, eval_every=5, after_step=save_once)
    _, resumed = engine({"per_class": 3})
    resumed.load_state_dict(checkpoint.load(path)["engine"])
    assert resumed.fit(30, eval_every=5) == expected
    assert all(torch.equal(resumed.best.model[k], v) for k, v in straight.best.model.items())


@pytest.mark.parametrize(("selection", "message"), [
    ({"fraction": 0.2, "per_class": 2}, "selection: give fraction or per_class, not both"),
    ({"patience": 3}, "selection: patience needs a validation part: set fraction or per_class"),
    ({"fraction": 1.5}, "selection.fraction: Input should be less than 1"),
])
def test_selection_config_errors_are_one_line(selection, message):
    with pytest.raises(ConfigError) as caught:
        validate({"name": "t", "data": "synthetic_2d", "selection": selection})
    assert str(caught.value) == message


def test_the_python_result_holds_the_best_model(tracking_dir):
    import torch.nn as nn

    import reweight

    torch.manual_seed(0)
    x = torch.randn(300, 2)
    y = (x[:, 0] > 0).long()
    data = reweight.BilevelData.from_tensors(source=(x[:200], y[:200]), target=(x[200:240], y[200:240]),
                                             test=(x[240:], y[240:]))
    result = reweight.run({"name": "t", "selection": {"per_class": 5}, "train": {"steps": 30, "eval_every": 10}},
                          data=data, model=nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)))
    best = result.best_model
    assert best is not result.model and isinstance(best[2], nn.Linear)
    with torch.no_grad():
        accuracy = (best(x[240:]).argmax(1) == y[240:]).float().mean().item()
    assert accuracy == pytest.approx(result.metrics["test_accuracy_at_best"])  # measured at the best step


def test_selection_needs_class_labels(tracking_dir):
    import reweight

    x = torch.randn(40, 2)
    multi_hot = (torch.rand(40, 3) > 0.5).float()
    data = reweight.BilevelData(Split(x[:30], multi_hot[:30]), Split(x[30:], multi_hot[30:]),
                                Split(x[30:], multi_hot[30:]), 3, 3)
    with pytest.raises(ConfigError, match=r"^selection: model selection picks the step of the best validation "
                                          r"accuracy, so it needs class labels \(1-d int64\); this data set's target "
                                          r"labels are torch.float32 of shape \(10, 3\)$"):
        reweight.run({"name": "t", "selection": {"fraction": 0.2}, "train": {"source_batch_size": 8}}, data=data)


def test_a_run_stopped_by_patience_is_not_trained_further_on_resume(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "run.pt"
    _, first = engine({"fraction": 0.3, "patience": 2}, steps=400)
    first.fit(400, eval_every=5, patience=2)
    checkpoint.save(path, {"engine": first.state_dict()})
    _, again = engine({"fraction": 0.3, "patience": 2}, steps=400)
    again.load_state_dict(checkpoint.load(path)["engine"])
    assert again.fit(400, eval_every=5, patience=2) == {} and again.step_count == first.step_count
