"""``reweight.run``: an experiment from Python objects, through the same validation, MLflow
tracking, checkpoints, resume and sweeps as ``reweight run``.

A config is a dict, a YAML path or an ``ExperimentConfig``. The data (a ``BilevelData``, whose
splits may be streamed ``Dataset`` objects: ``reweight.from_datasets``) and
the model (any ``nn.Module``, or a ``BilevelNet``) may be objects instead of registered names:
they are registered for this process under the names ``python_data`` and ``python_model``, so
a config and its MLflow params still say what ran.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from torch import nn

from reweight.components.models.wrap import TargetHead, WrappedNet, bilevel, check_features
from reweight.core.data import BilevelData
from reweight.core.errors import ConfigError
from reweight.core.models import BilevelNet
from reweight.core.plugins import register
from reweight.experiment import augmentation, runner, sweep
from reweight.experiment.child_run import SeedResult
from reweight.experiment.config import ExperimentConfig
from reweight.experiment.config_file import load_raw

PYTHON_DATA, PYTHON_MODEL = "python_data", "python_model"


@dataclass
class RunResult:
    """One trained child run (one seed of one combination)."""

    seed: int
    run_id: str
    metrics: dict[str, float]  # the last evaluation's
    history: dict[str, list[tuple[int, float]]]  # metric -> [(step, value), ...]
    weights: torch.Tensor | None  # the final weight of every source example, by index
    model: nn.Module | None  # the trained model: your module (head in place) or the BilevelNet
    combination: str = ""  # the sweep combination, "" without a sweep
    best_model: nn.Module | None = None  # with model selection: a copy at the best val_accuracy


@dataclass
class Result:
    """What ``reweight.run`` returns: the parent run's id and one ``RunResult`` per child. With
    a single child, ``model``, ``weights``, ``metrics`` and ``history`` are that child's."""

    parent_id: str
    runs: list[RunResult] = field(default_factory=list)

    def _only(self) -> RunResult:
        if len(self.runs) != 1:
            raise ValueError(f"this experiment has {len(self.runs)} runs; pick one from result.runs")
        return self.runs[0]

    @property
    def model(self) -> nn.Module | None:
        return self._only().model

    @property
    def best_model(self) -> nn.Module | None:
        return self._only().best_model

    @property
    def weights(self) -> torch.Tensor | None:
        return self._only().weights

    @property
    def metrics(self) -> dict[str, float]:
        return self._only().metrics

    @property
    def history(self) -> dict[str, list[tuple[int, float]]]:
        return self._only().history

    @property
    def run_ids(self) -> list[str]:
        return [run.run_id for run in self.runs]


class PythonModelOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    head: str | None = Field(None, description="The classifier submodule; default: the last nn.Linear.")
    target: TargetHead = Field("shared", description="shared: one classifier; separate: a new target head.")


def raw_config(config: dict | str | Path | ExperimentConfig) -> dict[str, Any]:
    if isinstance(config, ExperimentConfig):
        return config.model_dump(mode="json")
    if isinstance(config, (str, Path)):
        return load_raw(config)
    if isinstance(config, dict):
        return copy.deepcopy(config)
    raise ConfigError(f"the config must be a dict, a YAML path or an ExperimentConfig, got {type(config).__name__}")


def model_factory(model: nn.Module, wrapped: list[WrappedNet]):
    """Builds the bilevel network for each seed: the first seed trains your module itself, the
    others copies of its initial state. Every module split is listed in ``wrapped``, so that
    its head goes back in place even when the run fails."""
    initial = copy.deepcopy(model)
    handed = []

    def build(options: PythonModelOptions, data: BilevelData) -> BilevelNet:
        module = model if not handed else copy.deepcopy(initial)
        handed.append(module)
        if isinstance(module, BilevelNet):
            net = module
        else:
            net = bilevel(module, options.head, options.target, data.target_classes)
            wrapped.append(net)
        check_features(net.to(data.source.y.device), data.source.sample_inputs()[:2].to(data.source.y.device))
        return net

    return build


def run(config: dict | str | Path | ExperimentConfig, *, data: BilevelData | None = None,
        model: nn.Module | None = None, transforms: Sequence[Callable] = (), overrides: Sequence[str] = (),
        resume: bool | str = False, console: Console | None = None) -> Result:
    """Run an experiment; see the "Using reweight from Python" page of the docs.

    ``data`` and ``model`` stand for the config's ``data`` and ``model`` sections (which may then
    be left out; a ``model`` section may still give ``head`` and ``target``). ``transforms``:
    augmentations of your own, callables ``(x, keys) -> x``, applied after the config's
    ``augment`` crop and flip. ``overrides`` are ``--set`` strings. ``resume``: as
    ``reweight run --resume`` (True) or a parent run id.
    """
    raw = raw_config(config)
    if transforms:
        section = raw.get("augment") if isinstance(raw.get("augment"), dict) else {}
        raw["augment"] = {**section, "transforms": [*section.get("transforms", []),
                                                    *(augmentation.name_of(t) for t in transforms)]}
    wrapped: list[WrappedNet] = []
    if data is not None:
        if not isinstance(data, BilevelData):
            raise ConfigError(f"data must be a BilevelData (e.g. BilevelData.from_tensors(...)), got "
                              f"{type(data).__name__}")
        register("dataset", PYTHON_DATA, lambda options, seed: data)
        raw["data"] = {"name": PYTHON_DATA}
    if model is not None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        section = raw.get("model") if isinstance(raw.get("model"), dict) else {}
        register("model", PYTHON_MODEL, model_factory(model, wrapped), options=PythonModelOptions)
        # every option but the plugin name goes to PythonModelOptions, which refuses unknown ones
        raw["model"] = {**{k: v for k, v in section.items() if k not in ("name", "method")}, "name": PYTHON_MODEL}
    try:
        plan = sweep.expand(raw, list(overrides))
        results = runner.run(plan, console or Console(), resume=resume, keep_engines=True)
        return Result(results[0].parent_id if results else "", [run_result(result) for result in results])
    finally:
        for net in wrapped:  # the user's modules as they gave them (trained), even after an error
            net.unwrap()


def run_result(result: SeedResult) -> RunResult:
    engine = result.engine
    net = engine.model if engine else None
    if engine is not None:
        weights = engine.source_weights()
    elif result.table is not None:
        weights = torch.tensor(result.table["weight"].to_numpy(), dtype=torch.float32)
    else:
        weights = None
    best = None
    if engine is not None and engine.best is not None and engine.best.model is not None:
        best = engine.best.best_model(net)  # a copy, taken before the trained module gets its head back
        best = best.unwrap() if isinstance(best, WrappedNet) else best
    model = net.module if isinstance(net, WrappedNet) else net  # its head goes back in place at the end of run()
    name = result.combination.name if result.combination and result.combination.labels else ""
    return RunResult(result.seed, result.run_id, result.metrics, result.history, weights, model, name, best)
