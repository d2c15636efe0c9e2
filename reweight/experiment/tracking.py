"""MLflow tracking: one parent run per ``reweight run``, one child run per combination and seed.

Params are the resolved config, flattened; the resolved config itself and the final weights
are artifacts; metrics are logged by step. A sweep's parent run holds the config as given
(with its ``sweep``), the params every combination shares, and the comparison plots. The
experiment is tagged for MLflow 3's model-training view (``EXPERIMENT_KIND``). Without
``MLFLOW_TRACKING_URI`` the store is MLflow's embedded SQLite file ``mlflow.db`` in the
working directory.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from reweight.core.errors import ReweightError
from reweight.experiment import checkpoint
from reweight.experiment.config import flatten
from reweight.experiment.interrupts import Interrupted


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


STORE_LOCK_WAIT = 300.0  # seconds to wait for another process setting up the same SQLite store


def sqlite_path(uri: str) -> Path | None:
    """The database file of an ``sqlite:///`` URI; None for any other store (or an in-memory one)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?")[0]
    return Path(path) if path and path != ":memory:" else None


@contextmanager
def store_setup(uri: str) -> Iterator[None]:
    """Around a first use of the store, which may create its tables or migrate their schema:
    one process at a time per SQLite file (MLflow's own set-up fails when several runs start at
    once on a new store), through the lock file ``<store>.lock`` beside it."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    lock = path.with_name(path.name + ".lock")
    try:
        handle = checkpoint.acquire(lock, wait=STORE_LOCK_WAIT)
    except OSError as error:
        if path.is_file():  # a store in a folder this process cannot write to: read it as it is
            yield
            return
        raise ReweightError(f"cannot use the MLflow tracking store {uri}: cannot create its lock file {lock} "
                            f"({error.strerror or error})") from None
    if handle is None:
        raise ReweightError(f"the MLflow tracking store {path} is still being set up by another process after "
                            f"{STORE_LOCK_WAIT:g} s (it holds {lock}); try again when it is done")
    try:
        yield
    finally:
        checkpoint.release(lock, handle)


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when a tracking server does not answer (MLflow's own client
    would retry for minutes). Any HTTP answer counts: only the connection matters here."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ReweightError(f"cannot reach the MLflow tracking server {uri}: {reason}") from None


WEIGHTS_FILE = "weights.csv"
PLAN_FILE = "plan.yaml"  # on the parent run: the config as given, re-runnable by `reweight resume`
PLAN_TAG = "reweight.plan"  # on the parent run: the plan's fingerprint, found by `--resume`


# MLflow 3's UI (3.4, for one) opens an experiment that carries this tag in its model-training
# view (runs, metrics, charts), where it would otherwise ask which kind the experiment is.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

# Later UIs (3.17, for one) choose the view by a switch of their own, GenAI unless changed; a
# link carrying this query opens the training view there.
TRAINING_VIEW = "workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def ui_link(experiment_id: str, run_id: str) -> str:
    """Where to see a run in MLflow's UI, in its training view: the server's own page, or, for a
    store on disk, the page `mlflow ui` serves for it."""
    uri = tracking_uri()
    page = f"/#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_VIEW}"
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/") + page
    return f"mlflow ui --backend-store-uri {uri}, then {LOCAL_UI}{page}"


WORLD_SIZE_PARAM = "distributed.world_size"  # how many ranks trained the run (1: one process)
CHECKPOINT_TAG = "reweight.checkpoint"  # on a child run: where its checkpoint file is
DIVERGED_TAG = "reweight.diverged"  # on a child run that stopped on a NaN or infinite loss


@dataclass(frozen=True)
class ChildRun:
    run_id: str
    status: str  # MLflow's: RUNNING, FINISHED, FAILED, KILLED
    checkpoint: str | None  # the file its checkpoints went to
    diverged: bool = False


def import_mlflow():
    import mlflow

    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return mlflow


def connect(need_store: bool = True) -> Any:
    """Point MLflow at the tracking store and return an MlflowClient; fail in one line if the
    server does not answer or (``need_store``) there is no store to read yet."""
    mlflow = import_mlflow()
    uri = tracking_uri()
    if need_store and uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise ReweightError(f"no MLflow store at {path}: run `reweight run` here first, "
                                "or set MLFLOW_TRACKING_URI")
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    with store_setup(uri):
        try:
            return mlflow.MlflowClient()
        except Exception as error:  # noqa: BLE001 - any backend failure is the same problem to a user
            raise ReweightError(f"cannot use the MLflow tracking store {uri}: {first_line(error)}") from None


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def store_call(function, *args, **kwargs):
    """Call the tracking store; any failure of the store is one line to a user."""
    try:
        return function(*args, **kwargs)
    except ReweightError:
        raise
    except Exception as error:  # noqa: BLE001
        raise ReweightError(f"cannot read the MLflow tracking store: {first_line(error)}") from None


def resumable(run_id: str) -> tuple[dict[str, Any], str]:
    """For ``reweight resume RUN_ID`` (a parent or a child run): the plan as given and the
    parent run to continue."""
    client = connect()
    run = store_call(client.get_run, run_id)
    tags = run.data.tags
    parent_id = tags.get("mlflow.parentRunId", run_id) if tags.get("reweight.role") == "child" else run_id
    parent = run if parent_id == run_id else store_call(client.get_run, parent_id)
    if parent.data.tags.get("reweight.role") != "parent":
        raise ReweightError(f"run {run_id} was not made by `reweight run`")
    if parent.info.status == "FINISHED":
        raise ReweightError(f"run {parent_id} has finished; nothing to resume")
    try:
        text = import_mlflow().artifacts.load_text(f"runs:/{parent_id}/{PLAN_FILE}")
    except Exception as error:  # noqa: BLE001
        raise ReweightError(f"run {parent_id} has no {PLAN_FILE} to resume from ({type(error).__name__})") from None
    return yaml.safe_load(text), parent_id


def weights_frame(
    weights: torch.Tensor,
    corrupted: torch.Tensor | None = None,
    slots: list[str] | None = None,
    harmful: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    points: torch.Tensor | None = None,
):
    """One row per source example: ``index, weight`` and, when known, ``label`` (the observed,
    possibly noisy class index), ``corrupted`` (0/1: the label was corrupted), ``slot`` (the
    weight slot: group or task name), ``harmful`` (0/1: the example belongs to a source the
    benchmark made harmful) and ``x0, x1`` (the inputs, for 2-D data, so that a plot of the
    points needs nothing else). A pandas DataFrame."""
    import pandas as pd

    columns: dict[str, Any] = {"index": range(len(weights)), "weight": weights.detach().double().cpu().numpy()}
    if labels is not None:
        columns["label"] = labels.cpu().long().numpy()
    if corrupted is not None:
        columns["corrupted"] = corrupted.cpu().long().numpy()
    if slots is not None:
        columns["slot"] = slots
    if harmful is not None:
        columns["harmful"] = harmful.cpu().long().numpy()
    if points is not None:
        for k, column in enumerate(points.detach().double().cpu().T.numpy()):
            columns[f"x{k}"] = column
    return pd.DataFrame(columns)


def weights_csv(frame) -> str:
    return frame.to_csv(index=False, float_format="%.6g", lineterminator="\n")


class Tracker:
    """Thin layer over the MLflow fluent API, so the rest of the code never imports MLflow."""

    world_size = 1  # the ranks training each run, logged as a param (``reweight.experiment.rank_tracking``)

    def __init__(self, experiment: str) -> None:
        self.mlflow = import_mlflow()
        self.client = connect(need_store=False)
        uri = tracking_uri()
        try:
            with store_setup(uri):  # several runs starting at once must not all create the experiment
                found = self.mlflow.set_experiment(experiment)
                if EXPERIMENT_KIND_TAG not in found.tags:  # a kind chosen in the UI stays
                    self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            self.experiment_id = found.experiment_id
        except ReweightError:
            raise
        except Exception as error:  # noqa: BLE001 - any backend failure is the same problem to a user
            raise ReweightError(f"cannot use the MLflow tracking store {uri}: {error}") from None
        self.children_of: str | None = None  # in a worker process: the parent run, not active here

    @contextmanager
    def run(self, name: str, config: dict[str, Any], tags: dict[str, Any], nested: bool = False,
            params: dict[str, Any] | None = None, run_id: str | None = None) -> Iterator[str]:
        """A run holding the config as an artifact and, flattened, as params (unless given);
        ``run_id`` reopens an earlier run instead, as it was. The run ends FINISHED, KILLED
        (interrupted) or FAILED."""
        parent = self.children_of if nested and run_id is None else None
        run = self.mlflow.start_run(run_id=run_id, run_name=None if run_id else name, nested=nested,
                                    parent_run_id=parent)
        try:
            if run_id is None:
                self.mlflow.set_tags(tags)
                self.mlflow.log_params(flatten(config) if params is None else params)
                self.mlflow.log_param(WORLD_SIZE_PARAM, self.world_size)
                self.mlflow.log_text(yaml.safe_dump(config, sort_keys=False), "config.yaml")
            yield run.info.run_id
        except (Interrupted, KeyboardInterrupt):
            self.mlflow.end_run("KILLED")
            raise
        except BaseException:
            self.mlflow.end_run("FAILED")
            raise
        self.mlflow.end_run("FINISHED")

    def parent(self, name: str, config: dict[str, Any], tags: dict[str, Any] | None = None,
               params: dict[str, Any] | None = None, run_id: str | None = None):
        return self.run(name, config, {"reweight.role": "parent", **(tags or {})}, params=params, run_id=run_id)

    def child(self, name: str, config: dict[str, Any], tags: dict[str, Any], run_id: str | None = None):
        return self.run(name, config, {"reweight.role": "child", **tags}, nested=True, run_id=run_id)

    def tag(self, key: str, value: str) -> None:
        self.mlflow.set_tag(key, value)

    def unfinished_parent(self, fingerprint: str) -> str | None:
        """The newest parent run of the same plan that did not finish (killed, failed, or still
        marked running after a hard kill), if any."""
        runs = store_call(self.client.search_runs, [self.experiment_id],
                          f"tags.`reweight.role` = 'parent' and tags.`{PLAN_TAG}` = '{fingerprint}'",
                          order_by=["attributes.start_time DESC"], max_results=100)
        return next((r.info.run_id for r in runs if r.info.status != "FINISHED"), None)

    def fingerprint(self, run_id: str) -> str | None:
        """The plan fingerprint a parent run was started with."""
        return store_call(self.client.get_run, run_id).data.tags.get(PLAN_TAG)

    def children(self, parent_id: str) -> dict[str, ChildRun]:
        """A parent run's child runs by name. Of runs sharing a name the finished one wins,
        else the newest."""
        runs = store_call(self.client.search_runs, [self.experiment_id],
                          f"tags.mlflow.parentRunId = '{parent_id}'",
                          order_by=["attributes.start_time ASC"], max_results=50_000)
        found: dict[str, ChildRun] = {}
        for r in runs:
            earlier = found.get(r.info.run_name)
            if earlier is None or earlier.status != "FINISHED":
                found[r.info.run_name] = ChildRun(r.info.run_id, r.info.status, r.data.tags.get(CHECKPOINT_TAG),
                                                  r.data.tags.get(DIVERGED_TAG) == "true")
        return found

    def finished(self, run_id: str) -> tuple[dict[str, float], dict[str, list[tuple[int, float]]], Any]:
        """A finished child run's final metrics, metric histories and weights table."""
        import pandas as pd

        metrics = dict(store_call(self.client.get_run, run_id).data.metrics)
        history = {}
        for key in metrics:
            by_step = {m.step: m.value for m in store_call(self.client.get_metric_history, run_id, key)}
            history[key] = sorted(by_step.items())  # a resumed run may have logged a step twice
        try:
            text = self.mlflow.artifacts.load_text(f"runs:/{run_id}/{WEIGHTS_FILE}")
            table = pd.read_csv(io.StringIO(text), dtype={"slot": str})
        except Exception:  # noqa: BLE001 - a run without a weights file still has its metrics
            table = None
        return metrics, history, table

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(metrics, step=step)

    def text(self, text: str, name: str) -> None:
        self.mlflow.log_text(text, name)

    def figure(self, figure, name: str) -> None:
        self.mlflow.log_figure(figure, name)

    def binary(self, data: bytes, name: str) -> None:
        """Log ``data`` as the artifact ``name`` (a file at the run's top level)."""
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / name
            path.write_bytes(data)
            self.mlflow.log_artifact(str(path))

    def artifact_location(self, run_id: str, name: str) -> str:
        """Where a run's artifact is: a file path for a store on this machine, else its URI."""
        uri = store_call(self.client.get_run, run_id).info.artifact_uri.rstrip("/") + "/" + name
        if uri.startswith("file://"):
            from urllib.parse import unquote, urlparse

            return unquote(urlparse(uri).path)
        return uri
