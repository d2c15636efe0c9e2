"""Sweep expansion: a grid of field values × seeds, every combination validated up front."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reweight.core.errors import ConfigError
from reweight.experiment.sweep import expand, label, parse_grid

BASE = {"name": "t", "seeds": [0, 1], "data": {"name": "synthetic_2d", "noise_rate": 0.2},
        "strategy": {"name": "soseleto", "lr": 50}}


def test_no_sweep_is_one_combination_without_values():
    plan = expand(BASE)
    assert len(plan.combinations) == 1 and plan.grid == {} and plan.runs == 2
    assert plan.combinations[0].values == {} and plan.combinations[0].name == "soseleto"
    assert "sweep" not in plan.raw


def test_grid_is_the_product_first_path_slowest():
    plan = expand({**BASE, "sweep": {"strategy.name": ["soseleto", "uniform"], "data.noise_rate": [0.2, 0.4]}})
    assert [c.values for c in plan.combinations] == [
        {"strategy.name": "soseleto", "data.noise_rate": 0.2},
        {"strategy.name": "soseleto", "data.noise_rate": 0.4},
        {"strategy.name": "uniform", "data.noise_rate": 0.2},
        {"strategy.name": "uniform", "data.noise_rate": 0.4},
    ]
    assert plan.runs == 8 and plan.paths == ["strategy.name", "data.noise_rate"]
    assert [c.options["data"].noise_rate for c in plan.combinations] == [0.2, 0.4, 0.2, 0.4]
    assert plan.combinations[-1].name == "strategy.name=uniform data.noise_rate=0.4"
    assert plan.raw["sweep"] == {"strategy.name": ["soseleto", "uniform"], "data.noise_rate": [0.2, 0.4]}


def test_switching_a_plugin_drops_its_options_and_keeping_it_keeps_them():
    plan = expand({**BASE, "sweep": {"strategy.name": ["soseleto", "uniform"]}})
    soseleto, uniform = plan.combinations
    assert soseleto.options["strategy"].lr == 50 and uniform.config.strategy.name == "uniform"
    assert uniform.config.strategy.raw_options == {}


def test_whole_sections_sweep_plugins_with_their_own_options():
    plan = expand({**BASE, "sweep": {"strategy": ["soseleto", {"name": "soseleto", "lr": 20}, "uniform"]}})
    assert [c.config.strategy.name for c in plan.combinations] == ["soseleto", "soseleto", "uniform"]
    assert [c.options["strategy"].lr for c in plan.combinations[:2]] == [50, 20]  # a bare name keeps the options
    assert [c.labels["strategy"] for c in plan.combinations] == ["soseleto", "soseleto(lr=20)", "uniform"]


def test_names_are_set_before_options_whatever_the_order():
    plan = expand({**BASE, "sweep": {"strategy.lr": [5, 7], "strategy.name": ["soseleto"]}})
    assert [c.options["strategy"].lr for c in plan.combinations] == [5, 7]


def test_a_bad_combination_names_the_path_and_value():
    with pytest.raises(ConfigError) as caught:
        expand({**BASE, "sweep": {"strategy.name": ["soseleto", "uniform"], "strategy.lr": [10]}})
    assert str(caught.value) == ("sweep combination strategy.name=uniform, strategy.lr=10: "
                                 "strategy.lr: unknown field")
    with pytest.raises(ConfigError, match=r"^sweep combination data.noise_rate=1.5: data.noise_rate: Input should"):
        expand({**BASE, "sweep": {"data.noise_rate": [0.2, 1.5]}})


@pytest.mark.parametrize(("sweep", "message"), [
    ([1, 2], "sweep: expected a mapping of field paths"),
    ({"data.noise_rate": 0.2}, "sweep.data.noise_rate: expected a non-empty list of values, got 0.2"),
    ({"data.noise_rate": []}, "sweep.data.noise_rate: expected a non-empty list"),
    ({"data.noise_rate": [0.2, 0.2]}, "sweep.data.noise_rate: value 0.2 is listed twice"),
    ({"seeds": [[0], [1]]}, "sweep.seeds: seeds cannot be swept (list them in `seeds`)"),
    ({"tracking.experiment": ["a", "b"]}, "sweep.tracking.experiment: tracking cannot be swept"),
    ({"data..noise_rate": [0.1]}, "sweep: 'data..noise_rate' is not a field path"),
    ({"strategy.method": ["uniform"], "strategy.name": ["soseleto"]}, "sweep.strategy.name: swept twice"),
])
def test_malformed_sweeps_are_one_line(sweep, message):
    with pytest.raises(ConfigError) as caught:
        expand({**BASE, "sweep": sweep})
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_set_fixes_a_swept_path_and_set_sweep_edits_the_grid():
    raw = {**BASE, "sweep": {"strategy.name": ["soseleto", "uniform"], "data.noise_rate": [0.2, 0.4]}}
    plan = expand(raw, ["data.noise_rate=0.3", "train.steps=5"])
    assert plan.paths == ["strategy.name"] and {c.options["data"].noise_rate for c in plan.combinations} == {0.3}
    assert all(c.config.train.steps == 5 for c in plan.combinations)
    assert expand(raw, ["strategy=uniform"]).paths == ["data.noise_rate"]  # a section fixes the paths under it
    assert expand(raw, ["sweep.data.noise_rate=[0.1, 0.2, 0.3]"]).runs == 2 * 3 * 2
    assert expand(raw, ["sweep.strategy.name=null"]).paths == ["data.noise_rate"]
    assert expand(raw, ["sweep=null"]).grid == {}
    assert expand(BASE, ["sweep={model.hidden: [[8], [16, 16]]}"]).combinations[1].options["model"].hidden == [16, 16]


def test_too_many_combinations_are_refused_before_validating():
    with pytest.raises(ConfigError, match="combinations; at most"):
        expand({**BASE, "sweep": {"train.steps": list(range(1, 201)), "train.lr": [i / 100 for i in range(1, 101)]}})


def test_labels_are_short_text():
    assert [label(v) for v in (0.2, 3, True, None, "uniform", [32, 32])] == ["0.2", "3", "true", "null", "uniform",
                                                                               "[32, 32]"]
    assert label({"name": "soseleto", "lr": 20, "init": 0.5}) == "soseleto(lr=20, init=0.5)"


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.sampled_from(["train.steps", "train.lr", "train.momentum"]),
                       st.lists(st.integers(1, 9), min_size=1, max_size=3, unique=True), max_size=3))
def test_every_combination_carries_its_values(grid):
    scaled = {path: [v / 10 if path == "train.momentum" else v for v in values] for path, values in grid.items()}
    plan = expand({**BASE, "sweep": scaled} if scaled else BASE)
    expected = 1
    for values in scaled.values():
        expected *= len(values)
    assert len(plan.combinations) == expected
    for combination in plan.combinations:
        for path, value in combination.values.items():
            assert getattr(combination.config.train, path.split(".")[1]) == value
    assert parse_grid(scaled or None) == scaled


def test_the_shipped_sweep_benchmark_expands_to_valid_combinations():
    from pathlib import Path

    from reweight.experiment.config_file import load_raw

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "synthetic_sweep.yaml"
    plan = expand(load_raw(path))
    assert len(plan.combinations) == 6  # 3 strategies × 2 noise levels, each validated


# the synthetic benchmark as it was shipped before schedules, optimizers, losses, pipelines and
# unlabeled terms existed: its plan must keep the fingerprint it had then
EARLIER_SYNTHETIC = {
    "name": "synthetic_2d", "seeds": [0],
    "data": {"name": "synthetic_2d", "n_source": 500, "n_target": 50, "n_test": 2000, "noise_rate": 0.2},
    "model": {"name": "mlp", "hidden": [32, 32]},
    "strategy": {"name": "soseleto", "lr": 50.0, "init": 0.5},
    "granularity": "per_sample",
    "hypergrad": {"name": "one_step", "at": "current"},
    "train": {"steps": 2000, "eval_every": 100, "source_batch_size": 32, "target_batch_size": None, "lr": 0.1,
              "momentum": 0.9, "target_lr": 0.01},
}


def test_a_fingerprint_changes_with_what_the_plan_computes_and_only_with_that():
    """``--resume`` matches runs by fingerprint: a new config field at its default (here
    ``train.schedule``, ``train.optimizer``, ``train.target_optimizer``, ``loss``, ``pipeline``,
    ``unlabeled``) must leave the fingerprints of earlier plans as they were."""
    raw = copy.deepcopy(EARLIER_SYNTHETIC)
    assert expand(raw).fingerprint == "c18b45962b376747"  # as computed before schedules existed
    assert expand(raw, ["train.schedule=constant", "checkpoint.every=7"]).fingerprint == "c18b45962b376747"
    assert expand(raw, ["train.schedule=cosine"]).fingerprint != "c18b45962b376747"
    assert expand(raw, ["train.optimizer=sgd", "train.target_optimizer={name: sgd}"]).fingerprint == "c18b45962b376747"
    assert expand(raw, ["train.optimizer=adam"]).fingerprint != "c18b45962b376747"
    assert expand(raw, ["train.target_optimizer.momentum=0.5"]).fingerprint != "c18b45962b376747"
    assert expand(raw, ["loss=cross_entropy"]).fingerprint == "c18b45962b376747"
    assert expand(raw, ["loss.label_smoothing=0.1"]).fingerprint != "c18b45962b376747"
    assert expand(raw, ["train.lr=0.3"]).fingerprint != "c18b45962b376747"
    assert expand(raw, ["pipeline=[]", "unlabeled=null"]).fingerprint == "c18b45962b376747"
    assert expand(raw, ["pipeline=[{phase: fine_tune, steps: 5}]"]).fingerprint != "c18b45962b376747"


@pytest.mark.parametrize(("changes", "name"), [
    ({}, "soseleto(lr=50.0) · 2 seeds"),
    ({"seeds": [0], "strategy": "uniform"}, "uniform"),
    ({"seeds": [3], "strategy": {"name": "meta_weight_net"}, "hypergrad": {"name": "unrolled", "steps": 2}},
     "meta_weight_net · unrolled(steps=2)"),
    ({"seeds": [0], "granularity": "per_group", "strategy": {"name": "soseleto", "lr": 50, "init": 0.5}},
     "soseleto(lr=50.0) · per_group"),
    ({"sweep": {"data.noise_rate": [0.2, 0.4]}}, "soseleto(lr=50.0) · sweep data.noise_rate (2 combinations × 2 seeds)"),
    ({"sweep": {"strategy.lr": [10, 20, 30]}, "seeds": [0]}, "soseleto · sweep strategy.lr (3 combinations)"),
    ({"sweep": {"strategy.name": ["soseleto", "uniform"], "data.noise_rate": [0.2, 0.4]}},
     "sweep strategy.name × data.noise_rate (4 combinations × 2 seeds)"),
    ({"sweep": {"strategy": ["uniform", {"name": "soseleto", "lr": 20}]}, "seeds": [1]}, "sweep strategy (2 combinations)"),
], ids=["strategy-options-seeds", "defaults", "method", "granularity", "sweep-data", "sweep-options", "sweep-strategy",
        "sweep-sections"])
def test_parent_runs_are_named_by_what_tells_them_apart(changes, name):
    """Options at their defaults (init: 0.5) are left out; the hypergradient method and the
    granularity appear only away from their defaults."""
    from reweight.experiment.runner import parent_name

    assert parent_name(expand({**BASE, **changes})) == name
