"""The pictures of the learned weights (by class, extreme images, 2-D points), made when the data
supports them and not otherwise, and the plain sentences of ``tracking.baseline``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from reweight import cli
from reweight.core.data import Split
from reweight.experiment import examples
from reweight.experiment.plots import RunRecord, close, figures, run_figures
from tests import datafiles

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = ["--set", "train.steps=20", "--set", "train.eval_every=10", "--set", "data.n_test=200"]


def image_split(n: int = 24, classes: int = 3, channels: int = 1) -> Split:
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, channels, 8, 8), generator=generator, dtype=torch.uint8)
    return Split(x, torch.arange(n) % classes, {"corrupted": torch.arange(n) % 5 == 0})


def test_extremes_are_the_highest_and_lowest_weights_of_each_class():
    split = image_split()
    weights = torch.linspace(0, 1, len(split))
    found = examples.extremes(split, weights, per_class=2)
    assert found["x"].dtype == np.uint8 and found["x"].shape == (3 * 4, 1, 8, 8)
    for value in range(3):
        mine = found["label"] == value
        members = weights[split.y == value]
        assert sorted(found["weight"][mine & found["high"]]) == pytest.approx(sorted(members.topk(2).values.tolist()))
        assert sorted(found["weight"][mine & ~found["high"]]) == pytest.approx(
            sorted((-members).topk(2).values.neg().tolist()))
    np.testing.assert_array_equal(found["x"], split.x[torch.as_tensor(found["index"])].numpy())
    np.testing.assert_array_equal(found["corrupted"], split.meta["corrupted"][torch.as_tensor(found["index"])].numpy())
    again = examples.from_bytes(examples.to_bytes(found))
    assert set(again) == set(found) and all(np.array_equal(again[k], found[k]) for k in found)


def test_extremes_only_for_images_with_class_labels():
    weights = torch.ones(24)
    points = Split(torch.randn(24, 2), torch.arange(24) % 2)
    assert examples.extremes(points, weights) is None
    assert examples.points(points) is points.x
    regression = Split(image_split().x, torch.randn(24))
    assert examples.extremes(regression, weights) is None
    assert examples.points(Split(torch.randn(24, 3), torch.arange(24) % 2)) is None
    floats = examples.extremes(Split(torch.rand(24, 3, 8, 8), torch.arange(24) % 3), torch.rand(24))
    assert floats["x"].dtype == np.uint8 and floats["x"].max() == 255 and floats["x"].min() == 0

    class Streamed:  # a streamed split holds no whole inputs tensor
        streamed = True
        y = torch.arange(24) % 3

        @property
        def x(self):
            raise AssertionError("read the inputs of a streamed split")

    assert examples.extremes(Streamed(), weights) is None and examples.points(Streamed()) is None


def table(n: int = 40, **columns) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"index": range(n), "weight": rng.random(n), **columns})


@pytest.mark.parametrize(("columns", "with_examples", "expected"), [
    ({}, False, set()),
    ({"label": np.arange(40) % 4}, False, {"weights_by_class.png"}),
    ({"label": np.arange(40) % 2, "corrupted": np.arange(40) % 5 == 0, "x0": np.zeros(40), "x1": np.ones(40)}, False,
     {"weights_by_class.png", "points.png"}),
    ({"label": np.arange(40) % 2, "x0": np.zeros(40), "x1": np.ones(40), "x2": np.ones(40)}, False,
     {"weights_by_class.png"}),  # 3-D points are not drawn as 2-D
    ({"label": np.arange(40) % 3}, True, {"weights_by_class.png", "extremes.png"}),
], ids=["no-labels", "labels", "points", "3-d", "images"])
def test_run_figures_made_when_the_run_has_what_they_need(columns, with_examples, expected):
    split = image_split(40)
    found = examples.extremes(split, torch.rand(40)) if with_examples else None
    made = run_figures([RunRecord(("soseleto",), {}, table(**columns), found)], ["strategy"])
    close(made)
    assert set(made) == expected


def test_no_extreme_images_where_every_weight_is_equal():
    split = image_split()
    flat = examples.extremes(split, torch.ones(len(split)))
    made = figures([RunRecord(("uniform",), {}, table(24, weight=np.ones(24), label=np.arange(24) % 3), flat)],
                   ["strategy"])
    close(made)
    assert "extremes.png" not in made and "weights_by_class.png" in made


def test_first_run_says_what_its_numbers_mean_against_the_baseline(tracking_dir, capsys):
    import mlflow

    code = cli.main(["run", str(BENCHMARKS / "synthetic_2d.yaml"), *TINY])
    out = capsys.readouterr().out
    assert code == 0
    mlflow.set_tracking_uri(f"sqlite:///{tracking_dir / 'mlflow.db'}")
    child = mlflow.search_runs(experiment_names=["synthetic_2d"], filter_string="tags.`reweight.role` = 'child'")
    assert len(child) == 1  # the baseline is no run of its own
    metrics = {key.removeprefix("metrics."): child[key].iloc[0] for key in child if key.startswith("metrics.")}
    ours, uniform = metrics["test_accuracy"], metrics["baseline_test_accuracy"]
    change = "the same as" if round(ours, 3) == round(uniform, 3) else "higher than" if ours > uniform else "lower than"
    assert (f"test accuracy {ours:.3f} with soseleto, {change} {uniform:.3f} without reweighting (uniform, same seed "
            "and data)") in out
    assert f"the weights single out the corrupted labels: AUC {metrics['weight_noise_auc']:.3f} (" in out
    picture = re.search(r"picture of the weights: (\S+)", out).group(1)
    assert picture.endswith("plots/points.png") and Path(picture).read_bytes()[:4] == b"\x89PNG"

    weights = pd.read_csv(Path(picture).parents[1] / "weights.csv")
    assert list(weights.columns) == ["index", "weight", "label", "corrupted", "x0", "x1"]
    assert set(weights["label"]) == {0, 1} and len(weights) == 500
    flipped = weights["corrupted"] == 1
    assert flipped.sum() == 100  # 20% of the labels, flipped: the observed label is the noisy one
    assert not (Path(picture).parents[1] / examples.EXAMPLES_FILE).exists()  # points, no images


def test_uniform_itself_has_no_baseline_and_plots_can_be_switched_off(tracking_dir, capsys):
    code = cli.main(["run", str(BENCHMARKS / "synthetic_2d.yaml"), *TINY, "--set", "strategy=uniform",
                     "--set", "tracking.plots=false"])
    out = capsys.readouterr().out
    assert code == 0 and "without reweighting" not in out and "picture of the weights" not in out
    assert not list(tracking_dir.rglob("points.png"))


def test_an_unknown_baseline_is_one_line(tracking_dir, capsys):
    code = cli.main(["run", str(BENCHMARKS / "synthetic_2d.yaml"), *TINY, "--set", "tracking.baseline=nope"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: tracking.baseline: ") and len(err.strip().splitlines()) == 1


@pytest.fixture
def mnist_root(tmp_path, monkeypatch, tracking_dir):
    root = tmp_path / "data"
    datafiles.write_idx_set(root / "MNIST" / "raw", seed=0)
    monkeypatch.setenv("REWEIGHT_DATA_ROOT", str(root))
    return root


SMALL_MNIST = ["--set", "seeds=[0]", "--set", "train.steps=2", "--set", "train.eval_every=1",
               "--set", "train.source_batch_size=8", "--set", "data.target_per_class=3"]


@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
def test_image_runs_log_their_extreme_images_unless_streamed(mnist_root, tracking_dir, capsys, streamed, tmp_path):
    import mlflow

    sets = ["--set", "stream.splits=[source]", "--set", "stream.workers=0"] if streamed else []
    code = cli.main(["run", str(BENCHMARKS / "mnist_noisy.yaml"), *SMALL_MNIST, *sets])
    assert code == 0, capsys.readouterr().err
    mlflow.set_tracking_uri(f"sqlite:///{tracking_dir / 'mlflow.db'}")
    child = mlflow.search_runs(experiment_names=["mnist_noisy"], filter_string="tags.`reweight.role` = 'child'")
    client = mlflow.MlflowClient()
    run_id = child["run_id"].iloc[0]
    logged = {f.path for f in client.list_artifacts(run_id)} | {f.path for f in client.list_artifacts(run_id, "plots")}
    pictures = {"plots/weights_by_class.png"} | (set() if streamed else {"plots/extremes.png", examples.EXAMPLES_FILE})
    assert pictures <= logged and (streamed or "plots/points.png" not in logged)
    if streamed:
        assert not {"plots/extremes.png", examples.EXAMPLES_FILE} & logged
    weights = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="weights.csv",
                                                              dst_path=str(tmp_path / "dl")))
    assert "label" in weights and weights["label"].between(0, 9).all()

    capsys.readouterr()
    assert cli.main(["compare", "mnist_noisy", "--plot", str(tmp_path / "plots")]) == 0
    written = {p.name for p in (tmp_path / "plots").iterdir()}
    assert "weights_by_class.png" in written and ("extremes.png" in written) == (not streamed)


def test_a_stop_while_training_the_baseline_resumes_to_the_same_numbers(tracking_dir, capsys):
    import contextlib
    import signal

    import mlflow

    from reweight.experiment import runner
    from tests.test_checkpoints import StopAfter

    args = ["run", str(BENCHMARKS / "synthetic_2d.yaml"), *TINY, "--set", "tracking.plots=false"]
    with pytest.MonkeyPatch.context() as patch:  # 1 poll before the run, 20 in its steps, then the baseline's
        patch.setattr(runner, "stop_on_signal", lambda: contextlib.nullcontext(StopAfter(1 + 20 + 5, signal.SIGINT)))
        assert cli.main(args) == 130
    assert "stopped: SIGINT while training the baseline of soseleto-seed0; checkpoint saved to " in capsys.readouterr().err
    assert cli.main([*args, "--resume"]) == 0
    resumed = capsys.readouterr().out
    assert cli.main(args) == 0
    straight = capsys.readouterr().out
    mlflow.set_tracking_uri(f"sqlite:///{tracking_dir / 'mlflow.db'}")
    children = mlflow.search_runs(experiment_names=["synthetic_2d"], filter_string="tags.`reweight.role` = 'child'")
    assert sorted(children["status"]) == ["FINISHED", "FINISHED"]
    assert children["metrics.baseline_test_accuracy"].nunique() == 1 and children["metrics.test_accuracy"].nunique() == 1
    line = next(line for line in straight.splitlines() if "without reweighting" in line)
    assert line in resumed.splitlines()
