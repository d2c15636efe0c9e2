"""MLflow tracking: one parent run per ``reweight run``, one child run per combination and seed.

Params are the resolved config, flattened; the resolved config itself and the final weights
are artifacts; metrics are logged by step. A sweep's parent run holds the config as given
(with its ``sweep``), the params every combination shares, and the comparison plots. Without
``MLFLOW_TRACKING_URI`` the store is MLflow's embedded SQLite file ``mlflow.db`` in the
working directory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml

from reweight.config import flatten
from reweight.errors import ReweightError


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


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


def weights_frame(
    weights: torch.Tensor,
    corrupted: torch.Tensor | None = None,
    slots: list[str] | None = None,
    harmful: torch.Tensor | None = None,
):
    """One row per source example: ``index, weight`` and, when known, ``corrupted`` (0/1: the
    label was corrupted), ``slot`` (the weight slot: group or task name) and ``harmful`` (0/1:
    the example belongs to a source the benchmark made harmful). A pandas DataFrame."""
    import pandas as pd

    columns: dict[str, Any] = {"index": range(len(weights)), "weight": weights.detach().double().cpu().numpy()}
    if corrupted is not None:
        columns["corrupted"] = corrupted.cpu().long().numpy()
    if slots is not None:
        columns["slot"] = slots
    if harmful is not None:
        columns["harmful"] = harmful.cpu().long().numpy()
    return pd.DataFrame(columns)


def weights_csv(frame) -> str:
    return frame.to_csv(index=False, float_format="%.6g", lineterminator="\n")


class Tracker:
    """Thin layer over the MLflow fluent API, so the rest of the code never imports MLflow."""

    def __init__(self, experiment: str) -> None:
        import mlflow

        for noisy in ("mlflow", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self.mlflow = mlflow
        uri = tracking_uri()
        check_reachable(uri)
        mlflow.set_tracking_uri(uri)
        try:
            mlflow.set_experiment(experiment)
        except Exception as error:  # noqa: BLE001 - any backend failure is the same problem to a user
            raise ReweightError(f"cannot use the MLflow tracking store {uri}: {error}") from None

    @contextmanager
    def run(self, name: str, config: dict[str, Any], tags: dict[str, Any], nested: bool = False,
            params: dict[str, Any] | None = None) -> Iterator[str]:
        """A run holding the config as an artifact and, flattened, as params (unless given)."""
        with self.mlflow.start_run(run_name=name, nested=nested) as run:
            self.mlflow.set_tags(tags)
            self.mlflow.log_params(flatten(config) if params is None else params)
            self.mlflow.log_text(yaml.safe_dump(config, sort_keys=False), "config.yaml")
            yield run.info.run_id

    def parent(self, name: str, config: dict[str, Any], tags: dict[str, Any] | None = None,
               params: dict[str, Any] | None = None):
        return self.run(name, config, {"reweight.role": "parent", **(tags or {})}, params=params)

    def child(self, name: str, config: dict[str, Any], tags: dict[str, Any]):
        return self.run(name, config, {"reweight.role": "child", **tags}, nested=True)

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(metrics, step=step)

    def text(self, text: str, name: str) -> None:
        self.mlflow.log_text(text, name)

    def figure(self, figure, name: str) -> None:
        self.mlflow.log_figure(figure, name)
