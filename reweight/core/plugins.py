"""Plugins: pluggy hook specs, entry-point discovery, and the registry of components.

Every component kind (strategy, granularity, hypergradient, dataset, model, loss, unlabeled) is registered
through a hook that receives a ``register(name, factory, options=...)`` callback, the pattern
of ``llm`` and datasette. Third-party packages, and the built-in strategies in ``plugins/``,
expose a module with ``@hookimpl`` functions under the entry-point group ``reweight``:

    [project.entry-points.reweight]
    my_strategy = "my_package.plugin"

The built-in components (``reweight.components.builtins``) are the entry point ``reweight`` of
this package: they go through the very same hooks, and the core never imports them.
"""

from __future__ import annotations

import difflib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pluggy
from pydantic import BaseModel, BeforeValidator, ConfigDict, RootModel, ValidationError

PROJECT = "reweight"
BUILTINS = "reweight"  # the entry point of the built-in components
KINDS = ("strategy", "granularity", "hypergradient", "dataset", "model", "loss", "unlabeled")

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

    @hookspec
    def register_unlabeled(self, register: Callable[..., None]) -> None:
        """Register unlabeled-target terms: ``register(name, build, options=Model)``; ``build(options)``
        returns an ``UnlabeledLoss`` (see ``reweight.core.unlabeled``)."""


HOOK_OF_KIND = {
    "strategy": "register_strategies",
    "granularity": "register_granularities",
    "hypergradient": "register_hypergradients",
    "dataset": "register_datasets",
    "model": "register_models",
    "loss": "register_losses",
    "unlabeled": "register_unlabeled",
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
            raise KeyError(f"unknown {kind} {name!r} (installed: {installed}); {NOT_FOUND_HINT}") from None


NOT_FOUND_HINT = ("plugins are found through the entry-point group 'reweight' of installed packages: "
                  "install the plugin's package, or reinstall it after changing its entry points")


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
    found = entry_points()
    if not any(entry_point.name == BUILTINS for entry_point in found):
        problems.append("the built-in components are not registered (no entry point 'reweight'): reinstall reweight, "
                        "e.g. pip install -e . in its source folder")
    for entry_point in found:
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
        problems.extend(hook_problems(manager, entry_point.name))
    return manager, origins, problems


def hook_problems(manager: pluggy.PluginManager, name: str) -> list[str]:
    """A plugin's hooks that would silently do nothing: a marked function whose name is not a
    reweight hook (pluggy keeps it, unvalidated, as a hook without a spec), and a function named
    like a hook but not marked ``@reweight.hookimpl`` (pluggy never calls it)."""
    plugin, hooks = manager.get_plugin(name), sorted(HOOK_OF_KIND.values())
    found = []
    for caller in manager.get_hookcallers(plugin) or []:
        optional = all(impl.optionalhook for impl in caller.get_hookimpls() if impl.plugin is plugin)
        if caller.spec is None and not optional:  # optionalhook: meant for a reweight that has the hook
            close = difflib.get_close_matches(caller.name, hooks, n=1, cutoff=0.85)
            hint = f"did you mean {close[0]}?" if close else f"the hooks are {', '.join(hooks)}"
            found.append(f"plugin {name!r}: {caller.name} is not a reweight hook, so it is never called ({hint})")
    for hook in hooks:
        if callable(getattr(plugin, hook, None)) and manager.parse_hookimpl_opts(plugin, hook) is None:
            found.append(f"plugin {name!r}: {hook} is not marked @reweight.hookimpl, so it is never called")
    return found


def options_of(kind: str, name: str, factory: Any, options: type[BaseModel] | None) -> type[BaseModel]:
    """A component's options model, checked: given, else the factory's ``Options``, else
    ``NoOptions``; the name a non-empty string. For the hooks' ``register`` and for ``register``."""
    options = options or getattr(factory, "Options", NoOptions)
    if not isinstance(name, str) or not name:
        raise TypeError(f"a {kind} name must be a non-empty string, got {name!r}")
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise TypeError(f"{kind} {name!r}: options must be a pydantic model class, got {options!r}")
    return options


RUNTIME = "python"  # the plugin name of components registered from Python with ``register``
_runtime: dict[tuple[str, str], tuple[Any, type[BaseModel]]] = {}


def register(kind: str, name: str, factory: Any, options: type[BaseModel] | None = None) -> None:
    """Register a component for the life of this Python process, without a package or an
    entry point: ``register("dataset", "my_data", build, options=MyOptions)``. It is used by
    name in configs like any installed plugin's, and replaces an installed one of that name."""
    if kind not in HOOK_OF_KIND:
        raise ValueError(f"unknown component kind {kind!r} (kinds: {', '.join(HOOK_OF_KIND)})")
    _runtime[kind, name] = (factory, options_of(kind, name, factory, options))
    if registry.cache_info().currsize:  # already built: add it there too
        add_runtime(registry(), kind, name)


def add_runtime(found: Registry, kind: str, name: str) -> None:
    factory, options = _runtime[kind, name]
    found.components[kind, name] = Component(kind, name, factory, options, RUNTIME, "python", "runtime")


def validate_options(options: type[BaseModel], raw: Any) -> BaseModel:
    """``options.model_validate(raw)``, with unknown fields an error even where the model does
    not say what to do with them (pydantic's default would ignore a misspelt option). A model
    that sets ``extra`` itself is obeyed; nested models are validated as they are."""
    if options.model_config.get("extra") is None and isinstance(raw, dict) and not issubclass(options, RootModel):
        known = set()
        for name, info in options.model_fields.items():
            known |= {name, info.alias} | set(getattr(info.validation_alias, "choices", None) or [info.validation_alias])
        unknown = [key for key in raw if key not in known]
        if unknown:
            raise ValidationError.from_exception_data(options.__name__, [
                {"type": "extra_forbidden", "loc": (key,), "input": raw[key]} for key in unknown])
    return options.model_validate(raw)


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
                options = options_of(_kind, name, factory, options)
                earlier = found.components.get((_kind, name))
                if earlier is not None:
                    found.problems.append(f"{_kind} {name!r} from plugin {_plugin!r} replaces the one from {earlier.plugin!r}")
                found.components[_kind, name] = Component(_kind, name, factory, options, _plugin, _package, _version)

            try:
                impl.function(register=register)
            except Exception as error:  # noqa: BLE001
                what = hook_name.removeprefix("register_")
                found.problems.append(f"plugin {impl.plugin_name!r} failed to register {what} ({describe(error)})")
    for kind, name in _runtime:
        add_runtime(found, kind, name)
    return found
