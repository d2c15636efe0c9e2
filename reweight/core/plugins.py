"""Plugins: pluggy hook specs, entry-point discovery, and the registry of components.

Every component kind (strategy, granularity, hypergradient, dataset, model, loss) is registered
through a hook that receives a ``register(name, factory, options=...)`` callback, the pattern
of ``llm`` and datasette. Third-party packages, and the built-in strategies in ``plugins/``,
expose a module with ``@hookimpl`` functions under the entry-point group ``reweight``:

    [project.entry-points.reweight]
    my_strategy = "my_package.plugin"

The built-in components (``reweight.components.builtins``) are the entry point ``reweight`` of
this package: they go through the very same hooks, and the core never imports them.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pluggy
from pydantic import BaseModel, BeforeValidator, ConfigDict

PROJECT = "reweight"
BUILTINS = "reweight"  # the entry point of the built-in components
KINDS = ("strategy", "granularity", "hypergradient", "dataset", "model", "loss")

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class NoOptions(BaseModel):
    """Options model for components that take none: any field is an error."""

    model_config = ConfigDict(extra="forbid")


def bare_name(value: Any) -> Any:
    """A component written by its name alone (``strategy: uniform``) means ``{name: uniform}``."""
    return {"name": value} if isinstance(value, str) else value


ByName = BeforeValidator(bare_name)  # ``Annotated[SomeRef, ByName]``: a field that accepts a bare name


class HookSpecs:
    @hookspec
    def register_strategies(self, register: Callable[..., None]) -> None:
        """Register ``Strategy`` subclasses: ``register(name, cls)`` (options from ``cls.Options``)."""

    @hookspec
    def register_granularities(self, register: Callable[..., None]) -> None:
        """Register ``Granularity`` subclasses."""

    @hookspec
    def register_hypergradients(self, register: Callable[..., None]) -> None:
        """Register ``Hypergradient`` subclasses."""

    @hookspec
    def register_datasets(self, register: Callable[..., None]) -> None:
        """Register data builders: ``register(name, build, options=Model)``; ``build(options, seed)``
        returns a ``BilevelData``."""

    @hookspec
    def register_models(self, register: Callable[..., None]) -> None:
        """Register model builders: ``register(name, build, options=Model)``; ``build(options, data)``
        returns a ``BilevelNet``."""

    @hookspec
    def register_losses(self, register: Callable[..., None]) -> None:
        """Register per-example losses: ``register(name, build, options=Model)``; ``build(options)``
        returns a callable ``(logits, batch) -> per-example losses`` (see ``reweight.core.losses``)."""


HOOK_OF_KIND = {
    "strategy": "register_strategies",
    "granularity": "register_granularities",
    "hypergradient": "register_hypergradients",
    "dataset": "register_datasets",
    "model": "register_models",
    "loss": "register_losses",
}


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    factory: Any
    options: type[BaseModel]
    plugin: str
    package: str
    version: str


@dataclass
class Registry:
    components: dict[tuple[str, str], Component] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # plugins that failed to load or register

    def names(self, kind: str) -> list[str]:
        return sorted(name for k, name in self.components if k == kind)

    def get(self, kind: str, name: str) -> Component:
        try:
            return self.components[kind, name]
        except KeyError:
            installed = ", ".join(self.names(kind)) or "none"
            raise KeyError(f"unknown {kind} {name!r} (installed: {installed})") from None


def describe(error: BaseException) -> str:
    """``RuntimeError: boom``, on one line (a plugin's exception may span several)."""
    text = " ".join(str(error).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def entry_points() -> list[importlib.metadata.EntryPoint]:
    """The installed plugins, reweight's own built-in components first, so that a third-party
    plugin may knowingly replace one of them (and is reported when it does)."""
    found = list(importlib.metadata.entry_points(group=PROJECT))
    return sorted(found, key=lambda entry_point: entry_point.name != BUILTINS)


def plugin_manager() -> tuple[pluggy.PluginManager, dict[str, tuple[str, str]], list[str]]:
    """Load every entry point; a plugin that fails is reported, not fatal."""
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(HookSpecs)
    origins: dict[str, tuple[str, str]] = {}
    problems: list[str] = []
    for entry_point in entry_points():
        if manager.has_plugin(entry_point.name):
            problems.append(f"plugin {entry_point.name!r} is installed twice; the second copy is ignored")
            continue
        try:
            manager.register(entry_point.load(), name=entry_point.name)
        except Exception as error:  # noqa: BLE001 - any plugin bug must not stop the others
            problems.append(f"plugin {entry_point.name!r} failed to load ({describe(error)})")
            continue
        dist = entry_point.dist
        origins[entry_point.name] = (dist.name, dist.version) if dist else ("unknown", "unknown")
    return manager, origins, problems


@cache
def registry() -> Registry:
    """Every installed component, built once per process."""
    manager, origins, problems = plugin_manager()
    found = Registry(problems=problems)
    for kind, hook_name in HOOK_OF_KIND.items():
        for impl in getattr(manager.hook, hook_name).get_hookimpls():
            package, version = origins.get(impl.plugin_name, ("unknown", "unknown"))

            def register(name: str, factory: Any, options: type[BaseModel] | None = None,
                         _kind: str = kind, _plugin: str = impl.plugin_name,
                         _package: str = package, _version: str = version) -> None:
                options = options or getattr(factory, "Options", NoOptions)
                if not isinstance(name, str) or not name:
                    raise TypeError(f"a {_kind} name must be a non-empty string, got {name!r}")
                if not (isinstance(options, type) and issubclass(options, BaseModel)):
                    raise TypeError(f"{_kind} {name!r}: options must be a pydantic model class, got {options!r}")
                earlier = found.components.get((_kind, name))
                if earlier is not None:
                    found.problems.append(f"{_kind} {name!r} from plugin {_plugin!r} replaces the one from {earlier.plugin!r}")
                found.components[_kind, name] = Component(_kind, name, factory, options, _plugin, _package, _version)

            try:
                impl.function(register=register)
            except Exception as error:  # noqa: BLE001
                what = hook_name.removeprefix("register_")
                found.problems.append(f"plugin {impl.plugin_name!r} failed to register {what} ({describe(error)})")
    return found
