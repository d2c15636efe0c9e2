"""Reading a config: the YAML file, and ``--set KEY=VALUE`` overrides applied to it before
validation (a component section follows its plugin: switching the plugin drops the old one's
options)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from reweight.core.errors import ConfigError
from reweight.core.plugins import describe
from reweight.experiment.config import (
    COMPONENT_SECTIONS,
    DEFAULT_NAMES,
    ExperimentConfig,
    name_key,
    validate,
    with_name_key,
)


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
    for section in COMPONENT_SECTIONS:  # one spelling of the plugin name, so overrides find it
        if section in raw:
            raw[section] = with_name_key(raw[section])
    path = list(path)
    if path[0] in COMPONENT_SECTIONS:
        if len(path) == 1 and isinstance(value, str):
            path = [path[0], "name"]
        if len(path) == 2:
            path[1] = name_key(path[1])
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
