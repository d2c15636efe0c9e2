"""MLflow tracking: one parent run per ``reweight run``, one child run per seed.

Params are the resolved config, flattened; the resolved config itself and the final weights
are artifacts; metrics are logged by step. Without ``MLFLOW_TRACKING_URI`` the store is
MLflow's embedded SQLite file ``mlflow.db`` in the working directory.
"""

from __future__ import annotations

import io
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


def weights_csv(weights: torch.Tensor, corrupted: torch.Tensor | None) -> str:
    """index,weight[,corrupted] — one row per source example."""
    out = io.StringIO()
    out.write("index,weight" + (",corrupted" if corrupted is not None else "") + "\n")
    for i, w in enumerate(weights.tolist()):
        out.write(f"{i},{w:.6g}" + (f",{int(corrupted[i])}" if corrupted is not None else "") + "\n")
    return out.getvalue()


class Tracker:
    """Thin layer over the MLflow fluent API, so the rest of the code never imports MLflow."""

    def __init__(self, experiment: str) -> None:
        import mlflow

        for noisy in ("mlflow", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self.mlflow = mlflow
        uri = tracking_uri()
        mlflow.set_tracking_uri(uri)
        try:
            mlflow.set_experiment(experiment)
        except Exception as error:  # noqa: BLE001 - any backend failure is the same problem to a user
            raise ReweightError(f"cannot use the MLflow tracking store {uri}: {error}") from None

    @contextmanager
    def run(self, name: str, config: dict[str, Any], tags: dict[str, Any], nested: bool = False) -> Iterator[str]:
        """A run holding the flattened config as params and the resolved config as an artifact."""
        with self.mlflow.start_run(run_name=name, nested=nested) as run:
            self.mlflow.set_tags(tags)
            self.mlflow.log_params(flatten(config))
            self.mlflow.log_text(yaml.safe_dump(config, sort_keys=False), "config.yaml")
            yield run.info.run_id

    def parent(self, name: str, config: dict[str, Any]):
        return self.run(name, config, {"reweight.role": "parent"})

    def child(self, name: str, config: dict[str, Any], tags: dict[str, Any]):
        return self.run(name, config, {"reweight.role": "child", **tags}, nested=True)

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(metrics, step=step)

    def text(self, text: str, name: str) -> None:
        self.mlflow.log_text(text, name)
