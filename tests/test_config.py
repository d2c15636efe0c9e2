"""Config validation: every problem is one ConfigError naming the field path."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reweight.core.errors import ConfigError
from reweight.experiment.config import flatten, resolved, validate
from reweight.experiment.config_file import apply_overrides, load

MINIMAL = {"name": "t", "data": {"name": "synthetic_2d"}}


def test_defaults_fill_in():
    config, options = validate(MINIMAL)
    assert config.strategy.name == "soseleto" and options["strategy"].init == 0.5
    assert config.seeds == [0]
    assert resolved(config, options)["strategy"] == {"name": "soseleto", **options["strategy"].model_dump()}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train": {"lr": -1}}, "train.lr: Input should be greater than 0"),
        ({"train": {"stepz": 3}}, "train.stepz: unknown field"),
        ({"strategy": {"name": "soseleto", "lr": 0}}, "strategy.lr: Input should be greater than 0"),
        ({"strategy": {"name": "soseleto", "bogus": 1}}, "strategy.bogus: unknown field"),
        ({"strategy": "nope"}, "strategy.name: unknown strategy 'nope' (installed: fine_tune, joint, learning_to_reweight, meta_weight_net, soseleto, source_only, target_only, uniform"),
        ({"data": {"name": "synthetic_2d", "noise_rate": 1.5}}, "data.noise_rate: Input should be less than or equal to 1"),
        ({"train": {"steps": "many"}}, "train.steps: Input should be a valid integer"),
        ({"seeds": 0}, "seeds: a seed count must be between 1 and 10000"),
        ({"hypergrad": {"method": "one_step", "at": "later"}}, "hypergrad.at: Input should be 'current' or 'lookahead'"),
        ({"train": {"schedule": {"kind": "step"}}}, "train.schedule: a step schedule needs milestones"),
        ({"train": {"schedule": {"kind": "cosine", "milestones": [5]}}},
         "train.schedule: milestones is only for kind: step, not kind: cosine"),
        ({"train": {"schedule": {"kind": "step", "milestones": [9, 4]}}}, "train.schedule: milestones must increase"),
        ({"train": {"steps": 50, "schedule": {"kind": "step", "milestones": [50]}}},
         "train.schedule: milestone 50 is not before the last step (train.steps: 50)"),
        ({"train": {"schedule": {"kind": "linear"}}}, "train.schedule.kind: Input should be 'constant', 'cosine' or 'step'"),
        ({"train": {"schedule": {"kind": "cosine", "final": 1.5}}}, "train.schedule.final: Input should be less than"),
        ({"train": {"optimizer": "rmsprop"}}, "train.optimizer.name: Input should be 'sgd', 'adam' or 'adamw'"),
        ({"train": {"optimizer": {"name": "sgd", "betas": [0.5, 0.9]}}},
         "train.optimizer: betas is only for name: adam or adamw, not name: sgd"),
        ({"train": {"target_optimizer": {"name": "adamw", "momentum": 0.5}}},
         "train.target_optimizer: momentum is only for name: sgd, not name: adamw"),
        ({"train": {"optimizer": {"name": "adam", "betas": [0.9, 1.0]}}},
         "train.optimizer.betas.1: Input should be less than 1"),
        ({"train": {"optimizer": {"name": "adam", "eps": 0}}}, "train.optimizer.eps: Input should be greater than 0"),
        ({"train": {"optimizer": {"name": "adam", "decay": 0.1}}}, "train.optimizer.decay: unknown field"),
        ({"train": {"momentum": 0.5, "optimizer": "adam", "target_optimizer": "adamw"}},
         "train: momentum is SGD's, and neither optimizer nor target_optimizer is sgd"),
        ({"train": {"momentum": 0.5, "target_optimizer": {"name": "sgd", "momentum": 0.3}}},
         "train: momentum is set twice (and as target_optimizer.momentum); keep one"),
        ({"train": {"weight_decay": 0.1, "optimizer": {"name": "adamw", "weight_decay": 0.01}}},
         "train: weight_decay is set twice (and as optimizer.weight_decay); keep one"),
    ],
)
def test_errors_name_the_field(change, message):
    with pytest.raises(ConfigError) as caught:
        validate({**MINIMAL, **change})
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_overrides_reach_nested_fields_and_expand_shorthand():
    raw = apply_overrides({**MINIMAL, "strategy": "uniform"},
                          ["train.steps=7", "strategy.name=soseleto", "strategy.lr=3", "seeds=[1, 2]"])
    config, options = validate(raw)
    assert config.train.steps == 7 and options["strategy"].lr == 3.0 and config.seeds == [1, 2]


def test_switching_plugin_by_name_drops_the_old_options():
    raw = {**MINIMAL, "strategy": {"name": "soseleto", "lr": 5}}
    assert apply_overrides(raw, ["strategy.name=uniform"])["strategy"] == {"name": "uniform"}
    assert apply_overrides(raw, ["strategy.name=soseleto"])["strategy"] == {"name": "soseleto", "lr": 5}
    validate(apply_overrides(raw, ["strategy.name=uniform"]))


def test_method_alias_and_name_are_one_field_for_overrides():
    raw = {**MINIMAL, "hypergrad": {"method": "one_step", "at": "lookahead"}}
    _, options = validate(apply_overrides(raw, ["hypergrad.name=one_step"]))
    assert options["hypergrad"].at == "lookahead"
    _, options = validate(apply_overrides({**MINIMAL, "hypergrad": {"name": "one_step"}}, ["hypergrad.method=one_step",
                                                                                         "hypergrad.at=lookahead"]))
    assert options["hypergrad"].at == "lookahead"


def test_option_of_an_omitted_section_uses_the_default_plugin():
    config, options = validate(apply_overrides(MINIMAL, ["model.hidden=[8]", "strategy.lr=2"]))
    assert (config.model.name, options["model"].hidden) == ("mlp", [8])
    assert (config.strategy.name, options["strategy"].lr) == ("soseleto", 2.0)


@pytest.mark.parametrize(("override", "message"), [
    ("model.hidden=[0]", "model.hidden.0: Input should be greater than 0"),
    ("train.device=meta", "train.device: String should match pattern"),
])
def test_more_bad_values(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate(apply_overrides(MINIMAL, [override]))


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides(MINIMAL, ["train.steps"])


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntrain: {steps: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: malformed YAML \(line 3"):
        load(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load(tmp_path / "absent.yaml")


def test_the_shipped_benchmark_is_valid():
    config, _ = load("benchmarks/synthetic_2d.yaml")
    assert config.data.name == "synthetic_2d"


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [2]}}, "e": None}) == {"a.b": 1, "a.c.d": [2], "e": None}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
keys = st.sampled_from(["name", "seeds", "data", "model", "strategy", "granularity", "hypergrad", "train",
                        "tracking", "steps", "lr", "other"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, json_values | st.dictionaries(keys, json_values, max_size=4), max_size=6),
       st.booleans())
def test_loader_returns_a_config_or_a_config_error(raw, on_minimal):
    try:
        validate({**MINIMAL, **raw} if on_minimal else raw)
    except ConfigError as error:
        assert "\n" not in str(error)


def test_yaml_round_trip_of_resolved_config():
    config, options = validate(MINIMAL)
    full = resolved(config, options)
    assert resolved(*validate(yaml.safe_load(yaml.safe_dump(full)))) == full


def test_an_optimizer_by_bare_name_or_with_settings():
    from reweight.core.optimizers import OptimizerSettings

    bare, _ = validate({**MINIMAL, "train": {"optimizer": "adam", "target_optimizer": "adamw"}})
    assert bare.train.optimizer.settings() == OptimizerSettings("adam")
    assert bare.train.target_optimizer.settings() == OptimizerSettings("adamw")
    spelled, _ = validate({**MINIMAL, "train": {"optimizer": {"name": "adamw", "betas": [0.8, 0.99], "eps": 1e-6,
                                                               "weight_decay": 0.01}}})
    assert spelled.train.optimizer.settings() == OptimizerSettings("adamw", None, 0.01, (0.8, 0.99), 1e-6)
    sgd, _ = validate({**MINIMAL, "train": {"target_optimizer": {"name": "sgd", "momentum": 0.5, "weight_decay": 0.1}}})
    assert sgd.train.target_optimizer.settings() == OptimizerSettings("sgd", 0.5, 0.1)


def test_the_train_section_defaults_are_the_engines():
    """One source of truth: a config without a train section trains as ``TrainSettings()`` does."""
    from dataclasses import fields

    from reweight.core.engine import TrainSettings
    from reweight.experiment.config import TrainConfig

    engine, config = TrainSettings(), TrainConfig()
    optimizers = ("optimizer", "target_optimizer")
    shared = [field.name for field in fields(TrainSettings) if field.name not in ("schedule", "augment", *optimizers)]
    assert shared and all(getattr(config, name) == getattr(engine, name) for name in shared)
    assert all(getattr(config, name).settings() == getattr(engine, name) for name in optimizers)
    from reweight.experiment.augmentation import augmentation
    from reweight.experiment.config import AugmentConfig

    assert augmentation(AugmentConfig()) == engine.augment  # the augment section's defaults: none


@pytest.mark.parametrize("section", ["strategy", "hypergrad", "model"])
def test_a_bare_name_and_the_method_spelling_mean_the_same_section(section):
    name = {"strategy": "uniform", "hypergrad": "unrolled", "model": "mlp"}[section]
    bare, _ = validate({**MINIMAL, section: name})
    spelled, _ = validate({**MINIMAL, section: {"method": name}})
    assert getattr(bare, section).name == getattr(spelled, section).name == name
