"""Builds one seed's engine from a validated config: the data, model, loss, unlabeled term,
granularity, strategy (wrapped in a pipeline's phases, if any), hypergradient and device; and
names the plugin that broke a contract. Used by the runner, by each child run's baseline, and by
scripts that time or inspect an engine."""

from __future__ import annotations

import functools
import os

import torch
from pydantic import BaseModel

from reweight.core import distributed
from reweight.core.data import class_labels
from reweight.core.distributed import SINGLE, DataParallel
from reweight.core.engine import Engine, TrainSettings
from reweight.core.errors import ConfigError, ContractError
from reweight.core.plugins import describe, registry
from reweight.core.streaming import stream_data
from reweight.core.unlabeled import UnlabeledLoss
from reweight.experiment.augmentation import augmentation, stream_settings
from reweight.experiment.config import COMPONENT_SECTIONS, ExperimentConfig
from reweight.experiment.pipeline import PhasedStrategy, total_steps
from reweight.experiment.schedule import scheduler


def blamed(error: ContractError, config: ExperimentConfig) -> ContractError:
    """The error with the plugin that broke the rule named: the core states the rule, only the
    experiment knows which configured plugin the object came from."""
    section = next(section for section, kind in COMPONENT_SECTIONS.items() if kind == error.component)
    name = getattr(config, section).name
    component = registry().get(error.component, name)
    origin = f"plugin {component.plugin!r}"
    if component.package != "unknown":
        origin += f", package {component.package} {component.version}"
    return ContractError(error.component, f"{error.component} {name!r} ({origin}): {error}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but no CUDA device is available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"train.device: {name!r} does not exist: this machine has {torch.cuda.device_count()} "
                          f"CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def rank_device(name: str) -> torch.device:
    """The device of this process: under a launcher, ``cuda`` (or ``auto`` on a CUDA machine)
    is the GPU of this rank's local rank, as torchrun numbers them."""
    device = resolve_device(name)
    if distributed.launched_world() > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def build_engine(config: ExperimentConfig, options: dict[str, BaseModel], seed: int,
                 parallel: DataParallel = SINGLE) -> Engine:
    """Everything for one seed: data, model, granularity, strategy, hypergradient, engine (over
    ``parallel``'s ranks; each builds the same, from the same seed)."""
    plugins = registry()
    device = rank_device(config.train.device)
    torch.manual_seed(seed)
    data = plugins.get("dataset", config.data.name).factory(options["data"], seed)
    too_big = config.train.source_batch_size > len(data.source)
    if too_big:
        raise ConfigError(
            f"train.source_batch_size: {config.train.source_batch_size} is larger than the "
            f"source set ({len(data.source)} examples)"
        )
    if config.selection.enabled:  # drawn from the target set before anything sees it
        if not class_labels(data.target.y):
            raise ConfigError("selection: model selection picks the step of the best validation accuracy, so it needs "
                              f"class labels (1-d int64); this data set's target labels are {data.target.y.dtype} "
                              f"of shape {tuple(data.target.y.shape)}")
        data = data.hold_out(seed + 7_919, config.selection.fraction, config.selection.per_class)
    data = stream_data(data, config.stream.splits, stream_settings(config.stream)).to(device)
    model = plugins.get("model", config.model.name).factory(options["model"], data).to(device)
    model.restrict_source_labels(data.source_label_mask())
    loss = plugins.get("loss", config.loss.name)
    try:
        model.use_loss(loss.factory(options["loss"]))
    except TypeError as error:
        raise ConfigError(f"loss.name: loss {config.loss.name!r} (plugin {loss.plugin!r}) did not build a loss "
                          f"({describe(error)})") from None
    if config.unlabeled is not None:
        if data.unlabeled is None or not len(data.unlabeled):
            raise ConfigError(f"unlabeled: data set {config.data.name!r} has no unlabeled target examples; give it "
                              "some (for transfer: data.target.unlabeled) or leave the unlabeled section out")
        model.use_unlabeled(unlabeled_term(plugins.get("unlabeled", config.unlabeled.name), options["unlabeled"]))
    granularity = plugins.get("granularity", config.granularity.name).factory(
        options["granularity"], data.source, model=model
    )
    strategy = plugins.get("strategy", config.strategy.name).factory(options["strategy"], granularity, device)
    if config.pipeline:
        strategy = PhasedStrategy(strategy, config.pipeline)
    hypergradient = plugins.get("hypergradient", config.hypergrad.name).factory(options["hypergrad"])
    schedule = functools.partial(scheduler, config.train.schedule, total_steps(config))  # over every phase
    train = config.train
    settings = TrainSettings(**train.model_dump(exclude={"steps", "eval_every", "device", "schedule", "optimizer",
                                                         "target_optimizer"}),
                             optimizer=train.optimizer.settings(), target_optimizer=train.target_optimizer.settings(),
                             schedule=schedule, augment=augmentation(config.augment))
    try:
        engine = Engine(model, strategy, hypergradient, data, settings, seed, parallel)
    except ContractError as error:
        raise blamed(error, config) from None
    if isinstance(strategy, PhasedStrategy):
        strategy.remember_initial_model(engine.model)
    return engine



def unlabeled_term(component, options: BaseModel) -> UnlabeledLoss:
    """The unlabeled section's term, checked: one line here rather than an AttributeError in
    the first step."""
    term = component.factory(options)
    size = getattr(term, "batch_size", None)
    if not callable(term) or isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"unlabeled.name: unlabeled {component.name!r} (plugin {component.plugin!r}) did not build "
                          "an UnlabeledLoss (a callable term(logits) with an int batch_size >= 1); got "
                          f"{type(term).__name__}")
    return term
