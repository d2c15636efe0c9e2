"""End to end: the ``reweight`` command on the synthetic benchmark, results read back from MLflow."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

BENCHMARK = str(Path(__file__).resolve().parents[1] / "benchmarks" / "synthetic_2d.yaml")


def reweight(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The command in ``cwd``, with MLflow's default store there unless ``env`` names another
    (``mlflow.set_tracking_uri`` in this process exports MLFLOW_TRACKING_URI; it must not leak)."""
    clean = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, "-m", "reweight.cli", *args], check=False, cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**clean, **(env or {})})


def test_synthetic_run_lands_in_mlflow_and_downweights_flipped_labels(tracking_dir):
    result = reweight("run", BENCHMARK, "--set", "seeds=[0, 1]", cwd=tracking_dir)  # the shipped budget
    assert result.returncode == 0, result.stderr
    summary = [line for line in result.stdout.splitlines() if "test_accuracy=" in line]
    assert len(summary) == 3 and "2 seeds" in summary[-1] and "weight_noise_auc=" in summary[-1]
    assert result.stdout.count("without reweighting (uniform, same seed and data)") == 2  # tracking.baseline
    assert "  over 2 seeds: test accuracy " in result.stdout and "without reweighting (uniform, same seeds)" in result.stdout

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tracking_dir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["synthetic_2d"])
    children = runs[runs["tags.reweight.role"] == "child"]
    parents = runs[runs["tags.reweight.role"] == "parent"]
    assert len(parents) == 1 and len(children) == 2
    assert set(children["tags.mlflow.parentRunId"]) == set(parents["run_id"])
    assert set(children["tags.strategy"]) == {"soseleto"} and set(children["tags.seed"]) == {"0", "1"}
    assert list(parents["tags.mlflow.runName"]) == ["soseleto(lr=20.0) · 2 seeds"]
    assert set(children["tags.mlflow.runName"]) == {"soseleto-seed0", "soseleto-seed1"}
    experiment = mlflow.get_experiment_by_name("synthetic_2d")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow 3's training view
    assert result.stdout.splitlines()[-1] == (
        f"in MLflow's UI: mlflow ui --backend-store-uri sqlite:///{tracking_dir / 'mlflow.db'}, then http://127.0.0.1:"
        f"5000/#/experiments/{experiment.experiment_id}/runs/{parents['run_id'].iloc[0]}?workflowType=machine_learning")
    assert children["params.strategy.lr"].iloc[0] == "20.0"
    for name in ("test_accuracy", "target_loss", "source_loss", "weight_noise_auc"):
        assert children[f"metrics.{name}"].notna().all()
    assert (children["metrics.weight_clean_mean"] > children["metrics.weight_corrupted_mean"] + 0.1).all()
    assert (children["metrics.weight_noise_auc"] > 0.75).all()

    client = mlflow.MlflowClient()
    run_id = children["run_id"].iloc[0]
    history = client.get_metric_history(run_id, "test_accuracy")
    assert [m.step for m in history] == list(range(125, 3126, 125))
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


def test_runs_started_at_once_in_an_empty_folder_all_succeed(tracking_dir):
    """Without the store's lock, MLflow's creation of the SQLite tables races, and all but one
    of several runs starting together on a new store die with a traceback."""
    clean = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    command = [sys.executable, "-m", "reweight.cli", "run", BENCHMARK, "--set", "train.steps=20",
               "--set", "train.eval_every=10"]
    started = [subprocess.Popen(command, cwd=tracking_dir, env=clean, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(3)]
    finished = [(process.wait(timeout=600), *process.communicate()) for process in started]
    assert [code for code, _, _ in finished] == [0, 0, 0], [err for _, _, err in finished]
    assert all("Traceback" not in err for _, _, err in finished)

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tracking_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("synthetic_2d")
    runs = client.search_runs([experiment.experiment_id], "tags.`reweight.role` = 'parent'")
    assert len(runs) == 3 and {run.info.status for run in runs} == {"FINISHED"}
    assert not (tracking_dir / "mlflow.db.lock").exists()


def test_a_store_held_too_long_by_another_process_is_one_line(tracking_dir, monkeypatch, capsys):
    """A process stuck while setting the store up (here: this test holding its lock) makes the
    others give up after a while, in one line, before any run is recorded."""
    from reweight.cli import main
    from reweight.experiment import checkpoint, tracking

    monkeypatch.setattr(tracking, "STORE_LOCK_WAIT", 0.3)
    lock = tracking_dir / "mlflow.db.lock"
    held = checkpoint.acquire(lock)
    try:
        code = main(["run", BENCHMARK, "--set", "train.steps=2"])
    finally:
        checkpoint.release(lock, held)
    err = capsys.readouterr().err
    assert code == 2 and err == (f"error: the MLflow tracking store {tracking_dir / 'mlflow.db'} is still being set "
                                 f"up by another process after 0.3 s (it holds {lock}); try again when it is done\n")
    assert not (tracking_dir / "mlflow.db").exists()


def test_a_schedule_from_the_command_line_logs_its_rates(tracking_dir):
    result = reweight("run", BENCHMARK, "--set", "train.steps=40", "--set", "train.eval_every=10",
                      "--set", "train.schedule={kind: step, milestones: [15, 35], gamma: 0.5}", cwd=tracking_dir)
    assert result.returncode == 0, result.stderr
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tracking_dir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["synthetic_2d"])
    child = runs[runs["tags.reweight.role"] == "child"]
    assert child["params.train.schedule.kind"].iloc[0] == "step"
    history = mlflow.MlflowClient().get_metric_history(child["run_id"].iloc[0], "lr")
    lr = float(child["params.train.lr"].iloc[0])
    assert [(m.step, m.value) for m in history] == [(10, lr), (20, lr / 2), (30, lr / 2), (40, lr / 4)]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lr=-0.1", "error: train.lr: Input should be greater than 0"),
        ("train.schedule.kind=linear", "error: train.schedule.kind: Input should be 'constant', 'cosine' or 'step'"),
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
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_plugins_lists_name_kind_package_version(tracking_dir):
    result = reweight("plugins", cwd=tracking_dir)
    assert result.returncode == 0
    line = next(line for line in result.stdout.splitlines() if "soseleto" in line)
    assert "strategy" in line and "reweight" in line and "0.1.0" in line


def plugins_output(*args: str, width: int, monkeypatch) -> str:
    """``reweight plugins ...`` printed to a terminal ``width`` columns wide."""
    from rich.console import Console

    from reweight import cli

    out = io.StringIO()
    monkeypatch.setattr(cli, "make_console", lambda: Console(file=out, width=width, color_system=None))
    assert cli.main(["plugins", *args]) == 0
    return out.getvalue()


def test_plugins_name_shows_each_option_with_type_default_and_description(monkeypatch):
    out = plugins_output("soseleto", width=120, monkeypatch=monkeypatch)
    assert out.startswith("strategy soseleto (plugin soseleto, reweight ")
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:5]]
            for line in out.splitlines() if line.startswith("│") and line.split("│")[1].strip()}
    assert rows["lr"] == ["float > 0", "1.0", "λ_α, the step size of the weights."]
    assert rows["init"][:2] == ["float >= 0", "0.5"] and set(rows) == {"lr", "init", "lower", "upper", "target_weight"}
    nested = plugins_output("noisy_labels", width=200, monkeypatch=monkeypatch)
    assert re.search(r"│ dataset +│ mnist \| fashion_mnist \| svhn .*│ required +│", nested)
    assert re.search(r"│ noise\.rate +│ float >= 0\.0, <= 1\.0 +│ 0\.3 +│ Fraction of source labels", nested)
    assert re.search(r"│ classes +│ list\[int\] length >= 2 \| null +│ null +│", nested)  # no markup eaten
    assert "this component takes no options" in plugins_output("uniform", width=120, monkeypatch=monkeypatch)
    every = plugins_output("--options", width=160, monkeypatch=monkeypatch)
    assert "strategy soseleto (plugin" in every and "model mlp (plugin" in every and "dataset tasks (plugin" in every


@pytest.mark.parametrize("width", [24, 50, 64, 90])
def test_plugins_never_cut_a_name_in_a_narrow_terminal(width, monkeypatch):
    """Every component and option name is printed whole, whatever the width (a table where it
    fits, else one line per field), and no cell is cut short."""
    from reweight.cli import option_rows
    from reweight.core.plugins import KINDS, registry

    found = registry()
    components = [found.get(kind, name) for kind in KINDS for name in found.names(kind)]
    listing = plugins_output(width=width, monkeypatch=monkeypatch)
    words = set(re.findall(r"[\w.]+", listing))
    assert {c.name for c in components} <= words and {c.plugin for c in components} <= words
    for name in ("noisy_labels", "soseleto", "meta_weight_net", "transfer"):
        shown = plugins_output(name, width=width, monkeypatch=monkeypatch)
        component = next(c for c in components if c.name == name)
        assert {row[0] for row in option_rows(component.options)} <= set(re.findall(r"[\w.]+", shown))
        assert "…" not in shown and "..." not in shown
    assert all(len(line) <= width for line in listing.splitlines() if "│" in line or "━" in line)


def test_plugins_of_an_unknown_name_is_one_line(capsys):
    from reweight.cli import main

    assert main(["plugins", "sosoleto"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown component 'sosoleto' (installed: cifar10_quick, cross_entropy, digits, ")
    assert len(err.splitlines()) == 1


# --- sweeps and `reweight compare` -------------------------------------------------------------

SWEEP = ["--set", "sweep={strategy.name: [soseleto, uniform], data.noise_rate: [0.2, 0.4]}",
         "--set", "train.steps=20", "--set", "train.eval_every=10", "--set", "data.n_test=200"]


def compare(*args: str, capsys) -> tuple[int, str, str]:
    """``reweight compare`` in this process (the tracking store is taken from the environment)."""
    from reweight.cli import main

    code = main(["compare", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def swept_store(tmp_path_factory):
    """A 2 strategies × 2 noise levels × 2 seeds sweep, then one combination run again."""
    where = tmp_path_factory.mktemp("sweep")
    first = reweight("run", BENCHMARK, *SWEEP, "--set", "seeds=2", cwd=where)
    assert first.returncode == 0, first.stderr
    again = reweight("run", BENCHMARK, *SWEEP, "--set", "sweep.strategy.name=[soseleto]",
                     "--set", "sweep.data.noise_rate=[0.4]", "--set", "seeds=[0]", "--set", "tracking.plots=false",
                     cwd=where)
    assert again.returncode == 0, again.stderr
    return where, first.stdout, again.stdout


@pytest.fixture
def in_store(swept_store, monkeypatch):
    where, _, _ = swept_store
    monkeypatch.chdir(where)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return where


def test_sweep_is_one_parent_with_a_tagged_child_per_combination_and_seed(in_store, swept_store):
    import mlflow

    _, first_out, _ = swept_store
    assert "strategy.name=uniform data.noise_rate=0.4, 2 seeds" in first_out
    assert "again later: reweight compare synthetic_2d --parent" in first_out
    mlflow.set_tracking_uri(f"sqlite:///{in_store / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["synthetic_2d"])
    parents = runs[runs["tags.reweight.role"] == "parent"].sort_values("start_time")
    children = runs[runs["tags.reweight.role"] == "child"]
    assert len(parents) == 2 and len(children) == 8 + 1  # the rerun added a run, it replaced none
    first_id = parents["run_id"].iloc[0]
    mine = children[children["tags.mlflow.parentRunId"] == first_id]
    assert len(mine) == 8
    assert list(parents["tags.mlflow.runName"]) == ["sweep strategy.name × data.noise_rate (4 combinations × 2 seeds)",
                                                    "sweep strategy.name × data.noise_rate (1 combination)"]
    assert "strategy.name=uniform,data.noise_rate=0.4-seed1" in set(mine["tags.mlflow.runName"])
    assert set(zip(mine["tags.sweep.strategy.name"], mine["tags.sweep.data.noise_rate"], mine["tags.seed"])) == {
        (s, n, seed) for s in ("soseleto", "uniform") for n in ("0.2", "0.4") for seed in ("0", "1")}
    assert set(mine["tags.reweight.sweep"]) == {"strategy.name,data.noise_rate"}
    assert set(mine["params.data.noise_rate"]) == {"0.2", "0.4"}
    assert "strategy.name=uniform data.noise_rate=0.2" in set(mine["tags.reweight.combination"])
    uniform = mine[mine["tags.strategy"] == "uniform"]
    assert "params.strategy.lr" not in uniform or uniform["params.strategy.lr"].isna().all()  # soseleto's option dropped
    parent = parents.iloc[0]
    assert parent["params.sweep.data.noise_rate"] == "[0.2, 0.4]" and parent["params.train.steps"] == "20"
    client = mlflow.MlflowClient()
    plots = {f.path for f in client.list_artifacts(first_id, "plots")}
    assert plots == {"plots/curves.png", "plots/weights.png", "plots/detector.png", "plots/weights_by_class.png",
                     "plots/points.png"}
    child = mine[mine["tags.strategy"] == "soseleto"]["run_id"].iloc[0]
    assert {f.path for f in client.list_artifacts(child, "plots")} == {"plots/weights_by_class.png", "plots/points.png"}
    config = mlflow.artifacts.load_text(f"runs:/{first_id}/config.yaml")
    assert "sweep:\n  strategy.name:\n  - soseleto\n  - uniform" in config


def test_compare_table_counts_every_run_of_a_cell(in_store, capsys):
    code, out, err = compare("--format", "json", capsys=capsys)
    assert code == 0, err
    cells = {(c["strategy"], c["data.noise_rate"]): c for c in json.loads(out)}
    assert set(cells) == {(s, n) for s in ("soseleto", "uniform") for n in ("0.2", "0.4")}
    assert cells[("soseleto", "0.4")]["n"] == 3 and cells[("uniform", "0.2")]["n"] == 2
    assert all(0 <= c["test_accuracy_mean"] <= 1 and c["test_accuracy_std"] >= 0 for c in cells.values())

    code, out, _ = compare("synthetic_2d", "--latest", "--by", "noise", "--metric", "test_accuracy,weight_noise_auc",
                           "--format", "markdown", capsys=capsys)
    lines = out.strip().splitlines()
    assert code == 0 and lines[0] == "| noise | test_accuracy (mean ± std) | weight_noise_auc (mean ± std) | n |"
    assert len(lines) == 3 and lines[2].startswith("| 0.4 | ") and lines[2].endswith(" | 1 |")

    code, out, _ = compare(BENCHMARK, "--by", "strategy", "--format", "csv", capsys=capsys)
    assert code == 0 and out.splitlines()[0] == "strategy,n,test_accuracy_mean,test_accuracy_std"
    assert [line.split(",")[:2] for line in out.splitlines()[1:]] == [["soseleto", "5"], ["uniform", "4"]]

    code, out, _ = compare(capsys=capsys)
    assert code == 0 and "synthetic_2d: 9 runs from 2 parent runs" in out and "± " in out


def test_compare_plots_are_written(in_store, capsys, tmp_path):
    code, _, err = compare("--plot", str(tmp_path / "plots"), capsys=capsys)
    assert code == 0, err
    written = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert written == ["curves.png", "detector.png", "points.png", "weights.png", "weights_by_class.png"]
    assert all((tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG" for name in written)


@pytest.mark.parametrize(("args", "expected"), [
    (["--by", "bogus"], "error: --by bogus: no tag or param of that name on these runs; swept here: data.noise_rate"),
    (["--metric", "nope"], "error: --metric nope: no run logged it (logged: "),
    (["missing"], "error: no experiment 'missing' in the tracking store (it has: synthetic_2d)"),
    (["--parent", "0123"], "error: experiment 'synthetic_2d' has no finished child runs under parent run 0123"),
])
def test_compare_errors_are_one_line(in_store, capsys, args, expected):
    code, _, err = compare(*args, capsys=capsys)
    assert code == 2 and err.startswith(expected) and len(err.strip().splitlines()) == 1


def test_compare_without_a_store_or_with_an_unreachable_server(tracking_dir, capsys, monkeypatch):
    code, _, err = compare(capsys=capsys)
    assert code == 2 and err.startswith("error: no MLflow store at ") and not (tracking_dir / "mlflow.db").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    code, _, err = compare(capsys=capsys)
    assert code == 2 and err.startswith("error: cannot reach the MLflow tracking server http://127.0.0.1:")
    assert len(err.strip().splitlines()) == 1


def test_run_against_an_unreachable_server_is_one_line(tracking_dir):
    result = reweight("run", BENCHMARK, "--set", "train.steps=5", cwd=tracking_dir,
                      env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"})
    assert result.returncode == 2 and result.stderr.startswith("error: cannot reach the MLflow tracking server")
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_sweep_combination_is_one_line_before_any_run(tracking_dir, capsys):
    from reweight.cli import main

    code = main(["run", BENCHMARK, "--set", "sweep={strategy.name: [soseleto, uniform], strategy.lr: [10]}"])
    err = capsys.readouterr().err
    assert code == 2 and err == ("error: sweep combination strategy.name=uniform, strategy.lr=10: "
                                 "strategy.lr: unknown field\n")
    assert not (tracking_dir / "mlflow.db").exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(where: Path):
    """A real MLflow server on a free local port, with its store and artifacts under ``where``."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{where / 's.db'}",
         "--default-artifact-root", str(where / "art"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=where, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None, "the MLflow server exited"
                assert time.monotonic() < deadline, "the MLflow server did not answer in 180 s"
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)


@pytest.mark.slow  # an MLflow server takes 10-40 s to start on a small shared machine
def test_sweep_and_compare_against_a_real_mlflow_server(tmp_path):
    with mlflow_server(tmp_path) as uri:
        env = {"MLFLOW_TRACKING_URI": uri}
        work = tmp_path / "work"
        work.mkdir()
        ran = reweight("run", BENCHMARK, "--set", "seeds=2", "--set", "sweep.strategy.name=[soseleto, uniform]",
                       "--set", "train.steps=10", "--set", "train.eval_every=5", "--set", "data.n_test=200",
                       cwd=work, env=env)
        assert ran.returncode == 0, ran.stderr
        assert f"in MLflow's UI: {uri}/#/experiments/" in ran.stdout and "?workflowType=machine_learning" in ran.stdout
        compared = reweight("compare", "synthetic_2d", "--format", "csv", "--plot", str(work / "plots"), cwd=work,
                            env=env)
        assert compared.returncode == 0, compared.stderr
        lines = compared.stdout.splitlines()
        assert lines[0] == "strategy,n,test_accuracy_mean,test_accuracy_std"
        assert [line.split(",")[:2] for line in lines[1:]] == [["soseleto", "2"], ["uniform", "2"]]
        assert {p.name for p in (work / "plots").iterdir()} == {"curves.png", "weights.png", "detector.png",
                                                                 "weights_by_class.png", "points.png"}
        assert not (work / "mlflow.db").exists()  # everything went to the server
        assert any((tmp_path / "art").rglob("weights.csv"))  # artifacts live in the server's store


def browser() -> str | None:
    return next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)),
                None)


@pytest.mark.slow  # a server and a browser
@pytest.mark.skipif(browser() is None, reason="no headless Chromium to load MLflow's UI with")
def test_the_printed_link_opens_the_parent_run_in_mlflows_training_view(tmp_path):
    """What a user sees: the page `reweight run` links to, rendered by MLflow's own UI, shows
    the parent run by its name and its metrics, in the model-training view (its menu: runs,
    models, the model registry), not the GenAI one (overview, observability, ...)."""
    with mlflow_server(tmp_path) as uri:
        ran = reweight("run", BENCHMARK, "--set", "seeds=2", "--set", "train.steps=10", "--set", "train.eval_every=5",
                       cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
        assert ran.returncode == 0, ran.stderr
        link = ran.stdout.splitlines()[-1].removeprefix("in MLflow's UI: ")
        assert link.startswith(f"{uri}/#/experiments/")
        page = subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=40000",
                               "--dump-dom", link], check=False, capture_output=True, text=True, timeout=300).stdout
    text = " ".join(re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", "", page, flags=re.DOTALL)).split())
    assert "soseleto(lr=20.0) · 2 seeds" in text and "test_accuracy_mean" in text, text[:2000]  # the parent
    assert "Model registry" in text and "Observability" not in text, text[:2000]  # the training view's menu


def test_compare_keeps_two_configurations_of_one_strategy_apart(tracking_dir, capsys):
    """The case that once pooled SOSELETO at target_weight 0 and 1 into one row."""
    from reweight.cli import main

    for weight in ("0", "1"):
        assert main(["run", BENCHMARK, "--set", "train.steps=10", "--set", "train.eval_every=10",
                     "--set", "seeds=2", "--set", f"strategy.target_weight={weight}"]) == 0
    capsys.readouterr()
    code, out, err = compare("--format", "json", capsys=capsys)
    assert code == 0 and not err, err
    rows = {(row["strategy"], row["strategy.target_weight"]): row["n"] for row in json.loads(out)}
    assert rows == {("soseleto", "0.0"): 2, ("soseleto", "1.0"): 2}
    code, out, err = compare("--by", "strategy", "--format", "csv", capsys=capsys)
    assert code == 0 and out.splitlines()[1].startswith("soseleto,4,")
    assert err.strip() == ("note: rows pool runs with different strategy.target_weight (0.0, 1.0); "
                           "add it to --by to split them")
