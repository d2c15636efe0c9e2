"""The core's own components, registered through the same hooks as any plugin."""

from reweight.granularity import PerSample
from reweight.groups import PerGroup, PerTask
from reweight.hypergrad import OneStep
from reweight.models import MLPOptions, build_mlp
from reweight.plugins import hookimpl
from reweight.synthetic import Synthetic2DOptions, build_synthetic_2d


@hookimpl
def register_granularities(register):
    register("per_sample", PerSample)
    register("per_group", PerGroup)
    register("per_task", PerTask)


@hookimpl
def register_hypergradients(register):
    register("one_step", OneStep)


@hookimpl
def register_datasets(register):
    register("synthetic_2d", build_synthetic_2d, options=Synthetic2DOptions)


@hookimpl
def register_models(register):
    register("mlp", build_mlp, options=MLPOptions)
