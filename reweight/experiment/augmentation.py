"""The ``augment`` and ``stream`` sections, built into the engine's ``Augmentation`` and the
loaders' ``StreamSettings``. A transform of one's own is named ``package.module:function``
(imported when the run starts), or handed to ``reweight.run(..., transforms=[...])`` as a
callable, which is then known by its own ``module:qualname`` for this process."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from reweight.core.augment import Augmentation, Transform
from reweight.core.errors import ConfigError
from reweight.core.streaming import StreamSettings
from reweight.experiment.config import AugmentConfig, StreamConfig

_given: dict[str, Transform] = {}  # callables handed to reweight.run, by the name the config records


def name_of(transform: Callable) -> str:
    """Record a callable for this process; the name a config gives it."""
    if not callable(transform):
        raise ConfigError(f"transforms: expected callables (x, keys) -> x, got {type(transform).__name__}")
    name = f"{transform.__module__}:{getattr(transform, '__qualname__', type(transform).__qualname__)}"
    _given[name] = transform
    return name


def resolve(path: str) -> Transform:
    if path in _given:
        return _given[path]
    module, _, attribute = path.partition(":")
    try:
        found = importlib.import_module(module)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"augment.transforms: cannot import {path!r} ({type(error).__name__}: {error})") from None
    if not callable(found):
        raise ConfigError(f"augment.transforms: {path!r} is a {type(found).__name__}, not a callable (x, keys) -> x")
    return found


def augmentation(section: AugmentConfig) -> Augmentation:
    return Augmentation(section.crop_padding, section.flip, tuple(resolve(path) for path in section.transforms),
                        section.target)


def stream_settings(section: StreamConfig) -> StreamSettings:
    return StreamSettings(section.workers, section.pin_memory, section.prefetch, section.eval_batch_size)
