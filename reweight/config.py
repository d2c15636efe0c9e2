"""Experiment configuration: YAML validated by pydantic, each plugin validating its own options.

A component section names the plugin and gives its options beside the name:

    strategy: {name: soseleto, lr: 20}

Any problem is raised as one ``ConfigError`` naming the field path, e.g.
``strategy.lr: Input should be greater than 0``, before any work starts.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from reweight.errors import ConfigError, validation_message
from reweight.plugins import Registry, describe, registry


class Component(BaseModel):
    """``name`` picks a registered plugin (``method`` is accepted too); other keys are its options."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(validation_alias=AliasChoices("name", "method"))

    @property
    def raw_options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ScheduleConfig(BaseModel):
    """How the learning rates of θ, φˢ and φᵗ change over the run (the strategy's own rate, λ_α,
    stays constant)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["constant", "cosine", "step"] = "constant"
    milestones: list[Annotated[int, Field(ge=1)]] = Field(
        default=[], description="step: the steps at which the rates are multiplied by gamma."
    )
    gamma: float = Field(0.1, gt=0, le=1, description="step: the factor applied at each milestone.")
    final: float = Field(0.0, ge=0, le=1, description="cosine: the rates reached at the end, as a fraction of the first.")

    @model_validator(mode="after")
    def _fits_the_kind(self) -> ScheduleConfig:
        if self.kind == "step" and not self.milestones:
            raise ValueError("a step schedule needs milestones, e.g. [10000, 15000]")
        # a field the kind ignores, set to anything but its default, is a mistake, not a no-op
        for field, owner in {"final": "cosine", "gamma": "step", "milestones": "step"}.items():
            if owner != self.kind and getattr(self, field) != type(self).model_fields[field].default:
                raise ValueError(f"{field} is only for kind: {owner}, not kind: {self.kind}")
        if self.milestones != sorted(set(self.milestones)):
            raise ValueError("milestones must increase")
        return self


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(2000, ge=1)
    eval_every: int = Field(100, ge=1)
    source_batch_size: int = Field(32, ge=1)
    target_batch_size: int | None = Field(None, ge=1, description="null: the whole target set every step.")
    lr: float = Field(0.1, gt=0, description="λ_p, learning rate of θ and φˢ.")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    target_lr: float = Field(0.1, gt=0, description="Learning rate of the target head φᵗ.")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto, cpu, cuda, cuda:N.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)

    @field_validator("schedule", mode="before")
    @classmethod
    def _bare_kind(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value  # schedule: cosine

    @field_validator("schedule")
    @classmethod
    def _milestones_within_the_run(cls, schedule: ScheduleConfig, info: ValidationInfo) -> ScheduleConfig:
        steps = info.data.get("steps")
        late = [m for m in schedule.milestones if steps is not None and m >= steps]
        if late:
            raise ValueError(f"milestone {late[0]} is not before the last step (train.steps: {steps})")
        return schedule


class TrackingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    experiment: str | None = Field(None, description="MLflow experiment; defaults to the config's name.")
    plots: bool = Field(True, description="Log comparison plots (PNG) on the parent run.")


class CheckpointConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    every: int | None = Field(500, ge=1, description="Save every this many steps (null: only at the end).")
    dir: str = Field("checkpoints", min_length=1, description="Folder of the checkpoint files, one per child run.")


# the default plugin of each component section that has one
DEFAULT_NAMES = {"model": "mlp", "strategy": "soseleto", "granularity": "per_sample", "hypergrad": "one_step"}


def _component(section: str) -> Any:
    return Field(default_factory=lambda: Component(name=DEFAULT_NAMES[section]))


MAX_SEEDS = 10_000  # a count is expanded into a list, so it must stay small
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # what every random generator accepts, offsets included


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    seeds: list[Seed] = Field(default=[0], min_length=1, description="A list of seeds, or a count n for 0..n-1.")
    data: Component
    model: Component = _component("model")
    strategy: Component = _component("strategy")
    granularity: Component = _component("granularity")
    hypergrad: Component = _component("hypergrad")
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_count(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if not 1 <= value <= MAX_SEEDS:
                raise ValueError(f"a seed count must be between 1 and {MAX_SEEDS}")
            return list(range(value))
        return value

    @field_validator("data", "model", "strategy", "granularity", "hypergrad", mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


# config section -> plugin kind
SECTIONS = {
    "data": "dataset",
    "model": "model",
    "strategy": "strategy",
    "granularity": "granularity",
    "hypergrad": "hypergradient",
}


def path_part(part: Any) -> str:
    """A key as written in a field path; quoted when it would be unreadable or ambiguous there."""
    if isinstance(part, int) or (isinstance(part, str) and part.isprintable() and part.strip() == part and part
                                 and "." not in part):
        return str(part)
    return repr(part)


def _first_error(error: ValidationError, prefix: tuple[Any, ...] = ()) -> str:
    details = error.errors()[0]
    loc = (*prefix, *details["loc"])
    if details["type"] == "nested_options":  # a plugin component inside options (e.g. data.sources.0.data)
        loc = (*loc, *details["ctx"]["loc"])
    path = ".".join(path_part(part) for part in loc) or "(top level)"
    message = validation_message(details)
    more = len(error.errors()) - 1
    return f"{path}: {message}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def validate(raw: Any, plugins: Registry | None = None) -> tuple[ExperimentConfig, dict[str, BaseModel]]:
    """Check a parsed config; return it with each component's validated options model."""
    if not isinstance(raw, dict):
        raise ConfigError(f"the config must be a mapping of fields, got {type(raw).__name__}")
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_first_error(error)) from None
    plugins = plugins or registry()
    options: dict[str, BaseModel] = {}
    for section, kind in SECTIONS.items():
        spec: Component = getattr(config, section)
        try:
            component = plugins.get(kind, spec.name)
        except KeyError as error:
            raise ConfigError(f"{section}.name: {error.args[0]}") from None
        try:
            options[section] = component.options.model_validate(spec.raw_options)
        except ValidationError as error:
            raise ConfigError(_first_error(error, (section,))) from None
        except Exception as error:  # noqa: BLE001 - a plugin's validator raised something pydantic does not wrap
            raise ConfigError(f"{section}: the options of {kind} {spec.name!r} (plugin {component.plugin!r}) "
                              f"could not be checked ({describe(error)})") from None
    return config, options


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.steps=100`` -> (["train", "steps"], 100); the value is read as YAML (a value that
    is not YAML, or that YAML cannot construct such as a date of 30 February, stays text)."""
    key, sep, value = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(part.strip() for part in path):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with KEY a dotted field path, e.g. train.steps=100")
    try:
        parsed = yaml.safe_load(value)
    except Exception:  # noqa: BLE001 - YAMLError, or ValueError/OverflowError from a constructor
        parsed = value
    return [part.strip() for part in path], parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``KEY=VALUE`` in a copy of ``raw``. Switching a component to another plugin
    (``--set strategy.name=uniform``) drops the options that belonged to the old one."""
    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        set_value(raw, path, value)
    return raw


def set_value(raw: dict[str, Any], path: list[str], value: Any) -> None:
    """Set the field at ``path`` (e.g. ``["train", "steps"]``) in ``raw``, in place.

    A component section follows its plugin: a new ``name`` (or a bare name given for the whole
    section, ``strategy=uniform``) replaces the section, dropping the old plugin's options;
    the same name keeps them."""
    for section in SECTIONS:  # one spelling of the plugin name, so overrides find it
        if isinstance(raw.get(section), dict) and "method" in raw[section] and "name" not in raw[section]:
            raw[section]["name"] = raw[section].pop("method")
    path = list(path)
    if path[0] in SECTIONS:
        if len(path) == 1 and isinstance(value, str):
            path = [path[0], "name"]
        if len(path) == 2 and path[1] == "method":
            path[1] = "name"
        current = raw.get(path[0], DEFAULT_NAMES.get(path[0]))
        current_name = current.get("name") if isinstance(current, dict) else current
        if path[1:] == ["name"] and current_name != value:
            raw[path[0]] = {"name": value}
            return
        if len(path) > 1 and current_name is not None and not isinstance(current, dict):
            raw[path[0]] = {"name": current_name}
    node = raw
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    node[path[-1]] = value


def load_raw(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {error.start}: {error.reason})") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config ({error.strerror or error})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or "malformed YAML"
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    except Exception as error:  # noqa: BLE001 - YAML's constructors raise plain errors: a date of 30 February, ...
        raise ConfigError(f"{path}: malformed YAML: a value YAML cannot read ({describe(error)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping of fields")
    return raw


def load(path: str | Path, overrides: list[str] = ()) -> tuple[ExperimentConfig, dict[str, BaseModel]]:
    return validate(apply_overrides(load_raw(path), list(overrides)))


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}, for MLflow params."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, child in value.items():
            flat.update(flatten(child, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def resolved(config: ExperimentConfig, options: dict[str, BaseModel]) -> dict[str, Any]:
    """The config with every default filled in, as plain data (logged as an artifact)."""
    data = config.model_dump(mode="json", exclude={*SECTIONS})
    for section in SECTIONS:
        data[section] = {"name": getattr(config, section).name, **options[section].model_dump(mode="json")}
    return data
