"""End to end: the ``reweight`` command on the synthetic benchmark, results read back from MLflow."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = str(Path(__file__).resolve().parents[1] / "benchmarks" / "synthetic_2d.yaml")


def reweight(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reweight.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_synthetic_run_lands_in_mlflow_and_downweights_flipped_labels(tracking_dir):
    result = reweight("run", BENCHMARK, "--set", "seeds=[0, 1]", cwd=tracking_dir)  # the shipped budget
    assert result.returncode == 0, result.stderr
    summary = [line for line in result.stdout.splitlines() if "test_accuracy=" in line]
    assert len(summary) == 3 and "2 seeds" in summary[-1] and "weight_noise_auc=" in summary[-1]

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tracking_dir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["synthetic_2d"])
    children = runs[runs["tags.reweight.role"] == "child"]
    parents = runs[runs["tags.reweight.role"] == "parent"]
    assert len(parents) == 1 and len(children) == 2
    assert set(children["tags.mlflow.parentRunId"]) == set(parents["run_id"])
    assert set(children["tags.strategy"]) == {"soseleto"} and set(children["tags.seed"]) == {"0", "1"}
    assert children["params.strategy.lr"].iloc[0] == "50.0"
    for name in ("test_accuracy", "target_loss", "source_loss", "weight_noise_auc"):
        assert children[f"metrics.{name}"].notna().all()
    assert (children["metrics.weight_clean_mean"] > children["metrics.weight_corrupted_mean"] + 0.1).all()
    assert (children["metrics.weight_noise_auc"] > 0.75).all()

    client = mlflow.MlflowClient()
    run_id = children["run_id"].iloc[0]
    history = client.get_metric_history(run_id, "test_accuracy")
    assert [m.step for m in history] == list(range(100, 2001, 100))
    rows = list(csv.DictReader(io.StringIO(Path(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="weights.csv", dst_path=str(tracking_dir / "dl"))).read_text())))
    assert len(rows) == 500
    flipped = [float(r["weight"]) for r in rows if r["corrupted"] == "1"]
    clean = [float(r["weight"]) for r in rows if r["corrupted"] == "0"]
    assert len(flipped) == 100 and sum(flipped) / 100 < sum(clean) / 400 - 0.1
    config = mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml")
    assert "strategy:\n  name: soseleto" in config


@pytest.mark.parametrize("overrides", [
    ["strategy.name=learning_to_reweight"],
    ["strategy.name=meta_weight_net", "hypergrad.name=unrolled", "hypergrad.steps=2", "hypergrad.backend=higher"],
], ids=["ltr", "mwn-unrolled-higher"])
def test_peers_and_methods_by_overrides(tracking_dir, overrides):
    sets = [arg for override in overrides for arg in ("--set", override)]
    result = reweight("run", BENCHMARK, *sets, "--set", "train.steps=30", "--set", "train.eval_every=10",
                      cwd=tracking_dir)
    assert result.returncode == 0, result.stderr
    assert "test_accuracy=" in result.stdout and "weight_noise_auc=" in result.stdout


def test_uniform_baseline_by_one_override(tracking_dir):
    result = reweight("run", BENCHMARK, "--set", "strategy=uniform", "--set", "train.steps=50", cwd=tracking_dir)
    assert result.returncode == 0, result.stderr
    assert "weight_noise_auc=0.5000" in result.stdout


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lr=-0.1", "error: train.lr: Input should be greater than 0"),
        ("strategy.name=nope", "error: strategy.name: unknown strategy 'nope' (installed:"),
        ("train.source_batch_size=100000", "error: train.source_batch_size: 100000 is larger than the source set"),
    ],
)
def test_bad_config_is_one_line_and_exit_code_2(tracking_dir, override, expected):
    result = reweight("run", BENCHMARK, "--set", override, cwd=tracking_dir)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(expected) and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tracking_dir):
    result = reweight("--debug", "run", BENCHMARK, "--set", "train.lr=-0.1", cwd=tracking_dir)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_plugins_lists_name_kind_package_version(tracking_dir):
    result = reweight("plugins", cwd=tracking_dir)
    assert result.returncode == 0
    line = next(line for line in result.stdout.splitlines() if "soseleto" in line)
    assert "strategy" in line and "reweight" in line and "0.1.0" in line
