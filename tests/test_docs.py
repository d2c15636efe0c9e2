"""The plugin guide's example strategies are real code: they run against the current contracts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from reweight.components.granularities.per_sample import PerSample
from reweight.components.hypergradients.one_step import OneStep, OneStepOptions
from reweight.components.hypergradients.unrolled import Unrolled, UnrolledOptions
from reweight.core.engine import Engine, TrainSettings
from reweight.core.plugins import NoOptions
from tests.conftest import random_problem

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def guide_namespace() -> dict:
    """Execute every strategy example of the guide (blocks that define a Strategy subclass)."""
    namespace: dict = {}
    for block in re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S):
        if "(Strategy):" in block:
            exec(compile(block, str(GUIDE), "exec"), namespace)
    return namespace


@pytest.mark.parametrize("method", [OneStep(OneStepOptions()), Unrolled(UnrolledOptions(steps=2))],
                         ids=["one_step", "unrolled-2"])
@pytest.mark.parametrize("name", ["Soseleto", "Sigmoid"])
def test_guide_strategies_train(name, method):
    namespace = guide_namespace()
    cls = namespace[name]
    model, data = random_problem(0, n_source=16)
    strategy = cls(cls.Options(), PerSample(NoOptions(), data.source), torch.device("cpu"))
    engine = Engine(model, strategy, method, data, TrainSettings(source_batch_size=4), seed=0)
    before = {k: v.clone() for k, v in strategy.state_dict().items()}
    engine.fit(6, eval_every=3)
    assert any(not torch.equal(before[k], v) for k, v in strategy.state_dict().items())
