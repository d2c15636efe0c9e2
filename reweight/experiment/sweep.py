"""Sweeps: one config, run once per combination of listed values (a grid) and per seed.

A config's top-level ``sweep`` maps dotted field paths to lists of values:

    sweep:
      strategy.name: [soseleto, uniform]
      data.noise_rate: [0.2, 0.4]

is a grid of 2 × 2 combinations, each run for every seed in ``seeds``. A path may name a whole
component section, whose values are then plugin names or sections with options
(``strategy: [{name: soseleto, lr: 20}, {name: soseleto, lr: 50}, uniform]``), for options
that belong to one plugin only. Values are set the way ``--set`` sets them: switching a
component's ``name`` drops the options written for the old plugin. Shallower paths are set
first, so ``strategy.name`` picks the plugin before ``strategy.lr`` sets its option.

``--set`` overrides apply to the config before the grid; ``--set`` of a swept path fixes it
(the path leaves the sweep), ``--set sweep.PATH=[...]`` sets or replaces one swept path and
``--set sweep=null`` removes the sweep. Every combination is validated before any run starts.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel

from reweight.core.errors import ConfigError
from reweight.experiment.config import (
    AugmentConfig,
    ExperimentConfig,
    OptimizerConfig,
    ScheduleConfig,
    SelectionConfig,
    StreamConfig,
    name_key,
    resolved,
    validate,
)
from reweight.experiment.config_file import parse_override, set_value

MAX_COMBINATIONS = 10_000
# fields added after plans were first fingerprinted, by path: left out of a fingerprint at these
# defaults, so that plans from before them still resume
DEFAULTS_LEFT_OUT = {
    ("train", "schedule"): ScheduleConfig().model_dump(mode="json"),
    ("train", "optimizer"): OptimizerConfig().model_dump(mode="json"),
    ("train", "target_optimizer"): OptimizerConfig().model_dump(mode="json"),
    ("loss",): {"name": "cross_entropy", "label_smoothing": 0.0},
    ("selection",): SelectionConfig().model_dump(mode="json"),
    ("stream",): StreamConfig().model_dump(mode="json"),
    ("augment",): AugmentConfig().model_dump(mode="json"),
}
NOT_SWEPT = {"name": "it names the whole experiment", "seeds": "list them in `seeds`",
             "sweep": "a sweep cannot sweep itself", "tracking": "all combinations log to one experiment",
             "checkpoint": "all combinations save alike", "distributed": "all combinations run on the same ranks"}


@dataclass(frozen=True)
class Combination:
    """One point of the grid: the swept values and the validated config they give."""

    values: dict[str, Any]
    config: ExperimentConfig
    options: dict[str, BaseModel]

    @property
    def labels(self) -> dict[str, str]:
        """Each swept path's value as short text (tag values, table cells)."""
        return {path: label(value) for path, value in self.values.items()}

    @property
    def name(self) -> str:
        """``strategy.name=uniform data.noise_rate=0.4``; the strategy's name without a sweep."""
        if not self.values:
            return self.config.strategy.name
        return " ".join(f"{path}={text}" for path, text in self.labels.items())


@dataclass(frozen=True)
class Plan:
    """Everything ``reweight run`` will do: combinations × seeds, validated."""

    raw: dict[str, Any]  # the config as given (after --set), sweep included: re-runnable
    grid: dict[str, list[Any]]
    combinations: list[Combination] = field(default_factory=list)

    @property
    def first(self) -> ExperimentConfig:
        return self.combinations[0].config

    @property
    def name(self) -> str:
        return self.first.name

    @property
    def experiment(self) -> str:
        return self.first.tracking.experiment or self.first.name

    @property
    def fingerprint(self) -> str:
        """Identifies what the plan computes (every combination's resolved config and the
        seeds, not where it logs or saves, nor how its ranks talk), so that ``--resume`` finds the same plan's runs."""
        configs = [{key: value for key, value in resolved(c.config, c.options).items()
                    if key not in ("tracking", "checkpoint", "distributed")} for c in self.combinations]
        for config in configs:
            for (*parents, key), default in DEFAULTS_LEFT_OUT.items():
                node = config
                for parent in parents:
                    node = node[parent]
                if node.get(key) == default:
                    del node[key]
        return hashlib.sha256(json.dumps(configs, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def seeds(self) -> list[int]:
        return self.first.seeds

    @property
    def paths(self) -> list[str]:
        return list(self.grid)

    @property
    def runs(self) -> int:
        return len(self.combinations) * len(self.seeds)


def label(value: Any) -> str:
    """Short text for a swept value: ``0.2``, ``uniform``, ``soseleto(lr=20)``, ``[32, 32]``."""
    if isinstance(value, dict) and "name" in value:
        options = ", ".join(f"{key}={label(option)}" for key, option in value.items() if key != "name")
        return f"{value['name']}({options})" if options else str(value["name"])
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        try:  # YAML may hold dates, bytes, keys JSON cannot have, even a list inside itself
            return json.dumps(value, separators=(", ", ": "), default=str)
        except (TypeError, ValueError):
            return str(value)
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def _path(key: Any) -> str:
    if not isinstance(key, str) or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"sweep: {key!r} is not a field path (write e.g. data.noise_rate)")
    key = key.strip()
    head, _, rest = key.partition(".")
    if head in NOT_SWEPT:
        raise ConfigError(f"sweep.{key}: {head} cannot be swept ({NOT_SWEPT[head]})")
    return f"{head}.{name_key(rest)}" if rest else key


def _values(path: str, values: Any) -> list[Any]:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"sweep.{path}: expected a non-empty list of values, got {values!r}")
    seen: list[Any] = []
    for value in values:
        if value in seen:
            raise ConfigError(f"sweep.{path}: value {label(value)} is listed twice")
        seen.append(value)
    return values


def parse_grid(section: Any) -> dict[str, list[Any]]:
    """The ``sweep`` mapping, checked: field paths to non-empty lists of distinct values."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError("sweep: expected a mapping of field paths to lists of values, "
                          "e.g. {strategy.name: [soseleto, uniform]}")
    grid: dict[str, list[Any]] = {}
    for key, values in section.items():
        path = _path(key)
        if path in grid:
            raise ConfigError(f"sweep.{path}: swept twice")
        grid[path] = _values(path, values)
    return grid


def _covers(fixed: str, swept: str) -> bool:
    """Whether ``--set fixed=...`` decides the swept path (the same field or a section above it)."""
    return swept == fixed or swept.startswith(fixed + ".")


def expand(raw: dict[str, Any], overrides: list[str] = ()) -> Plan:
    """Apply ``--set`` overrides, expand the sweep and validate every combination."""
    if not isinstance(raw, dict):
        raise ConfigError(f"the config must be a mapping of fields, got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    grid = parse_grid(raw.pop("sweep", None))
    for text in overrides:
        path, value = parse_override(text)
        if path[0] == "sweep":
            if len(path) == 1:
                grid = parse_grid(value)
            elif value is None:
                grid.pop(_path(".".join(path[1:])), None)
            else:
                key = _path(".".join(path[1:]))
                grid[key] = _values(key, value)
            continue
        set_value(raw, path, value)
        fixed = ".".join(path)
        grid = {swept: values for swept, values in grid.items() if not _covers(fixed, swept)}
    total = 1
    for values in grid.values():
        total *= len(values)
    if total > MAX_COMBINATIONS:
        raise ConfigError(f"sweep: {total} combinations; at most {MAX_COMBINATIONS}")
    given = {**raw, "sweep": grid} if grid else raw
    by_depth = sorted(grid, key=lambda path: path.count("."))  # sections, then names, then options
    combinations = []
    for point in itertools.product(*grid.values()):
        values = dict(zip(grid, point))
        combined = copy.deepcopy(raw)
        for path in by_depth:
            set_value(combined, path.split("."), copy.deepcopy(values[path]))
        try:
            config, options = validate(combined)
        except ConfigError as error:
            if not values:
                raise
            where = ", ".join(f"{path}={label(value)}" for path, value in values.items())
            raise ConfigError(f"sweep combination {where}: {error}") from None
        combinations.append(Combination(values, config, options))
    return Plan(given, grid, combinations)
