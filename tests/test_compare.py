"""Grouping, summarising and plotting runs, on hand-made run tables (no MLflow)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from reweight.core.errors import ReweightError
from reweight.experiment.compare import (
    default_by,
    distinguishing_by,
    key_column,
    pooled_fields,
    pooled_note,
    render,
    summarize,
)
from reweight.experiment.plots import RunRecord, figures, natural_key, save
from reweight.experiment.tracking import weights_csv, weights_frame


def runs_table() -> pd.DataFrame:
    """What ``mlflow.search_runs`` returns for a small sweep (and one run from before sweeps)."""
    return pd.DataFrame({
        "tags.strategy": ["soseleto", "soseleto", "uniform", "uniform", "soseleto"],
        "tags.seed": ["0", "1", "0", "1", "2"],
        "tags.reweight.sweep": ["strategy.name,data.noise_rate"] * 4 + [None],
        "tags.sweep.data.noise_rate": ["0.4", "0.4", "0.4", "0.4", None],
        "params.data.noise_rate": ["0.4", "0.4", "0.4", "0.4", "0.2"],
        "params.strategy.lr": ["50.0", "50.0", None, None, "50.0"],
        "metrics.test_accuracy": [0.9, 0.8, 0.7, float("nan"), 0.95],
    })


def test_keys_read_sweep_tags_then_tags_then_params():
    runs = runs_table()
    assert default_by(runs) == ["strategy", "data.noise_rate"]
    assert list(key_column(runs, "noise")) == ["0.4"] * 4 + ["0.2"]  # alias, then the param where no tag
    assert list(key_column(runs, "noise_rate")) == ["0.4"] * 4 + ["0.2"]  # a unique last part
    assert list(key_column(runs, "strategy.name")) == ["soseleto", "soseleto", "uniform", "uniform", "soseleto"]
    assert list(key_column(runs, "strategy.lr"))[2] == "(none)"
    with pytest.raises(ReweightError, match=r"^--by bogus: no tag or param of that name on these runs; swept here"):
        key_column(runs, "bogus")
    runs["params.train.lr"] = "0.1"
    with pytest.raises(ReweightError, match=r"^--by lr: .* \(matches strategy.lr, train.lr\)"):
        key_column(runs, "lr")


def test_summary_has_mean_sample_std_and_counts_in_natural_order():
    frame = pd.DataFrame({"strategy": ["b", "a", "a", "b", "a"], "noise": ["10", "2", "2", "10", "10"],
                          "acc": [0.5, 0.6, 0.8, float("nan"), 0.9]})
    cells = summarize(frame, ["strategy", "noise"], ["acc"])
    assert [tuple(r) for r in cells[["strategy", "noise", "n"]].itertuples(index=False)] == [
        ("a", "2", 2), ("a", "10", 1), ("b", "10", 2)]
    assert cells["acc_mean"].tolist()[0] == pytest.approx(0.7)
    assert cells["acc_std"].tolist()[0] == pytest.approx(math.sqrt(0.02))
    assert math.isnan(cells["acc_std"].tolist()[1])  # one run: no spread to show
    assert cells["acc_mean"].tolist()[2] == 0.5  # a run without the metric counts in n, not in the mean


def test_formats():
    frame = pd.DataFrame({"strategy": ["a", "a", "b"], "acc": [0.5, 0.7, 0.9]})
    cells = summarize(frame, ["strategy"], ["acc"])
    assert render(cells, ["strategy"], ["acc"], "markdown").splitlines() == [
        "| strategy | acc (mean ± std) | n |", "|---|---|---|", "| a | 0.6000 ± 0.1414 | 2 |", "| b | 0.9000 | 1 |"]
    assert render(cells, ["strategy"], ["acc"], "csv").splitlines() == [
        "strategy,n,acc_mean,acc_std", "a,2,0.6,0.141421", "b,1,0.9,"]
    assert json.loads(render(cells, ["strategy"], ["acc"], "json"))[1] == {
        "strategy": "b", "n": 1, "acc_mean": 0.9, "acc_std": None}


def test_natural_order():
    assert sorted(["10", "2", "uniform", "annotator_10", "annotator_2", "0.5"], key=natural_key) == [
        "0.5", "2", "10", "annotator_2", "annotator_10", "uniform"]


def test_weights_file_has_slot_and_harmful_columns_when_known():
    frame = weights_frame(torch.tensor([0.25, 1.0, 0.5]), torch.tensor([True, False, False]),
                          ["task_a", "task_b", "task_b"], torch.tensor([1, 0, 0]))
    assert weights_csv(frame).splitlines() == ["index,weight,corrupted,slot,harmful", "0,0.25,1,task_a,1",
                                               "1,1,0,task_b,0", "2,0.5,0,task_b,0"]
    assert weights_csv(weights_frame(torch.tensor([0.5]))).splitlines() == ["index,weight", "0,0.5"]


def records(slots: bool) -> list[RunRecord]:
    generator = torch.Generator().manual_seed(0)
    made = []
    for strategy in ("soseleto", "uniform"):
        for noise in ("0.2", "0.4"):
            for seed in range(2):
                corrupted = torch.rand(60, generator=generator) < float(noise)
                weights = torch.ones(60) if strategy == "uniform" else torch.where(corrupted, 0.2, 0.7) + 0.1 * torch.rand(60, generator=generator)
                slot_names = [f"group_{i % 3}" for i in range(60)] if slots else None
                history = {"test_accuracy": [(step, 0.5 + step / 100 + 0.01 * seed) for step in (10, 20, 30)]}
                made.append(RunRecord((strategy, noise), history,
                                      weights_frame(weights, corrupted, slot_names, torch.tensor([i % 3 == 0 for i in range(60)]))))
    return made


@pytest.mark.parametrize("slots", [False, True])
def test_plots_are_made_when_the_runs_support_them(tmp_path, slots):
    made = figures(records(slots), ["strategy", "noise"])
    expected = {"curves.png", "weights.png", "detector.png"} | ({"slots.png"} if slots else set())
    assert set(made) == expected
    written = save(made, tmp_path)
    assert {p.name for p in written} == expected and all(p.stat().st_size > 5000 for p in written)


def test_no_weights_no_weight_plots():
    bare = [RunRecord(("a",), {"test_accuracy": [(1, 0.5)]}), RunRecord(("b",), {})]
    assert set(figures(bare, ["strategy"])) == {"curves.png"}
    assert figures([RunRecord(("a",))], ["strategy"]) == {}


def two_configurations() -> pd.DataFrame:
    """SOSELETO with target_weight 0 and 1, three seeds each, and a uniform baseline."""
    return pd.DataFrame({
        "tags.strategy": ["soseleto"] * 6 + ["uniform"] * 2,
        "params.seed": ["0", "1", "2"] * 2 + ["0", "1"],
        "params.seeds": ["[0, 1, 2]"] * 8,
        "params.name": ["a"] * 3 + ["b"] * 3 + ["a"] * 2,
        "params.checkpoint.dir": ["ckpt"] * 4 + ["elsewhere"] * 4,
        "params.strategy.target_weight": ["0.0"] * 3 + ["1.0"] * 3 + [None, None],
    "params.train.eval_every": ["100"] * 3 + ["50"] * 5,  # how often it was evaluated, not what was trained
    "params.train.schedule.kind": [None] * 2 + ["constant"] * 6,  # runs from before schedules existed
        "params.train.lr": ["0.1"] * 8,
        "metrics.test_accuracy": [0.86, 0.87, 0.88, 0.90, 0.91, 0.92, 0.8, 0.81],
    })


def test_the_default_rows_never_pool_two_configurations():
    runs = two_configurations()
    by = distinguishing_by(runs, default_by(runs))
    assert by == ["strategy", "strategy.target_weight"]  # not the seed, the name, evaluations, checkpoints
    frame = pd.DataFrame({key: key_column(runs, key) for key in by})
    assert pooled_fields(runs, frame) == {}
    frame["acc"] = runs["metrics.test_accuracy"]
    cells = summarize(frame, by, ["acc"])
    assert [tuple(row) for row in cells[[*by, "n"]].itertuples(index=False)] == [
        ("soseleto", "0.0", 3), ("soseleto", "1.0", 3), ("uniform", "(none)", 2)]


def test_an_explicit_grouping_that_pools_says_which_fields_it_pooled():
    runs = two_configurations()
    frame = pd.DataFrame({"strategy": key_column(runs, "strategy")})
    assert pooled_fields(runs, frame) == {"strategy.target_weight": ["0.0", "1.0"]}
    runs["params.train.lr"] = ["0.1"] * 7 + ["0.2"]
    assert pooled_fields(runs, frame) == {"strategy.target_weight": ["0.0", "1.0"], "train.lr": ["0.1", "0.2"]}
    assert pooled_note(pooled_fields(runs, frame)) == (
        "note: rows pool runs with different strategy.target_weight (0.0, 1.0), train.lr (0.1, 0.2); "
        "add them to --by to split them")


def test_a_pooled_plugin_choice_stands_for_its_options():
    runs = two_configurations()
    frame = pd.DataFrame({"everything": ["x"] * len(runs)}, index=runs.index)
    runs["params.strategy.name"] = key_column(runs, "strategy")
    pooled = pooled_fields(runs, frame)
    assert set(pooled) == {"strategy.name", "strategy.target_weight"}
    assert pooled_note(pooled) == ("note: rows pool runs with different strategy.name (soseleto, uniform); "
                                   "add it to --by to split them")
    assert distinguishing_by(runs, []) == ["strategy.name", "strategy.target_weight"]
