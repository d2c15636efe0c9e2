"""The config loader under random input: ``validate``, ``sweep.expand`` (with random ``--set``
overrides) and ``load_raw`` either return or raise ``ConfigError`` — never anything else, and
the error is one line. The shapes mix junk with the real field and plugin names, so that most
examples get past the top level into the sections and the plugins' own options."""

from __future__ import annotations

import datetime
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, field_validator

from reweight.core.errors import ConfigError
from reweight.core.plugins import Component, registry
from reweight.experiment.config import SECTIONS, CheckpointConfig, TrackingConfig, TrainConfig, validate
from reweight.experiment.config_file import load_raw
from reweight.experiment.sweep import expand

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MINIMAL = {"name": "fuzz", "data": {"name": "synthetic_2d"}}


def plugin_fields() -> dict[str, tuple[list[str], list[str]]]:
    """Config section -> (installed plugin names, every option field of those plugins)."""
    found = registry()
    fields = {}
    for section, kind in SECTIONS.items():
        names = found.names(kind)
        options = sorted({key for name in names for key in found.get(kind, name).options.model_fields})
        fields[section] = (names, options)
    return fields


FIELDS = plugin_fields()
NESTED_FIELDS = {"train": sorted(TrainConfig.model_fields), "tracking": sorted(TrackingConfig.model_fields),
                 "checkpoint": sorted(CheckpointConfig.model_fields)}
TOP = ["name", "seeds", "sweep", *SECTIONS, *NESTED_FIELDS]
EVERY_NAME = sorted({*TOP, *(f for _, fs in FIELDS.values() for f in fs), *(n for ns, _ in FIELDS.values() for n in ns),
                     *(f for fs in NESTED_FIELDS.values() for f in fs), "method", "noise", "rate", "kind", "task"})

scalars = (st.none() | st.booleans() | st.integers() | st.integers(-3, 3) | st.floats() | st.text(max_size=6)
           | st.sampled_from(EVERY_NAME) | st.dates() | st.binary(max_size=4))
keys = st.sampled_from(EVERY_NAME) | st.text(max_size=5) | st.integers(-2, 2) | st.none()
values = st.recursive(scalars, lambda children: st.lists(children, max_size=3)
                      | st.dictionaries(keys, children, max_size=4), max_leaves=10)


def section(name: str) -> st.SearchStrategy:
    """A component section: a real plugin name (or junk) and some of the plugins' options."""
    names, options = FIELDS[name]
    optional = {option: values for option in options}
    return (st.sampled_from(names)
            | st.fixed_dictionaries({"name": st.sampled_from(names) | scalars}, optional=optional)
            | values)


def nested(name: str) -> st.SearchStrategy:
    return st.fixed_dictionaries({}, optional={key: values for key in NESTED_FIELDS[name]}) | values


configs = st.fixed_dictionaries(
    {},
    optional={"name": st.text(max_size=4) | scalars, "seeds": values,
              **{name: section(name) for name in SECTIONS}, **{name: nested(name) for name in NESTED_FIELDS}},
) | st.dictionaries(keys, values, max_size=6) | values


@FUZZ
@given(configs, st.booleans())
@example({"data": {"name": "tasks", "target": "synthetic_task", "sources": [{"task": "a", "data": {"name": 3}}]}}, True)
@example({"seeds": [2**64]}, True)  # accepted, then a crash in the run: seeds are bounded now
@example({"train": {1.5: 2}, "data": {"name": "synthetic_2d", None: 3}}, True)
@example({"\n": None}, True)  # a key with a line break made the message two lines
def test_validate_returns_or_raises_config_error(raw, on_minimal):
    if on_minimal and isinstance(raw, dict):
        raw = {**MINIMAL, **raw}
    try:
        validate(raw)
    except ConfigError as error:
        assert "\n" not in str(error)


paths = st.lists(st.sampled_from(EVERY_NAME) | st.text(max_size=3), min_size=1, max_size=3).map(".".join)
override_values = (values.map(lambda value: _yaml(value)) | st.text(max_size=8)
                   | st.sampled_from(["2024-02-30", "!!float x", "!!int 1.5", "!!float", "[1, 2", "{a: }", "*alias",
                                     "null", "[]"]))
overrides = st.lists(st.builds(lambda path, value: f"{path}={value}", paths, override_values) | st.text(max_size=10),
                     max_size=4)
sweeps = st.dictionaries(paths, st.lists(values, min_size=1, max_size=3) | values, max_size=3) | values


def _yaml(value) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip()


@FUZZ
@given(configs, st.none() | sweeps, overrides)
@example(MINIMAL, None, ["train.steps=2024-02-30"])  # YAML's date constructor raised ValueError
@example(MINIMAL, None, ["train..lr=1"])  # an empty part of the path
@example(MINIMAL, None, ["sweep.train.lr=[0.1, 0.1]"])
@example(MINIMAL, {"strategy.name": ["soseleto", "uniform"], "strategy.lr": [10]}, [])
@example(["not", "a", "mapping"], None, [])
def test_expand_returns_or_raises_config_error(raw, sweep, overrides):
    if isinstance(raw, dict):
        raw = {**MINIMAL, **raw}
        if sweep is not None:
            raw["sweep"] = sweep
    try:
        expand(raw, overrides)
    except ConfigError as error:
        assert "\n" not in str(error)


yaml_text = st.lists(st.sampled_from([*"ab:{}[],-!&*#|>'\" \n\t0129.\x85", "name", "data", "synthetic_2d", "train",
                                       "steps", "2024-02-30", "!!binary", "!!float", "&a", "*a", "? "]),
                     max_size=20).map("".join)


@FUZZ
@given(yaml_text | st.binary(max_size=20).map(lambda raw: raw.decode("latin-1")))
@example("when: 2024-02-30\n")  # ValueError from YAML's date constructor
@example("name: caf\xe9\n")  # not UTF-8 once written as latin-1
@example("x: !!float abc\n")
@example("!!float")  # IndexError inside YAML's float constructor
@example("[" * 2000)  # deep nesting
@example("name: x\ndata: synthetic_2d\nsweep: {train.lr: [&a [*a], 2]}\n")  # a list inside itself
def test_load_raw_returns_or_raises_config_error(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    path.write_bytes(text.encode("latin-1", errors="replace"))
    try:
        validate(load_raw(path))
    except ConfigError as error:
        assert "\n" not in str(error)


# --- a third-party plugin whose validator raises what pydantic does not wrap ----------------------------------

class TouchyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = 1

    @field_validator("width")
    @classmethod
    def _raise_type_error(cls, width: int) -> int:
        if width > 5:
            raise TypeError("width must be an int below 6")  # pydantic only wraps ValueError and AssertionError
        return width


@pytest.fixture
def touchy(monkeypatch):
    found = registry()
    plugins = replace(found, components=dict(found.components))
    soseleto = found.get("strategy", "soseleto")
    plugins.components["strategy", "touchy"] = Component("strategy", "touchy", soseleto.factory, TouchyOptions,
                                                         "touchy_plugin", "touchy", "0.1")
    plugins.components["dataset", "touchy_data"] = Component("dataset", "touchy_data", None, TouchyOptions,
                                                             "touchy_plugin", "touchy", "0.1")
    monkeypatch.setattr("reweight.core.plugins.registry", lambda: plugins)
    monkeypatch.setattr("reweight.experiment.config.registry", lambda: plugins)
    return plugins


@settings(FUZZ, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(-10, 10) | values)
@example(6)
def test_a_plugin_validator_raising_type_error_is_a_config_error(touchy, width):
    for raw in ({**MINIMAL, "strategy": {"name": "touchy", "width": width}},
                {**MINIMAL, "data": {"name": "tasks", "target": "synthetic_task",
                                     "sources": [{"task": "a", "data": {"name": "touchy_data", "width": width}}]}}):
        try:
            validate(raw)
        except ConfigError as error:
            assert "\n" not in str(error)


def test_the_type_error_names_the_section_and_the_plugin(touchy):
    with pytest.raises(ConfigError) as caught:
        validate({**MINIMAL, "strategy": {"name": "touchy", "width": 6}})
    assert str(caught.value) == ("strategy: the options of strategy 'touchy' (plugin 'touchy_plugin') could not be "
                                 "checked (TypeError: width must be an int below 6)")
    with pytest.raises(ConfigError) as caught:
        validate({**MINIMAL, "data": {"name": "tasks", "target": "synthetic_task",
                                      "sources": [{"task": "a", "data": {"name": "touchy_data", "width": 6}}]}})
    assert str(caught.value) == ("data.sources.0.data: the options of dataset 'touchy_data' could not be checked "
                                 "(TypeError: width must be an int below 6)")


def test_an_odd_key_is_quoted_and_the_message_stays_one_line():
    with pytest.raises(ConfigError) as caught:
        validate({**MINIMAL, "train": {"a\nb": 1, "steps": 2}})
    assert str(caught.value) == "train.'a\\nb': unknown field"
    with pytest.raises(ConfigError) as caught:
        expand({**MINIMAL, "sweep": {"strategy.name": ["x\ny"]}})
    assert str(caught.value) == "sweep combination strategy.name=x y: strategy.name: unknown strategy 'x\\ny' (installed: " \
        "fine_tune, joint, learning_to_reweight, meta_weight_net, soseleto, source_only, target_only, uniform); " \
        "plugins are found through the entry-point group 'reweight' of installed packages: install the plugin's " \
        "package, or reinstall it after changing its entry points"


def test_a_date_is_a_scalar_too():
    with pytest.raises(ConfigError, match="name: Input should be a valid string"):
        validate({**MINIMAL, "name": datetime.date(2024, 2, 29)})
