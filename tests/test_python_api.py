"""The Python entry point: the docs page's examples run as written, and its one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import reweight
from reweight.core.errors import ConfigError, DataError

PAGE = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def page_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


def test_the_page_examples_run_and_do_what_they_say(tracking_dir):
    namespace: dict = {}
    for block in page_blocks():
        exec(compile(block, str(PAGE), "exec"), namespace)
    result, moved, texts, blob = (namespace[name] for name in ("result", "moved", "texts", "blob"))
    assert result.metrics["test_accuracy"] > 0.75 and result.run_ids and result.weights.shape == (400,)
    head = moved.model[2]
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (16, 2)  # as the page says
    assert texts.history["test_accuracy"][-1][0] == 30 and texts.weights.shape == (200,)
    assert blob.weights.shape == (150,) and blob.metrics["test_accuracy"] >= 0
    adamw = namespace["adamw"]
    assert adamw.weights[:100].mean() < adamw.weights[100:].mean() - 0.1  # AdamW finds the wrong labels too
    engine_weights = namespace["weights"]
    assert engine_weights.shape == (400,) and bool(((0 <= engine_weights) & (engine_weights <= 1)).all())
    alpha = namespace["alpha"]
    assert alpha.shape == (400,) and not torch.equal(alpha, torch.full_like(alpha, 0.5))


def first_example(tracking_dir):
    namespace: dict = {}
    exec(compile(page_blocks()[0], str(PAGE), "exec"), namespace)
    return namespace


def test_the_first_example_trains_the_users_module_and_finds_the_wrong_labels(tracking_dir):
    namespace = first_example(tracking_dir)
    result, model = namespace["result"], namespace["model"]
    assert result.model is model and isinstance(model[2], nn.Linear)  # the classifier is back in place
    assert result.weights[:100].mean() < result.weights[100:].mean() - 0.1
    assert result.metrics["test_accuracy"] > 0.75
    assert [step for step, _ in result.history["test_accuracy"]][-1] == 300
    import mlflow

    run = mlflow.get_run(result.run_ids[0])
    assert run.data.params["data.name"] == "python_data" and run.data.params["model.name"] == "python_model"


def test_several_seeds_start_from_the_same_initial_module(tracking_dir):
    torch.manual_seed(0)
    x = torch.randn(120, 2)
    y = (x[:, 0] > 0).long()
    data = reweight.BilevelData.from_tensors(source=(x[:80], y[:80]), target=(x[80:], y[80:]))
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
    initial = [p.detach().clone() for p in model.parameters()]
    result = reweight.run({"name": "seeds", "seeds": 2, "train": {"steps": 5, "eval_every": 5}}, data=data,
                          model=model)
    assert [run.seed for run in result.runs] == [0, 1] and result.runs[0].model is model
    other = result.runs[1].model
    assert other is not model and not any(p is q for p, q in zip(other.parameters(), model.parameters()))
    with pytest.raises(ValueError, match="has 2 runs"):
        result.model
    # the second seed's copy started from the module's initial weights, not from the trained first seed
    fresh = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
    for p, value in zip(fresh.parameters(), initial):
        p.data.copy_(value)
    again = reweight.run({"name": "seeds", "seeds": [1], "train": {"steps": 5, "eval_every": 5}}, data=data,
                         model=fresh)
    assert all(torch.equal(p, q) for p, q in zip(again.model.parameters(), other.parameters()))


def small_data(**changes):
    x = torch.randn(60, 4)
    y = torch.randint(0, 2, (60,))
    return reweight.BilevelData.from_tensors(source=(x[:40], y[:40]), target=(x[40:], y[40:]), **changes)


@pytest.mark.parametrize(("module", "options", "message"), [
    (nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)), {"target": nn.Linear(5, 2)},
     "the target head takes 5 features, but the representation gives 8 (the input width of '2')"),
    (nn.Sequential(nn.Linear(4, 2)), {},
     "Sequential without its head '0' has no parameters: there is no representation to train"),
    (nn.Sequential(nn.ReLU()), {}, "Sequential has no nn.Linear to use as its classifier; name the head with head=..."),
    (nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)), {"head": "fc"}, "Sequential has no submodule 'fc' (its children: 0, 1)"),
])
def test_a_module_that_cannot_be_split_is_one_line(module, options, message):
    with pytest.raises(ConfigError) as caught:
        reweight.bilevel(module, **options)
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_representation_narrower_than_its_head_is_one_line_before_training(tracking_dir):
    class Mismatch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(4, 6)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.body(x))

    with pytest.raises(ConfigError, match=r"^the source head takes 8 features, but the representation gives 6$"):
        reweight.run({"name": "t", "train": {"steps": 2}}, data=small_data(), model=Mismatch())


def test_labels_that_are_not_class_indices_are_one_line():
    x = torch.randn(10, 2)
    with pytest.raises(DataError, match=r"^source: labels must be a 1-d int64 tensor of class indices, got torch.float32"):
        reweight.BilevelData.from_tensors(source=(x, torch.zeros(10)), target=(x, torch.zeros(10).long()))
    with pytest.raises(DataError, match=r"^target: labels must lie in 0\.\.1, got 0\.\.3"):
        reweight.BilevelData.from_tensors(source=(x, torch.zeros(10).long()), target=(x, torch.arange(10) % 4),
                                          target_classes=2)
    data = small_data()
    data.target.y = data.target.y.float()
    net = reweight.bilevel(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)))
    with pytest.raises(ConfigError, match=r"^the target labels are torch.float32; cross-entropy needs int64 class indices"):
        reweight.Engine(net, uniform_strategy(data), reweight.OneStep(reweight.OneStepOptions()), data,
                        reweight.TrainSettings(), seed=0)


def uniform_strategy(data):
    from reweight.core.plugins import registry

    uniform, per_sample = registry().get("strategy", "uniform"), registry().get("granularity", "per_sample")
    return uniform.factory(uniform.options(), per_sample.factory(per_sample.options(), data.source), torch.device("cpu"))


def test_model_and_data_on_different_devices_are_one_line():
    data = small_data()
    net = reweight.bilevel(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))).to("meta")
    with pytest.raises(ConfigError, match=r"^the model is on meta and the data on cpu; move both to one device"):
        reweight.Engine(net, uniform_strategy(data), reweight.OneStep(reweight.OneStepOptions()), data,
                        reweight.TrainSettings(), seed=0)


def test_a_cuda_index_that_does_not_exist_is_one_line(monkeypatch):
    from reweight.experiment.runner import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match=r"^train.device: 'cuda:2' does not exist: this machine has 2 CUDA device"):
        resolve_device("cuda:2")


def test_a_runtime_component_is_validated_like_an_installed_one(tracking_dir):
    from pydantic import BaseModel, ConfigDict

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        n: int = 60

    reweight.register("dataset", "runtime_data", lambda options, seed: small_data(), options=Options)
    with pytest.raises(ConfigError, match=r"^data.m: unknown field$"):
        reweight.run({"name": "t", "data": {"name": "runtime_data", "m": 1}})
    from reweight.core.plugins import registry

    component = registry().get("dataset", "runtime_data")
    assert (component.plugin, component.package) == ("python", "python")
    with pytest.raises(ValueError, match="unknown component kind 'datasets'"):
        reweight.register("datasets", "x", lambda options, seed: None)


def test_the_config_may_be_a_yaml_path_or_the_model(tracking_dir, tmp_path):
    from reweight.experiment.config import validate

    path = tmp_path / "c.yaml"
    path.write_text("name: from_yaml\ndata: {name: synthetic_2d, n_source: 40, n_target: 10, n_test: 20}\n"
                    "train: {steps: 3, eval_every: 3}\n")
    assert reweight.run(path).metrics["test_accuracy"] >= 0
    config, _ = validate({"name": "from_model", "data": {"name": "synthetic_2d", "n_source": 40, "n_target": 10,
                                                            "n_test": 20}, "train": {"steps": 3, "eval_every": 3}})
    result = reweight.run(config, overrides=["train.steps=6"])
    assert result.history["test_accuracy"][-1][0] == 6 and result.weights.shape == (40,)


def test_a_failed_run_hands_the_module_back_whole(tracking_dir):
    """The head goes back in place even when the run stops with an error."""
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    with pytest.raises(ConfigError, match="the model's representation fails on the data's inputs"):
        reweight.run({"name": "t", "train": {"steps": 2}}, data=small_data(), model=model)  # inputs of width 4
    assert isinstance(model[2], nn.Linear) and model[2].out_features == 2
    x = torch.randn(60, 3)
    y = torch.randint(0, 2, (60,))
    fits = reweight.BilevelData.from_tensors(source=(x[:40], y[:40]), target=(x[40:], y[40:]))
    assert reweight.run({"name": "t", "train": {"steps": 2, "eval_every": 2}}, data=fits, model=model).model is model


def test_a_misspelt_model_option_is_an_error_with_a_module_too(tracking_dir):
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    with pytest.raises(ConfigError, match=r"^model.taget: unknown field$"):
        reweight.run({"name": "t", "model": {"taget": "separate"}}, data=small_data(), model=model)


def test_the_public_api_lists_its_lazy_names():
    assert {"run", "bilevel", "Result", "OneStep"} <= set(dir(reweight))
