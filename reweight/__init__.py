"""reweight: bilevel data reweighting — source weights learned so that a target task is solved well.

What plugin authors and users program against is exported here; it lives in ``reweight.core``.
"""

from reweight.core.data import Batch, BilevelData, Split
from reweight.core.granularity import Granularity
from reweight.core.hypergrad import Hypergradient, HypergradientProblem, HypergradientResult, WeightGradient
from reweight.core.models import BilevelNet
from reweight.core.plugins import NoOptions, hookimpl
from reweight.core.strategy import Strategy

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "BilevelData",
    "BilevelNet",
    "Granularity",
    "Hypergradient",
    "HypergradientProblem",
    "HypergradientResult",
    "NoOptions",
    "Split",
    "Strategy",
    "WeightGradient",
    "hookimpl",
    "__version__",
]
