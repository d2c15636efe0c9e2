"""End to end: the per-group and per-task benchmarks through the ``reweight`` command, briefly."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import reweight

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize(
    ("config", "slots"),
    [
        ("groups_annotators.yaml", [f"weight_group_annotator_{a}" for a in range(6)]),
        ("tasks_related.yaml", ["weight_task_same_labels", "weight_task_clusters", "weight_task_random_labels",
                                "weight_task_random_labels_8"]),
    ],
)
def test_benchmark_runs_and_reports_slot_weights(tracking_dir, config, slots):
    result = reweight("run", str(BENCHMARKS / config), "--set", "train.steps=40", "--set", "train.eval_every=20",
                      cwd=tracking_dir)
    assert result.returncode == 0, result.stderr
    summary = next(line for line in result.stdout.splitlines() if "test_accuracy=" in line)
    assert "weight_harmful_auc=" in summary and all(f"{slot}=" in summary for slot in slots)

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tracking_dir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=[config.removesuffix(".yaml")])
    child = runs[runs["tags.reweight.role"] == "child"].iloc[0]
    assert child["tags.granularity"] in {"per_group", "per_task"}
    for name in (*slots, "weight_harmful_auc"):
        assert 0 <= child[f"metrics.{name}"] <= 1
