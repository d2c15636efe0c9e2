"""Parallel sweeps (``--workers N``): the same child runs as serially, bit for bit; an
interrupted parallel sweep resumes exactly; a failing child is one line naming it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reweight.experiment import checkpoint
from reweight.experiment.checkpoint import CheckpointError
from reweight.experiment.workers import threads_per_worker, usable_cores

SWEEP = """\
name: tiny_sweep
seeds: {seeds}
sweep:
  {path}: {values}
data: {{name: synthetic_2d, n_source: 100, n_target: 20, n_test: 200}}
model: {{name: mlp, hidden: [8]}}
train: {{steps: {steps}, eval_every: {eval_every}, source_batch_size: 16}}
checkpoint: {{every: 25}}
tracking: {{plots: false}}
"""


def write(folder: Path, path: str = "strategy.name", values: str = "[soseleto, uniform]", seeds: str = "[0, 1]",
          steps: int = 60, eval_every: int = 20) -> str:
    config = folder / "sweep.yaml"
    config.write_text(SWEEP.format(path=path, values=values, seeds=seeds, steps=steps, eval_every=eval_every))
    return str(config)


def cli(folder: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, "-m", "reweight.cli", *args], cwd=folder, env=env, check=False,
                          capture_output=True, text=True, timeout=timeout)


def children(folder: Path) -> dict[str, tuple[str, dict[str, float], str]]:
    """Each child run by name: (status, final metrics, weights file)."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    found = {}
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  "tags.`reweight.role` = 'child'"):
        weights = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/weights.csv") \
            if run.info.status == "FINISHED" else ""
        found[run.info.run_name] = (run.info.status, dict(run.data.metrics), weights)
    return found


def summaries(out: str) -> list[str]:
    """The lines printed per combination (mean ± std over seeds) and the closing table, in order,
    without the run ids."""
    lines = [line.split(" parent=")[0] for line in out.splitlines() if "seeds]:" in line]
    return lines + [out.split("tiny_sweep: ")[1].split("again later")[0]]


@pytest.fixture(scope="module")
def serial_and_parallel(tmp_path_factory):
    made = {}
    for workers in ("1", "2"):
        folder = tmp_path_factory.mktemp(f"workers{workers}")
        result = cli(folder, "run", write(folder), "--workers", workers)
        assert result.returncode == 0, result.stderr
        made[workers] = (folder, result)
    return made


def test_two_workers_give_the_same_child_runs_as_one(serial_and_parallel):
    (one, serial), (two, parallel) = serial_and_parallel["1"], serial_and_parallel["2"]
    expected, found = children(one), children(two)
    assert len(expected) == 4 and set(found) == set(expected)
    for name, (status, metrics, weights) in expected.items():
        assert status == "FINISHED" == found[name][0]
        assert found[name][1] == metrics, name  # exactly: every child is deterministic given its seed
        assert found[name][2] == weights, name
    assert summaries(parallel.stdout) == summaries(serial.stdout)  # plan order, not completion order


def test_the_children_of_a_parallel_sweep_hang_under_its_one_parent(serial_and_parallel):
    import mlflow

    folder, _ = serial_and_parallel["2"]
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tiny_sweep"])
    parents = runs[runs["tags.reweight.role"] == "parent"]
    assert len(parents) == 1 and parents["status"].iloc[0] == "FINISHED"
    kids = runs[runs["tags.reweight.role"] == "child"]
    assert set(kids["tags.mlflow.parentRunId"]) == {parents["run_id"].iloc[0]}


def test_a_failing_child_is_one_line_naming_it(tmp_path):
    """The first combination passes the up-front check; the second fails in its worker."""
    config = write(tmp_path, path="data.n_source", values="[100, 10]", seeds="[0]")
    result = cli(tmp_path, "run", config, "--workers", "2")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: child run data.n_source=10-seed0: sweep combination data.n_source=10: "
                               "train.source_batch_size: 16 is larger than the source set (10 examples)")
    assert "resume with: reweight resume " in lines[0]


def test_workers_are_checked_and_get_a_share_of_the_cores(tmp_path):
    result = cli(tmp_path, "run", write(tmp_path), "--workers", "0")
    assert result.returncode == 2 and "--workers: expected a whole number of processes, at least 1" in result.stderr
    assert threads_per_worker(1) == usable_cores()
    assert threads_per_worker(10_000) == 1


def stop_when_both_running(folder: Path, args: list[str]) -> subprocess.CompletedProcess:
    """Start the parallel sweep, SIGINT the main process once two children have a checkpoint
    at step 50 or later, and wait for the end."""
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    process = subprocess.Popen([sys.executable, "-m", "reweight.cli", *args], cwd=folder, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError, CheckpointError, KeyError):
            steps = [checkpoint.load(path)["engine"]["step"] for path in (folder / "checkpoints").glob("*.pt")]
            if len([step for step in steps if step >= 50]) >= 2:
                break
        time.sleep(0.02)
    assert process.poll() is None, "the sweep ended before it could be stopped"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_an_interrupted_parallel_sweep_resumes_exactly(tmp_path):
    straight, stopped_at = tmp_path / "straight", tmp_path / "stopped"
    straight.mkdir()
    stopped_at.mkdir()
    settings = {"path": "strategy.lr", "values": "[20, 50]", "seeds": "[0]", "steps": 1500, "eval_every": 500}
    uninterrupted = cli(straight, "run", write(straight, **settings), "--workers", "2")
    assert uninterrupted.returncode == 0, uninterrupted.stderr

    stopped = stop_when_both_running(stopped_at, ["run", write(stopped_at, **settings), "--workers", "2"])
    assert stopped.returncode == 130, stopped.stderr
    lines = stopped.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stopped: SIGINT: the running child runs saved their checkpoints; "
                                                   "resume with: reweight resume "), stopped.stderr
    parent_id = lines[0].split()[-1]
    assert {status for status, _, _ in children(stopped_at).values()} == {"KILLED"}

    resumed = cli(stopped_at, "resume", parent_id, "--workers", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count(": resuming at step ") == 2  # each child from its own checkpoint
    after, expected = children(stopped_at), children(straight)
    assert set(after) == set(expected) and len(after) == 2
    for name, (status, metrics, weights) in expected.items():
        assert after[name] == (status, metrics, weights), name
