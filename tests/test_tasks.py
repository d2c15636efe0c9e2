"""A source made of several tasks: concatenation, one masked head per task, config errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reweight.core.errors import ConfigError, DataError
from reweight.experiment.config import validate
from reweight.experiment.runner import build_engine

TASK = {"name": "synthetic_task", "n_source": 30, "target_per_class": 2, "n_test": 20, "dim": 3}


def tasks_config(**change):
    sources = [
        {"task": "same", "data": {**TASK, "labels": "target"}},
        {"task": "fine", "data": {**TASK, "labels": "clusters", "stream": 1}},
        {"task": "noise", "harmful": True, "data": {**TASK, "labels": "random", "stream": 2, "n_source": 10}},
    ]
    return {"name": "t", "data": {"name": "tasks", "target": TASK, "sources": sources}, "granularity": "per_task",
            "train": {"source_batch_size": 16}, **change}


def test_tasks_are_concatenated_with_their_own_label_slices():
    config, options = validate(tasks_config())
    engine = build_engine(config, options, seed=0)
    data = engine.data
    assert [(t.name, t.classes, t.offset) for t in data.source_tasks] == [("same", 4, 0), ("fine", 8, 4), ("noise", 4, 12)]
    assert data.source_classes == 16 and data.target_classes == 4 and len(data.source) == 70
    task = data.source.meta["task"]
    assert task.tolist() == [0] * 30 + [1] * 30 + [2] * 10
    assert data.source.meta["harmful"].tolist() == [False] * 60 + [True] * 10
    for k, spec in enumerate(data.source_tasks):
        labels = data.source.y[task == k]
        assert labels.min() >= spec.offset and labels.max() < spec.offset + spec.classes
    granularity = engine.strategy.granularity
    assert granularity.num_slots == 3 and granularity.slot_names() == ["task_same", "task_fine", "task_noise"]


def test_masked_head_is_each_tasks_own_cross_entropy():
    config, options = validate(tasks_config())
    engine = build_engine(config, options, seed=1)
    model, data = engine.model, engine.data
    batch = data.source.all()
    losses = model.source_losses(batch)
    logits = model.source_head(model.features(batch.x))
    for k, spec in enumerate(data.source_tasks):
        members = batch.meta["task"] == k
        own = logits[members, spec.offset : spec.offset + spec.classes]
        expected = F.cross_entropy(own, batch.y[members] - spec.offset, reduction="none")
        torch.testing.assert_close(losses[members], expected)
    losses.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_each_tasks_weight_scales_only_its_own_loss():
    config, options = validate(tasks_config())
    engine = build_engine(config, options, seed=2)
    metrics = engine.fit(6, eval_every=3)
    assert {"weight_task_same", "weight_task_fine", "weight_task_noise", "weight_harmful_auc"} <= set(metrics)
    alpha, slots = engine.strategy.alpha, engine.strategy.granularity.slot_of
    torch.testing.assert_close(engine.source_weights(), alpha[slots])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["data"]["sources"][1]["data"].update(labels="nope"),
         "data.sources.1.data.labels: Input should be 'target', 'clusters', 'random' or 'foreign'"),
        (lambda c: c["data"]["sources"][0]["data"].update(wrong=1), "data.sources.0.data.wrong: unknown field"),
        (lambda c: c["data"]["sources"][0]["data"].update(clusters=2, classes=4),
         "data.sources.0.data: need clusters >= classes, got 2 < 4"),
        (lambda c: c["data"]["sources"][2]["data"].update(name="mnist_nope"),
         "data.sources.2.data.name: unknown dataset 'mnist_nope' (installed:"),
        (lambda c: c["data"]["sources"][2].update(task="same"), "data.sources: task names must differ; repeated: same"),
        (lambda c: c["data"]["sources"][0].update(task="a/b"), "data.sources.0.task: String should match pattern"),
        (lambda c: c["data"].update(sources=[]), "data.sources: List should have at least 1 item"),
        (lambda c: c["data"].pop("target"), "data.target: Field required"),
    ],
)
def test_bad_task_lists_name_the_field_path(change, message):
    config = tasks_config()
    change(config)
    with pytest.raises(ConfigError) as caught:
        validate(config)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_tasks_with_other_input_shapes_are_a_data_error():
    config = tasks_config()
    config["data"]["sources"][1]["data"]["dim"] = 5
    config, options = validate(config)
    with pytest.raises(DataError, match=r"data.sources.1.data: inputs of shape \(5,\), but the target's are \(3,\)"):
        build_engine(config, options, seed=0)


def test_per_task_on_a_plain_source_is_a_config_error():
    config, options = validate({"name": "t", "data": "synthetic_2d", "granularity": "per_task"})
    with pytest.raises(ConfigError, match="per_task needs a source made of tasks"):
        build_engine(config, options, seed=0)
