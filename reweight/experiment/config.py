"""Experiment configuration: YAML validated by pydantic, each plugin validating its own options.

A component section names the plugin and gives its options beside the name:

    strategy: {name: soseleto, lr: 20}

Any problem is raised as one ``ConfigError`` naming the field path, e.g.
``strategy.lr: Input should be greater than 0``, before any work starts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from reweight.core.engine import TrainSettings
from reweight.core.errors import ConfigError, validation_message
from reweight.core.optimizers import OptimizerSettings
from reweight.core.plugins import ByName, Registry, describe, registry, validate_options
from reweight.experiment.pipeline import total_steps


def name_key(key: str) -> str:
    """The one spelling of a component's plugin name: ``method`` (accepted for it) is ``name``."""
    return "name" if key == "method" else key


def with_name_key(section: Any) -> Any:
    """A component section with its plugin name under ``name``, however it was spelt."""
    if isinstance(section, dict) and "name" not in section and any(name_key(key) == "name" for key in section):
        return {name_key(key): value for key, value in section.items()}
    return section


class Component(BaseModel):
    """``name`` picks a registered plugin (``method`` is accepted too); other keys are its options."""

    model_config = ConfigDict(extra="allow")
    name: str

    @model_validator(mode="before")
    @classmethod
    def _one_name_key(cls, value: Any) -> Any:
        return with_name_key(value)

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


ENGINE = TrainSettings()  # the engine's defaults, so that a config and a Python caller agree
OPTIMIZER = OptimizerSettings()
Beta = Annotated[float, Field(ge=0, lt=1)]


class OptimizerConfig(BaseModel):
    """One model optimizer: SGD, Adam or AdamW. Its learning rate is ``train.lr`` (or
    ``train.target_lr``), so that a schedule applies to every kind alike."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["sgd", "adam", "adamw"] = OPTIMIZER.name
    momentum: float | None = Field(OPTIMIZER.momentum, ge=0, lt=1,
                                   description="sgd: the momentum; null: train.momentum.")
    weight_decay: float | None = Field(
        OPTIMIZER.weight_decay, ge=0,
        description="null: train.weight_decay (the target head's: 0). SGD and Adam add it to the gradient "
                    "(L2), AdamW decays the weights directly.")
    betas: tuple[Beta, Beta] = Field(OPTIMIZER.betas, description="adam, adamw: the moments' decay rates.")
    eps: float = Field(OPTIMIZER.eps, gt=0, description="adam, adamw: added to the root of the second moment.")

    @model_validator(mode="after")
    def _fits_the_optimizer(self) -> OptimizerConfig:
        # a field the optimizer ignores, set to anything but its default, is a mistake, not a no-op
        owners = {"momentum": ("sgd",), "betas": ("adam", "adamw"), "eps": ("adam", "adamw")}
        for field, kinds in owners.items():
            if self.name not in kinds and getattr(self, field) != type(self).model_fields[field].default:
                raise ValueError(f"{field} is only for name: {' or '.join(kinds)}, not name: {self.name}")
        return self

    def settings(self) -> OptimizerSettings:
        return OptimizerSettings(**self.model_dump())


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(2000, ge=1)
    eval_every: int = Field(100, ge=1)
    source_batch_size: int = Field(ENGINE.source_batch_size, ge=1)
    target_batch_size: int | None = Field(ENGINE.target_batch_size, ge=1, description="null: the whole target set every step.")
    lr: float = Field(ENGINE.lr, gt=0, description="λ_p, learning rate of θ and φˢ.")
    momentum: float = Field(ENGINE.momentum, ge=0, lt=1, description="SGD momentum of both optimizers.")
    weight_decay: float = Field(ENGINE.weight_decay, ge=0, description="Weight decay of the inner optimizer.")
    target_lr: float = Field(ENGINE.target_lr, gt=0, description="Learning rate of the target head φᵗ.")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto, cpu, cuda, cuda:N.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="The optimizer of θ and φˢ.")
    target_optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig,
                                              description="The optimizer of the target head φᵗ.")

    @field_validator("schedule", mode="before")
    @classmethod
    def _bare_kind(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value  # schedule: cosine

    @field_validator("optimizer", "target_optimizer", mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value  # optimizer: adam

    @model_validator(mode="after")
    def _given_once(self) -> TrainConfig:
        """``momentum`` and ``weight_decay`` may be set for all (train.momentum) or per optimizer,
        not both; train.momentum is SGD's, so it needs an SGD optimizer to apply to."""
        fields = type(self).model_fields
        optimizers = {"optimizer": self.optimizer, "target_optimizer": self.target_optimizer}
        if self.momentum != fields["momentum"].default:
            if all(o.name != "sgd" for o in optimizers.values()):
                raise ValueError("momentum is SGD's, and neither optimizer nor target_optimizer is sgd")
            for role, optimizer in optimizers.items():
                if optimizer.momentum is not None:
                    raise ValueError(f"momentum is set twice (and as {role}.momentum); keep one")
        if self.weight_decay != fields["weight_decay"].default and self.optimizer.weight_decay is not None:
            raise ValueError("weight_decay is set twice (and as optimizer.weight_decay); keep one")
        return self



class TrackingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    experiment: str | None = Field(None, description="MLflow experiment; defaults to the config's name.")
    plots: bool = Field(True, description="Log comparison plots (PNG) on the parent run, and each child run's "
                                          "pictures of its weights.")
    baseline: str | None = Field(None, min_length=1, description="Also train this strategy (e.g. uniform) on each "
                                 "seed and print the run's results against it (reweight.experiment.baseline).")


class CheckpointConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    every: int | None = Field(500, ge=1, description="Save every this many steps (null: only at the end).")
    dir: str = Field("checkpoints", min_length=1, description="Folder of the checkpoint files, one per child run.")


class DistributedConfig(BaseModel):
    """How the ranks of a data-parallel run (``torchrun``, ``reweight run --nproc N``) talk; a run
    in one process ignores it."""

    model_config = ConfigDict(extra="forbid")
    backend: Literal["auto", "nccl", "gloo"] = Field("auto", description="auto: nccl on CUDA devices, gloo on the CPU.")


class SelectionConfig(BaseModel):
    """Model selection on a validation part of the target set: held out of the target loss
    (so of the weights too), evaluated with the test set, never chosen by the test set."""

    model_config = ConfigDict(extra="forbid")
    fraction: float | None = Field(None, gt=0, lt=1, description="Hold out this fraction of each target class.")
    per_class: int | None = Field(None, ge=1, description="Hold out this many target examples of each class.")
    patience: int | None = Field(None, ge=1, description="Stop after this many evaluations without a better "
                                 "val_accuracy (null: train to the last step).")

    @model_validator(mode="after")
    def _one_size(self) -> SelectionConfig:
        if self.fraction is not None and self.per_class is not None:
            raise ValueError("give fraction or per_class, not both")
        if self.patience is not None and not self.enabled:
            raise ValueError("patience needs a validation part: set fraction or per_class")
        return self

    @property
    def enabled(self) -> bool:
        return self.fraction is not None or self.per_class is not None


class StreamConfig(BaseModel):
    """Which splits are read through a ``torch.utils.data.DataLoader`` instead of held whole on
    the device, and how (a data set whose splits are Datasets is always streamed)."""

    model_config = ConfigDict(extra="forbid")
    splits: list[Literal["source", "target", "test"]] = Field(
        default=[], description="Splits streamed (validation goes with target); [] keeps in-memory sets in memory.")
    workers: int = Field(2, ge=0, description="DataLoader worker processes (0: read in the training process).")
    pin_memory: bool = Field(True, description="Pin host memory for faster copies to a CUDA device.")
    prefetch: int = Field(2, ge=1, description="Batches each worker prepares ahead.")
    eval_batch_size: int = Field(1024, ge=1, description="Batch size of evaluation passes over streamed splits.")


class AugmentConfig(BaseModel):
    """Random crops and flips (the CIFAR recipe) and transforms of one's own, applied to the
    source batches (and the target's): on the device in memory, in the workers when streamed."""

    model_config = ConfigDict(extra="forbid")
    crop_padding: int = Field(0, ge=0, description="Pad by this many zero pixels, crop back at a random offset (0: none).")
    flip: bool = Field(False, description="Mirror images left-right with probability 1/2.")
    transforms: list[Annotated[str, Field(pattern=r"^[\w.]+:[\w.<>]+$")]] = Field(
        default=[], description="Your own transforms, 'package.module:function', each (x, keys) -> x, after crop and flip.")
    target: bool = Field(False, description="Augment the target batches too.")


class PhaseConfig(BaseModel):
    """One phase after the bilevel phase (``reweight.experiment.pipeline``): ``fine_tune`` trains
    on the target set alone; ``filter_retrain`` drops the lowest-weighted source examples and
    trains on the rest (weight 1) and the target set."""

    model_config = ConfigDict(extra="forbid")
    phase: Literal["fine_tune", "filter_retrain"]
    steps: int = Field(ge=1, description="Steps of this phase, after the ones before it.")
    drop_fraction: float | None = Field(None, gt=0, lt=1,
                                        description="filter_retrain: drop this fraction of the lowest learned weights.")
    drop_below: float | None = Field(None, description="filter_retrain: drop every example whose learned weight is below this.")
    per_class: bool = Field(False, description="filter_retrain: drop drop_fraction within each source class (by its "
                            "observed label), keeping the classes' proportions.")
    restart: bool = Field(True, description="filter_retrain: train a freshly initialised model (false: go on from the current one).")
    target_weight: float = Field(1.0, ge=0, description="filter_retrain: c, how strongly the target loss also trains θ.")

    @model_validator(mode="after")
    def _fits_the_phase(self) -> PhaseConfig:
        filtering = self.phase == "filter_retrain"
        if filtering and (self.drop_fraction is None) == (self.drop_below is None):
            raise ValueError("filter_retrain needs one of drop_fraction and drop_below")
        fields = type(self).model_fields
        for name in ("drop_fraction", "drop_below", "per_class", "restart", "target_weight"):
            if not filtering and getattr(self, name) != fields[name].default:
                raise ValueError(f"{name} is only for phase: filter_retrain, not phase: {self.phase}")
        if self.per_class and self.drop_fraction is None:
            raise ValueError("per_class goes with drop_fraction (drop_below is one threshold for every class)")
        return self


# the default plugin of each component section that has one
DEFAULT_NAMES = {"model": "mlp", "strategy": "soseleto", "granularity": "per_sample", "hypergrad": "one_step",
                 "loss": "cross_entropy"}


def _component(section: str) -> Any:
    return Field(default_factory=lambda: Component(name=DEFAULT_NAMES[section]))


MAX_SEEDS = 10_000  # a count is expanded into a list, so it must stay small
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # what every random generator accepts, offsets included


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    seeds: list[Seed] = Field(default=[0], min_length=1, description="A list of seeds, or a count n for 0..n-1.")
    data: Annotated[Component, ByName]
    model: Annotated[Component, ByName] = _component("model")
    strategy: Annotated[Component, ByName] = _component("strategy")
    granularity: Annotated[Component, ByName] = _component("granularity")
    hypergrad: Annotated[Component, ByName] = _component("hypergrad")
    loss: Annotated[Component, ByName] = _component("loss")
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    stream: StreamConfig = Field(default_factory=StreamConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    pipeline: list[PhaseConfig] = Field(default=[], description="Phases after the bilevel phase: fine_tune, filter_retrain.")
    unlabeled: Annotated[Component, ByName] | None = Field(
        None, description="A term on unlabeled target examples added to the target loss: entropy, pseudo_label.")

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_count(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if not 1 <= value <= MAX_SEEDS:
                raise ValueError(f"a seed count must be between 1 and {MAX_SEEDS}")
            return list(range(value))
        return value

    @model_validator(mode="after")
    def _pipeline_without_patience(self) -> ExperimentConfig:
        if self.pipeline and self.selection.patience is not None:
            raise ValueError("selection.patience would stop a pipeline before its later phases; leave it out "
                             "(model selection still reports the best step of the whole run)")
        return self



# config section -> plugin kind
SECTIONS = {
    "data": "dataset",
    "model": "model",
    "strategy": "strategy",
    "granularity": "granularity",
    "hypergrad": "hypergradient",
    "loss": "loss",
}


# every section that names a component, the ones a config may leave out too
COMPONENT_SECTIONS = {**SECTIONS, "unlabeled": "unlabeled"}


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
    check_milestones(config)
    plugins = plugins or registry()
    options: dict[str, BaseModel] = {}
    for section, kind in SECTIONS.items():
        options[section] = component_options(plugins, section, kind, getattr(config, section))
    if config.unlabeled is not None:
        options["unlabeled"] = component_options(plugins, "unlabeled", "unlabeled", config.unlabeled)
    if config.tracking.baseline is not None:
        try:
            plugins.get("strategy", config.tracking.baseline)
        except KeyError as error:
            raise ConfigError(f"tracking.baseline: {error.args[0]}") from None
    return config, options


def check_milestones(config: ExperimentConfig) -> None:
    """A step schedule's milestones lie before the run's last step: ``train.steps``, plus the
    steps of a pipeline's phases, which the schedule spans too."""
    last = total_steps(config)
    extra = last - config.train.steps
    late = [m for m in config.train.schedule.milestones if m >= last]
    if late:
        run = f"train.steps: {config.train.steps}" + (f", and the pipeline's {extra}: {last}" if extra else "")
        raise ConfigError(f"train.schedule: milestone {late[0]} is not before the last step ({run})")


def component_options(plugins: Registry, section: str, kind: str, spec: Component) -> BaseModel:
    """The validated options of the component ``spec`` of a config section."""
    try:
        component = plugins.get(kind, spec.name)
    except KeyError as error:
        raise ConfigError(f"{section}.name: {error.args[0]}") from None
    try:
        return validate_options(component.options, spec.raw_options)
    except ValidationError as error:
        raise ConfigError(_first_error(error, (section,))) from None
    except Exception as error:  # noqa: BLE001 - a plugin's validator raised something pydantic does not wrap
        raise ConfigError(f"{section}: the options of {kind} {spec.name!r} (plugin {component.plugin!r}) "
                          f"could not be checked ({describe(error)})") from None


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
    # the sections a config may leave out appear only when given, so that other runs log what they always did
    absent = {name for name in ("unlabeled", "pipeline") if not getattr(config, name)}
    data = config.model_dump(mode="json", exclude={*SECTIONS, *absent, "unlabeled"})
    for section in [*SECTIONS, *(["unlabeled"] if config.unlabeled is not None else [])]:
        data[section] = {"name": getattr(config, section).name, **options[section].model_dump(mode="json")}
    return data
