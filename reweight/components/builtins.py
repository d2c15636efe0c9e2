"""The core's own components, registered through the same hooks as any plugin."""

from reweight.components.datasets.image_folder import ImageFolderOptions, build_image_folder
from reweight.components.datasets.synthetic import Synthetic2DOptions, build_synthetic_2d
from reweight.components.datasets.synthetic_annotators import AnnotatorsOptions, build_synthetic_annotators
from reweight.components.datasets.synthetic_tasks import SyntheticTaskOptions, build_synthetic_task
from reweight.components.datasets.table_file import TableFileOptions, build_table_file
from reweight.components.datasets.tasks import TasksOptions, build_tasks
from reweight.components.datasets.tensors_file import TensorsFileOptions, build_tensors_file
from reweight.components.datasets.vision import NoisyLabelsOptions, TransferOptions, build_noisy_labels, build_transfer
from reweight.components.granularities.groups import PerGroup, PerTask
from reweight.components.granularities.per_sample import PerSample
from reweight.components.hypergradients.one_step import OneStep
from reweight.components.hypergradients.unrolled import Unrolled
from reweight.components.losses import CrossEntropyOptions, build_cross_entropy
from reweight.components.models.convnets import CifarQuickOptions, DigitsOptions, build_cifar10_quick, build_digits
from reweight.components.models.mlp import MLPOptions, build_mlp
from reweight.components.unlabeled import Entropy, PseudoLabel, PseudoLabelOptions, UnlabeledOptions
from reweight.core.plugins import hookimpl


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
    register("noisy_labels", build_noisy_labels, options=NoisyLabelsOptions)
    register("transfer", build_transfer, options=TransferOptions)
    register("image_folder", build_image_folder, options=ImageFolderOptions)
    register("tensors_file", build_tensors_file, options=TensorsFileOptions)
    register("table_file", build_table_file, options=TableFileOptions)


@hookimpl
def register_models(register):
    register("mlp", build_mlp, options=MLPOptions)
    register("digits", build_digits, options=DigitsOptions)
    register("cifar10_quick", build_cifar10_quick, options=CifarQuickOptions)


@hookimpl
def register_losses(register):
    register("cross_entropy", build_cross_entropy, options=CrossEntropyOptions)


@hookimpl
def register_unlabeled(register):
    register("entropy", Entropy, options=UnlabeledOptions)
    register("pseudo_label", PseudoLabel, options=PseudoLabelOptions)
