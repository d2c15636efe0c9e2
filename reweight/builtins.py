"""The core's own components, registered through the same hooks as any plugin."""

from reweight.granularity import PerSample
from reweight.groups import PerGroup, PerTask
from reweight.hypergrad import OneStep
from reweight.models import MLPOptions, build_mlp
from reweight.plugins import hookimpl
from reweight.synthetic import Synthetic2DOptions, build_synthetic_2d
from reweight.synthetic_annotators import AnnotatorsOptions, build_synthetic_annotators
from reweight.synthetic_tasks import SyntheticTaskOptions, build_synthetic_task
from reweight.tasks import TasksOptions, build_tasks
from reweight.unrolled import Unrolled


@hookimpl
def register_granularities(register):
    register("per_sample", PerSample)
    register("per_group", PerGroup)
    register("per_task", PerTask)


@hookimpl
def register_hypergradients(register):
    register("one_step", OneStep)
    register("unrolled", Unrolled)


@hookimpl
def register_datasets(register):
    register("synthetic_2d", build_synthetic_2d, options=Synthetic2DOptions)
    register("synthetic_annotators", build_synthetic_annotators, options=AnnotatorsOptions)
    register("synthetic_task", build_synthetic_task, options=SyntheticTaskOptions)
    register("tasks", build_tasks, options=TasksOptions)


@hookimpl
def register_models(register):
    register("mlp", build_mlp, options=MLPOptions)
