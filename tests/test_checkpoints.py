"""Checkpoints and resuming: a restored engine continues bit for bit; files are written
atomically and never hold a NaN; killed and interrupted runs resume into the same MLflow runs
and end exactly as an uninterrupted run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reweight import checkpoint
from reweight.checkpoint import CheckpointError
from reweight.config import validate
from reweight.errors import NumericalError
from reweight.runner import build_engine

BENCHMARK = str(Path(__file__).resolve().parents[1] / "benchmarks" / "synthetic_2d.yaml")
STRATEGIES = {
    "soseleto": {"name": "soseleto", "lr": 50.0},
    "meta_weight_net": {"name": "meta_weight_net"},  # a weight network with Adam state
    "learning_to_reweight": {"name": "learning_to_reweight"},
    "fine_tune": {"name": "fine_tune", "source_steps": 6},  # a schedule over steps
}


def small_engine(strategy: str, hypergrad: str = "one_step"):
    config, options = validate({
        "name": "t", "data": {"name": "synthetic_2d", "n_source": 40, "n_target": 10, "n_test": 20},
        "model": {"name": "mlp", "hidden": [8]}, "strategy": STRATEGIES[strategy],
        "hypergrad": {"name": hypergrad, **({"steps": 2} if hypergrad == "unrolled" else {})},
        "train": {"source_batch_size": 16, "target_batch_size": 4, "eval_every": 4},
    })
    return build_engine(config, options, seed=3)


def snapshot(engine) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v.clone() for k, v in engine.model.state_dict().items()}
    state["last_weights"] = engine.last_weights.clone()
    state["source_weights"] = engine.source_weights()
    return state


@pytest.mark.parametrize("hypergrad", ["one_step", "unrolled"])
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@settings(max_examples=3, deadline=None)
@given(stop=st.integers(1, 13))
def test_a_restored_engine_continues_bit_for_bit(tmp_path_factory, strategy, hypergrad, stop):
    path = tmp_path_factory.mktemp("ckpt") / "run.pt"
    straight = small_engine(strategy, hypergrad)

    def save_once(step: int) -> None:  # as the runner saves: after a step and its evaluation
        if step == stop:
            checkpoint.save(path, {"engine": straight.state_dict()})

    expected_metrics = straight.fit(14, eval_every=4, after_step=save_once)  # training goes on after the save
    expected = snapshot(straight)

    resumed = small_engine(strategy, hypergrad)
    resumed.load_state_dict(checkpoint.load(path)["engine"])
    assert resumed.step_count == stop
    metrics = resumed.fit(14, eval_every=4)
    assert metrics == expected_metrics
    for key, value in snapshot(resumed).items():
        assert torch.equal(value, expected[key]), key


def test_the_rng_continues_where_it_was_saved():
    engine = small_engine("soseleto")
    engine.fit(2, eval_every=4)
    state = engine.state_dict()
    expected = torch.rand(5)
    torch.manual_seed(12345)
    engine.load_state_dict(state)
    assert torch.equal(torch.rand(5), expected)


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    checkpoint.save(path, {"step": 1, "x": torch.ones(3)})

    def crash(obj, handle, *args, **kwargs):
        handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, {"step": 2, "x": torch.zeros(3)})
    assert checkpoint.load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]  # no temporary file left behind


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_state_is_never_written(tmp_path, bad):
    path = tmp_path / "run.pt"
    with pytest.raises(NumericalError, match=r"engine\.alpha"):
        checkpoint.save(path, {"engine": {"alpha": torch.tensor([0.5, bad])}})
    assert not path.exists()


def test_unreadable_checkpoints_are_one_line_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        checkpoint.load(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a reweight checkpoint"):
        checkpoint.load(foreign)
    with pytest.raises(CheckpointError, match="missing"):
        checkpoint.load(tmp_path / "none.pt")


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(tracking_dir, capsys):
    from reweight.cli import main

    code = main(["run", BENCHMARK, "--set", "train.steps=300", "--set", "train.lr=1e38",
                 "--set", "checkpoint.every=1"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1, error
    assert "the loss became NaN or infinite at step" in error and "last good checkpoint (step" in error
    [path] = (tracking_dir / "checkpoints").iterdir()
    state = checkpoint.load(path)
    assert checkpoint.non_finite(state) is None
    step = state["engine"]["step"]
    assert f"(step {step})" in error and f"stopped at step {step + 1}" in error

    path.write_bytes(b"damaged")  # resuming the failed run then meets a checkpoint it cannot read
    assert main(["run", BENCHMARK, "--set", "train.steps=300", "--set", "train.lr=1e38", "--resume"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {path}: unreadable checkpoint (") and "\n" not in error


# --- end to end, with real processes ---------------------------------------------------------

RUN = ["run", BENCHMARK, "--set", "train.steps=800", "--set", "checkpoint.every=50", "--set", "train.eval_every=200"]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "reweight.cli", *args]


def environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}


def start_and_stop(cwd: Path, how: int, args: list[str] = RUN, files: int = 1) -> subprocess.CompletedProcess:
    """Start the run, send ``how`` once the newest of ``files`` checkpoint files has reached
    step 100, and wait for the end."""
    process = subprocess.Popen(command(*args), cwd=cwd, env=environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    folder = cwd / "checkpoints"
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError, CheckpointError, KeyError):
            found = sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime)
            if len(found) >= files and checkpoint.load(found[-1])["engine"]["step"] >= 100:
                break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be stopped"
    process.send_signal(how)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def runs(cwd: Path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{cwd / 'mlflow.db'}")
    found = mlflow.search_runs(experiment_names=["synthetic_2d"])
    return found[found["tags.reweight.role"] == "parent"], found[found["tags.reweight.role"] == "child"]


def final_state(cwd: Path) -> tuple[dict[str, float], str]:
    """The finished child run's final metrics and its weights file."""
    import mlflow

    _, children = runs(cwd)
    [run_id] = children["run_id"]
    metrics = mlflow.MlflowClient().get_run(run_id).data.metrics
    return metrics, mlflow.artifacts.load_text(f"runs:/{run_id}/weights.csv")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("straight")
    result = subprocess.run(command(*RUN), cwd=cwd, env=environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return final_state(cwd)


def test_killed_then_resumed_ends_exactly_as_an_uninterrupted_run(tmp_path, uninterrupted):
    killed = start_and_stop(tmp_path, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    parents, children = runs(tmp_path)
    assert list(children["status"]) == ["RUNNING"]  # a hard kill leaves MLflow unaware

    resumed = subprocess.run(command(*RUN, "--resume"), cwd=tmp_path, env=environment(), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming parent run {parents['run_id'].iloc[0]}" in resumed.stdout
    step = int(resumed.stdout.split("resuming at step ")[1].split()[0])
    assert 100 <= step < 800
    parents_after, children_after = runs(tmp_path)
    assert len(parents_after) == 1 and len(children_after) == 1  # the same runs, continued
    assert set(parents_after["status"]) == set(children_after["status"]) == {"FINISHED"}
    metrics, weights = final_state(tmp_path)
    expected_metrics, expected_weights = uninterrupted
    assert weights == expected_weights
    assert metrics == expected_metrics


def test_ctrl_c_saves_marks_the_runs_killed_and_says_how_to_resume(tmp_path, uninterrupted):
    stopped = start_and_stop(tmp_path, signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr
    message = stopped.stderr.strip().splitlines()
    assert len(message) == 1 and message[0].startswith("stopped: SIGINT at step"), stopped.stderr
    assert "Traceback" not in stopped.stderr
    parents, children = runs(tmp_path)
    assert list(parents["status"]) == ["KILLED"] and list(children["status"]) == ["KILLED"]
    parent_id = parents["run_id"].iloc[0]
    assert message[0].endswith(f"resume with: reweight resume {parent_id}")
    step = int(message[0].split("at step ")[1].split()[0])
    [path] = (tmp_path / "checkpoints").glob("*.pt")
    assert str(path) in message[0] and checkpoint.load(path)["engine"]["step"] == step

    resumed = subprocess.run(command("resume", children["run_id"].iloc[0]), cwd=tmp_path, env=environment(),
                             capture_output=True, text=True, timeout=600)  # a child's id finds its parent
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {step}" in resumed.stdout
    assert final_state(tmp_path) == uninterrupted

    again = subprocess.run(command("resume", parent_id), cwd=tmp_path, env=environment(), capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 2 and again.stderr.strip() == f"error: run {parent_id} has finished; nothing to resume"


def test_resuming_a_sweep_keeps_finished_children_and_continues_the_rest(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(Path(BENCHMARK).read_text() + "sweep:\n  strategy.name: [uniform, soseleto]\n")
    args = ["run", str(config), "--set", "train.steps=800", "--set", "checkpoint.every=50",
            "--set", "train.eval_every=200", "--set", "tracking.plots=false"]
    stopped = start_and_stop(tmp_path, signal.SIGINT, args, files=2)
    assert stopped.returncode == 130, stopped.stderr
    _, children = runs(tmp_path)
    first = children[children["tags.reweight.combination"] == "strategy.name=uniform"]
    assert list(first["status"]) == ["FINISHED"]

    resumed = subprocess.run(command(*args, "--resume"), cwd=tmp_path, env=environment(), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"run={first['run_id'].iloc[0]} (finished earlier)" in resumed.stdout
    assert "strategy.name=soseleto-seed0: resuming at step" in resumed.stdout
    parents, after = runs(tmp_path)
    assert len(parents) == 1 and len(after) == 2 and set(after["status"]) == {"FINISHED"}
    comparison = resumed.stdout.split("synthetic_2d: 2 runs")[1]  # the closing table covers both children
    assert "uniform" in comparison and "soseleto" in comparison


def test_resume_without_an_unfinished_run_starts_a_new_one(tracking_dir, capsys):
    from reweight.cli import main

    for _ in range(2):
        assert main(["run", BENCHMARK, "--set", "train.steps=10", "--set", "train.eval_every=5", "--resume"]) == 0
        assert "no unfinished run of this plan to resume: starting a new one" in capsys.readouterr().out
    parents, children = runs(tracking_dir)
    assert len(parents) == 2 and set(children["status"]) == {"FINISHED"}


def test_resume_of_an_unknown_run_is_one_line(tracking_dir, capsys):
    from reweight.cli import main

    assert main(["run", BENCHMARK, "--set", "train.steps=5", "--set", "train.eval_every=5"]) == 0
    capsys.readouterr()
    assert main(["resume", "0123456789abcdef"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: cannot read the MLflow tracking store:") and "\n" not in error
