"""reweight: bilevel data reweighting — source weights learned so that a target task is solved well."""

from reweight.data import Batch, BilevelData, Split
from reweight.granularity import Granularity, NoOptions
from reweight.hypergrad import Hypergradient, HypergradientProblem, HypergradientResult, WeightGradient
from reweight.models import BilevelNet
from reweight.plugins import hookimpl
from reweight.strategy import Strategy

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
