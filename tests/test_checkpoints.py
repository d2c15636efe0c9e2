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

from reweight.core.errors import NumericalError
from reweight.experiment import checkpoint
from reweight.experiment.checkpoint import CheckpointError
from reweight.experiment.config import validate
from reweight.experiment.runner import build_engine

BENCHMARK = str(Path(__file__).resolve().parents[1] / "benchmarks" / "synthetic_2d.yaml")
STRATEGIES = {
    "soseleto": {"name": "soseleto", "lr": 50.0},
    "meta_weight_net": {"name": "meta_weight_net"},  # a weight network with Adam state
    "learning_to_reweight": {"name": "learning_to_reweight"},
    "fine_tune": {"name": "fine_tune", "source_steps": 6},  # a schedule over steps
}


HYPERGRADS = {
    "one_step": {"name": "one_step"},
    "unrolled": {"name": "unrolled", "steps": 2},
    "lookahead": {"name": "one_step", "at": "lookahead"},
    "higher": {"name": "unrolled", "steps": 2, "backend": "higher"},
}


OPTIMIZERS = {
    "sgd": {},
    "adam": {"optimizer": "adam", "target_optimizer": "adam", "lr": 0.01},  # step counts and moments
    "adamw": {"optimizer": {"name": "adamw", "weight_decay": 0.01}, "target_optimizer": "adamw", "lr": 0.01},
}


def small_engine(strategy: str, hypergrad: str = "one_step", granularity: str = "per_sample", optimizer: str = "sgd"):
    config, options = validate({
        "name": "t", "data": {"name": "synthetic_2d", "n_source": 40, "n_target": 10, "n_test": 20},
        "model": {"name": "mlp", "hidden": [8]}, "strategy": STRATEGIES[strategy],
        "hypergrad": HYPERGRADS[hypergrad],
        "granularity": {"name": "per_group", "by": "kmeans", "k": 5} if granularity == "kmeans" else granularity,
        "train": {"source_batch_size": 16, "target_batch_size": 4, "eval_every": 4, **OPTIMIZERS[optimizer]},
    })
    return build_engine(config, options, seed=3)


def snapshot(engine) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v.clone() for k, v in engine.model.state_dict().items()}
    state["last_weights"] = engine.last_weights.clone()
    state["source_weights"] = engine.source_weights()
    return state


VARIANTS = [(strategy, hypergrad, "per_sample", "sgd") for strategy in sorted(STRATEGIES)
            for hypergrad in ("one_step", "unrolled")]
VARIANTS += [("soseleto", "lookahead", "per_sample", "sgd"), ("meta_weight_net", "higher", "per_sample", "sgd"),
             ("soseleto", "one_step", "kmeans", "sgd"), ("meta_weight_net", "unrolled", "kmeans", "sgd"),
             ("soseleto", "one_step", "per_sample", "adam"), ("soseleto", "lookahead", "per_sample", "adamw"),
             ("learning_to_reweight", "unrolled", "per_sample", "adam"), ("meta_weight_net", "higher", "per_sample", "adamw")]


@pytest.mark.parametrize(("strategy", "hypergrad", "granularity", "optimizer"), VARIANTS)
@settings(max_examples=3, deadline=None)
@given(stop=st.integers(1, 13))
def test_a_restored_engine_continues_bit_for_bit(tmp_path_factory, strategy, hypergrad, granularity, optimizer, stop):
    path = tmp_path_factory.mktemp("ckpt") / "run.pt"
    straight = small_engine(strategy, hypergrad, granularity, optimizer)

    def save_once(step: int) -> None:  # as the runner saves: after a step and its evaluation
        if step == stop:
            checkpoint.save(path, {"engine": straight.state_dict()})

    expected_metrics = straight.fit(14, eval_every=4, after_step=save_once)  # training goes on after the save
    expected = snapshot(straight)

    resumed = small_engine(strategy, hypergrad, granularity, optimizer)
    resumed.load_state_dict(checkpoint.load(path)["engine"])
    assert resumed.step_count == stop
    metrics = resumed.fit(14, eval_every=4)
    assert metrics == expected_metrics
    for key, value in snapshot(resumed).items():
        assert torch.equal(value, expected[key]), key


def test_a_checkpoint_of_other_optimizers_is_refused():
    state = small_engine("soseleto").state_dict()
    with pytest.raises(ValueError, match="^it was saved with optimizers SGD/SGD, this run has Adam/Adam$"):
        small_engine("soseleto", optimizer="adam").load_state_dict(state)
    del state["optimizer_kinds"]  # a checkpoint from before optimizers could be chosen: SGD's
    small_engine("soseleto").load_state_dict(state)


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
    with pytest.raises(CheckpointError, match=r"run\.pt: cannot save the checkpoint \(disk full\)"):
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
    with pytest.raises(CheckpointError, match=r"unreadable checkpoint \(UnpicklingError: damaged, or not a file "
                                              r"that reweight wrote\)$"):
        checkpoint.load(garbage)
    truncated = tmp_path / "truncated.pt"
    checkpoint.save(truncated, {"x": torch.ones(1000)})
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match=r"unreadable checkpoint \(RuntimeError: [^\n.]*\)$"):
        checkpoint.load(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a reweight checkpoint"):
        checkpoint.load(foreign)
    with pytest.raises(CheckpointError, match="missing"):
        checkpoint.load(tmp_path / "none.pt")


@pytest.mark.parametrize("every", ["1", "null"])  # null: only evaluations meet the NaN
def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(tracking_dir, capsys, every):
    from reweight.cli import main

    code = main(["run", BENCHMARK, "--set", "train.steps=300", "--set", "train.lr=1e38", "--set", "train.eval_every=100",
                 "--set", f"checkpoint.every={every}"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1, error
    assert error.startswith("error: soseleto-seed0: the loss became NaN or infinite at step"), error
    saved = list((tracking_dir / "checkpoints").glob("*.pt"))
    if every == "null":
        assert saved == [] and error.endswith("stopped at step 100); lower train.lr or the strategy's learning "
                                              "rate; no checkpoint was saved")
        return
    [path] = saved
    state = checkpoint.load(path)
    assert checkpoint.non_finite(state) is None
    step = state["engine"]["step"]
    assert f"(step {step})" in error and f"stopped at step {step + 1}" in error
    parents, children = runs(tracking_dir)
    assert list(parents["status"]) == list(children["status"]) == ["FAILED"]


def test_a_diverging_combination_fails_alone_and_stays_failed_on_resume(tracking_dir, capsys):
    from reweight.cli import main

    args = ["run", BENCHMARK, "--set", "sweep.train.lr=[1.0e+38, 0.1]", "--set", "train.steps=20",
            "--set", "train.eval_every=10", "--set", "tracking.plots=false"]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert "error: train.lr=1.0e+38-seed0: the loss became NaN or infinite" in out
    assert "synthetic_2d [train.lr=0.1 seed 0]: test_accuracy=" in out
    assert err.strip().startswith("error: 1 child run diverged (NaN or infinite loss): train.lr=1.0e+38-seed0;")
    _, children = runs(tracking_dir)
    status = dict(zip(children["tags.reweight.combination"], children["status"]))
    assert status == {"train.lr=1.0e+38": "FAILED", "train.lr=0.1": "FINISHED"}

    assert main([*args, "--resume"]) == 2  # nothing runs again: one finished, one diverged for good
    out, _ = capsys.readouterr()
    assert "train.lr=1.0e+38-seed0: diverged earlier" in out and "(finished earlier)" in out
    assert len(runs(tracking_dir)[1]) == 2


class StopAfter:
    """Stands for a signal arriving after ``polls`` checks of the stop request."""

    def __init__(self, polls: int, number: int) -> None:
        self.polls, self.number = polls, number

    @property
    def pending(self) -> bool:
        self.polls -= 1
        return self.polls < 0

    @property
    def signal(self) -> int:
        return self.number

    @property
    def name(self) -> str:
        return signal.Signals(self.number).name


def interrupted_run(tracking_dir, capsys, number=signal.SIGTERM):
    """A run stopped at step 30 as by ``number``: (exit code, stderr, parent id, checkpoint)."""
    from reweight.cli import main
    from reweight.experiment import runner

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "stop_on_signal", lambda: contextlib.nullcontext(StopAfter(30, number)))
        code = main(["run", BENCHMARK, "--set", "train.steps=100", "--set", "checkpoint.every=10"])
    error = capsys.readouterr().err.strip()
    parents, _ = runs(tracking_dir)
    [path] = (tracking_dir / "checkpoints").glob("*.pt")
    return code, error, parents["run_id"].iloc[0], path


def test_sigterm_exits_143_and_a_damaged_checkpoint_is_one_line(tracking_dir, capsys):
    from reweight.cli import main

    code, error, parent_id, path = interrupted_run(tracking_dir, capsys)
    assert code == 143 and error.startswith("stopped: SIGTERM at step 30 of soseleto-seed0;"), error
    assert checkpoint.load(path)["engine"]["step"] == 30
    path.write_bytes(b"damaged")
    assert main(["resume", parent_id]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {path}: unreadable checkpoint (") and "\n" not in error


def test_a_run_held_by_another_process_is_not_resumed(tracking_dir, capsys):
    from reweight.cli import main

    _, _, parent_id, path = interrupted_run(tracking_dir, capsys)
    lock = path.parent / f"{parent_id}.lock"
    with checkpoint.exclusive(lock):
        assert main(["resume", parent_id]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"error: another process is running these runs (it holds {lock}); "
                     "wait for it to end, or stop it first")
    parents, children = runs(tracking_dir)
    assert list(parents["status"]) == ["KILLED"] and list(children["status"]) == ["KILLED"]  # untouched


def test_the_lock_file_is_deleted_when_released_and_can_be_taken_again(tmp_path):
    lock = tmp_path / "parent.lock"
    with checkpoint.exclusive(lock):
        assert lock.exists()
        with pytest.raises(CheckpointError), checkpoint.exclusive(lock):
            pass
        assert lock.exists()  # a refused attempt leaves the holder's file alone
    assert not lock.exists()
    with pytest.raises(RuntimeError), checkpoint.exclusive(lock):  # released on an error too
        raise RuntimeError("boom")
    assert not lock.exists()
    with checkpoint.exclusive(lock):
        assert lock.exists()


def test_a_stopped_and_a_resumed_run_leave_no_lock_file(tracking_dir, capsys):
    from reweight.cli import main

    _, _, parent_id, path = interrupted_run(tracking_dir, capsys)
    assert not list(path.parent.glob("*.lock"))
    assert main(["resume", parent_id]) == 0
    assert not list(path.parent.glob("*.lock"))


def test_a_run_whose_config_now_resolves_differently_is_not_resumed(tracking_dir, capsys):
    import mlflow

    from reweight.cli import main
    from reweight.experiment.tracking import PLAN_TAG

    _, _, parent_id, _ = interrupted_run(tracking_dir, capsys)
    mlflow.MlflowClient().set_tag(parent_id, PLAN_TAG, "0" * 16)  # as if a default had changed since
    assert main(["resume", parent_id]) == 2
    assert "its config resolves differently now" in capsys.readouterr().err


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


def final_state(cwd: Path) -> tuple[dict[str, float], str, dict]:
    """The finished child run's final metrics, its weights file and its final engine state."""
    import mlflow

    _, children = runs(cwd)
    [run_id] = children["run_id"]
    metrics = mlflow.MlflowClient().get_run(run_id).data.metrics
    [path] = (cwd / "checkpoints").glob("*.pt")
    engine = checkpoint.load(path)["engine"]
    return metrics, mlflow.artifacts.load_text(f"runs:/{run_id}/weights.csv"), engine


def assert_identical(state, expected, path: str = "engine") -> None:
    """Every tensor bit for bit, every other value equal."""
    if isinstance(expected, torch.Tensor):
        assert torch.equal(state, expected), path
    elif isinstance(expected, dict):
        assert state.keys() == expected.keys(), path
        for key in expected:
            assert_identical(state[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(state) == len(expected), path
        for k, (a, b) in enumerate(zip(state, expected)):
            assert_identical(a, b, f"{path}.{k}")
    else:
        assert state == expected, path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("straight")
    result = subprocess.run(command(*RUN), check=False, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return final_state(cwd)


def test_killed_then_resumed_ends_exactly_as_an_uninterrupted_run(tmp_path, uninterrupted):
    killed = start_and_stop(tmp_path, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    parents, children = runs(tmp_path)
    assert list(children["status"]) == ["RUNNING"]  # a hard kill leaves MLflow unaware

    resumed = subprocess.run(command(*RUN, "--resume"), check=False, cwd=tmp_path, env=environment(), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming parent run {parents['run_id'].iloc[0]}" in resumed.stdout
    step = int(resumed.stdout.split("resuming at step ")[1].split()[0])
    assert 100 <= step < 800
    parents_after, children_after = runs(tmp_path)
    assert len(parents_after) == 1 and len(children_after) == 1  # the same runs, continued
    assert set(parents_after["status"]) == set(children_after["status"]) == {"FINISHED"}
    metrics, weights, engine = final_state(tmp_path)
    expected_metrics, expected_weights, expected_engine = uninterrupted
    assert weights == expected_weights
    assert metrics == expected_metrics
    assert_identical(engine, expected_engine)  # parameters, optimizers, α, samplers, RNG: bit for bit


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

    resumed = subprocess.run(command("resume", children["run_id"].iloc[0]), check=False, cwd=tmp_path, env=environment(),
                             capture_output=True, text=True, timeout=600)  # a child's id finds its parent
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {step}" in resumed.stdout
    metrics, weights, engine = final_state(tmp_path)
    assert (metrics, weights) == uninterrupted[:2]
    assert_identical(engine, uninterrupted[2])

    again = subprocess.run(command("resume", parent_id), check=False, cwd=tmp_path, env=environment(), capture_output=True,
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

    resumed = subprocess.run(command(*args, "--resume"), check=False, cwd=tmp_path, env=environment(), capture_output=True,
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


def test_a_resume_after_a_finished_seed_builds_the_next_seed_afresh(tracking_dir, capsys):
    """Seed 0 finished and seed 1 stopped part-way: the resumed seed 1 must end exactly as in an
    uninterrupted run (a resume once trained seed 1 on the engine built for seed 0)."""
    from reweight.cli import main
    from reweight.experiment import runner

    args = ["run", BENCHMARK, "--set", "seeds=[0, 1]", "--set", "train.steps=60", "--set", "train.eval_every=20",
            "--set", "checkpoint.every=10", "--set", "tracking.plots=false", "--set", "tracking.baseline=null"]
    with pytest.MonkeyPatch.context() as patch:  # seed 0: 1 + 60 polls; seed 1: 1 + 25 polls
        patch.setattr(runner, "stop_on_signal", lambda: contextlib.nullcontext(StopAfter(86, signal.SIGINT)))
        assert main(args) == 130
    assert "stopped: SIGINT at step 25 of soseleto-seed1" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    assert "soseleto-seed1: resuming at step 25" in capsys.readouterr().out
    assert main(args) == 0  # the same plan, uninterrupted
    parents, children = runs(tracking_dir)
    assert len(parents) == 2 and set(children["status"]) == {"FINISHED"}
    by_parent = {parent: frame.set_index("tags.seed")["metrics.test_accuracy"].to_dict()
                 for parent, frame in children.groupby("tags.mlflow.parentRunId")}
    resumed, straight = by_parent.values()
    assert resumed == straight
    source_loss = {parent: frame.set_index("tags.seed")["metrics.source_loss"].to_dict()
                   for parent, frame in children.groupby("tags.mlflow.parentRunId")}
    assert len({tuple(sorted(v.items())) for v in source_loss.values()}) == 1
