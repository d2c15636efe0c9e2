"""Plugin discovery: a third-party package is found through its entry point, exactly like the
built-in strategies, and a broken plugin is reported without stopping the others."""

from __future__ import annotations

import sys
import textwrap

import pytest

from reweight.core.plugins import registry
from reweight.experiment.config import validate

THIRD_PARTY = '''
import torch
from pydantic import BaseModel, ConfigDict
from reweight import Strategy, hookimpl

class HalfOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: float = 0.5

class Half(Strategy):
    Options = HalfOptions
    needs_hypergradient = False
    def weights(self, batch, losses):
        return torch.full((len(batch),), self.options.value)

@hookimpl
def register_strategies(register):
    register("half", Half)
'''


def install(tmp_path, name: str, version: str, module_source: str) -> None:
    (tmp_path / f"{name}.py").write_text(module_source)
    info = tmp_path / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[reweight]\n{name} = {name}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.cache_clear()
    yield tmp_path
    registry.cache_clear()
    for name in ("reweight_half", "reweight_broken"):
        sys.modules.pop(name, None)


def test_builtins_come_from_entry_points():
    found = registry()
    soseleto = found.get("strategy", "soseleto")
    assert (soseleto.plugin, soseleto.package) == ("soseleto", "reweight")
    assert {"soseleto", "uniform"} <= set(found.names("strategy"))
    assert found.get("strategy", "uniform").plugin == "uniform"


def test_third_party_strategy_is_discovered_and_its_options_validated(site):
    install(site, "reweight_half", "1.2.3", textwrap.dedent(THIRD_PARTY))
    half = registry().get("strategy", "half")
    assert (half.package, half.version, half.plugin) == ("reweight_half", "1.2.3", "reweight_half")
    _, options = validate({"name": "t", "data": "synthetic_2d", "strategy": {"name": "half", "value": 0.25}})
    assert options["strategy"].value == 0.25


def test_broken_plugin_is_named_and_the_rest_still_load(site):
    install(site, "reweight_half", "1.0", textwrap.dedent(THIRD_PARTY))
    install(site, "reweight_broken", "0.1", "raise RuntimeError('boom')\n")
    found = registry()
    assert "half" in found.names("strategy") and "soseleto" in found.names("strategy")
    assert any("reweight_broken" in problem and "boom" in problem for problem in found.problems)


def test_plugin_failing_during_registration_is_reported(site):
    install(site, "reweight_broken", "0.1", textwrap.dedent('''
        from reweight import hookimpl
        @hookimpl
        def register_strategies(register):
            raise ValueError("bad registration")
    '''))
    found = registry()
    assert any("reweight_broken" in p and "bad registration" in p for p in found.problems)
    assert "soseleto" in found.names("strategy")
