"""reweight: bilevel data reweighting — source weights learned so that a target task is solved well.

What plugin authors and users program against is exported here; it lives in ``reweight.core``.
"""

import sys

from reweight.core import errors, hypergrad, models
from reweight.core.data import Batch, BilevelData, Split
from reweight.core.engine import Engine, TrainSettings
from reweight.core.errors import ConfigError, DataError, ReweightError
from reweight.core.granularity import Granularity
from reweight.core.hypergrad import Hypergradient, HypergradientProblem, HypergradientResult, WeightGradient
from reweight.core.models import BilevelNet, buffers_preserved
from reweight.core.plugins import NoOptions, hookimpl, register, registry
from reweight.core.strategy import Strategy
from reweight.core.streaming import StreamedSplit, from_datasets

__version__ = "0.1.0"

# The module paths that the 0.1 plugin guide named (``reweight.errors.DataError``,
# ``reweight.models.buffers_preserved``, ``reweight.hypergrad.WeightGradient``) stay importable,
# so that plugins written against it keep working; new code imports from ``reweight``.
for _module in (errors, hypergrad, models):
    sys.modules.setdefault(f"{__name__}.{_module.__name__.rsplit('.', 1)[1]}", _module)



def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str):
    """The layers above the core, imported when first used (the experiment layer loads MLflow)."""
    if name in ("run", "Result", "RunResult"):
        from reweight.experiment import api

        return getattr(api, name)
    if name == "bilevel":
        from reweight.components.models.wrap import bilevel

        return bilevel
    if name in ("OneStep", "OneStepOptions"):
        from reweight.components.hypergradients import one_step

        return getattr(one_step, name)
    if name in ("Unrolled", "UnrolledOptions"):
        from reweight.components.hypergradients import unrolled

        return getattr(unrolled, name)
    raise AttributeError(f"module 'reweight' has no attribute {name!r}")


__all__ = [
    "Batch",
    "BilevelData",
    "BilevelNet",
    "ConfigError",
    "DataError",
    "Engine",
    "Granularity",
    "Hypergradient",
    "HypergradientProblem",
    "HypergradientResult",
    "NoOptions",
    "OneStep",
    "OneStepOptions",
    "Result",
    "ReweightError",
    "RunResult",
    "Split",
    "Strategy",
    "StreamedSplit",
    "TrainSettings",
    "Unrolled",
    "UnrolledOptions",
    "WeightGradient",
    "bilevel",
    "buffers_preserved",
    "from_datasets",
    "hookimpl",
    "register",
    "registry",
    "run",
    "__version__",
]
