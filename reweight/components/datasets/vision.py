"""Data-set plugins over real image sets: ``noisy_labels`` (one set, a clean target drawn from
its training split, the rest as a noisy source) and ``transfer`` (a source set and a target set
with their own classes, e.g. SVHN 0-4 -> MNIST 5-9).

Images stay uint8 (N×C×H×W) in the splits; models scale and normalise them on the device
(``reweight.components.models.heads.InputScale``). Class selection, grayscale and resizing are done once here.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from reweight.components.datasets import transforms
from reweight.components.datasets.catalog import IMAGE_SETS, load_split, resolve_data_root
from reweight.core.data import BilevelData, Split
from reweight.core.errors import DataError

ImageSetName = Literal[tuple(IMAGE_SETS)]  # type: ignore[valid-type]


class ImagesOptions(BaseModel):
    """Which image set, and how its images and classes are presented."""

    model_config = ConfigDict(extra="forbid")
    dataset: ImageSetName = Field(description="mnist, fashion_mnist, svhn, cifar10, cifar10_jpeg or parquet.")
    folder: str | None = Field(None, description="Its folder, under the data root or absolute (default: the standard one).")
    label_column: str = Field("label", description="Label column of a Parquet set.")
    classes: list[int] | None = Field(None, min_length=2, description="Classes kept, renumbered 0..k-1 in this order.")
    grayscale: bool = Field(False, description="Convert RGB to one luma channel.")
    size: int | None = Field(None, ge=4, description="Resize to size×size (bilinear, antialiased).")

    @field_validator("classes")
    @classmethod
    def _distinct(cls, classes: list[int] | None) -> list[int] | None:
        if classes is not None and (len(set(classes)) != len(classes) or min(classes) < 0):
            raise ValueError("classes must be distinct non-negative labels")
        return classes


class NoiseOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: transforms.NoiseKind = Field("uniform", description="uniform (symmetric) or pair (c -> c+1 mod C).")
    rate: float = Field(0.3, ge=0.0, le=1.0, description="Fraction of source labels corrupted, exactly.")


class NoisyLabelsOptions(ImagesOptions):
    data_root: str | None = Field(None, description="Default: $REWEIGHT_DATA_ROOT, else ~/.cache/reweight/data.")
    target_per_class: PositiveInt = Field(500, description="Clean target examples per class, from the training split.")
    source_limit: PositiveInt | None = Field(None, description="At most this many source examples (random by seed).")
    test_limit: PositiveInt | None = Field(None, description="At most this many test examples (random by seed).")
    noise: NoiseOptions = Field(default_factory=NoiseOptions)


class TransferSourceOptions(ImagesOptions):
    limit: PositiveInt | None = Field(None, description="At most this many source examples (random by seed).")


class TransferTargetOptions(ImagesOptions):
    per_class: PositiveInt = Field(25, description="nᵗ, labelled target examples per class.")
    unlabeled: int | Literal["rest"] | None = Field(
        None, description="Unlabeled target examples: this many (random by seed) or 'rest', every training image of "
                          "the target classes not labelled (for the unlabeled section).")

    @field_validator("unlabeled", mode="before")
    @classmethod
    def _count_or_rest(cls, value):
        if value is None or value == "rest" or (type(value) is int and value >= 1):
            return value
        raise ValueError(f"expected a count of images (at least 1) or 'rest', got {value!r}")


class TransferOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data_root: str | None = Field(None, description="Default: $REWEIGHT_DATA_ROOT, else ~/.cache/reweight/data.")
    source: TransferSourceOptions
    target: TransferTargetOptions
    test_limit: PositiveInt | None = Field(None, description="At most this many test examples (random by seed).")


def _load(options: ImagesOptions, split: str, data_root: str | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Images and labels of one split, classes selected and renumbered; plus the class count."""
    x, y = load_split(options.dataset, split, resolve_data_root(data_root), options.folder, options.label_column)
    if options.classes is None:
        return x, y, max(IMAGE_SETS[options.dataset].classes, int(y.max()) + 1 if len(y) else 0)
    present = int(y.max()) + 1 if len(y) else 0
    missing = [c for c in options.classes if c >= present]
    if missing:
        raise DataError(f"{options.dataset}: no class {missing[0]} in its {split} split (labels 0..{present - 1})")
    x, y = transforms.select_classes(x, y, options.classes)
    return x, y, len(options.classes)


def _present(x: torch.Tensor, options: ImagesOptions) -> torch.Tensor:
    if options.grayscale:
        x = transforms.grayscale(x)
    if options.size is not None:
        x = transforms.resize(x, options.size)
    return x


def _per_class(y: torch.Tensor, n: int, classes: int, generator: torch.Generator, where: str) -> torch.Tensor:
    try:
        return transforms.per_class_indices(y, n, classes, generator)
    except ValueError as error:
        raise DataError(f"{where}: {error}") from None


def _test(options: ImagesOptions, data_root: str | None, limit: int | None, generator: torch.Generator) -> Split:
    x, y, _ = _load(options, "test", data_root)
    keep = transforms.random_subset(len(y), limit, generator)
    return Split(_present(x[keep], options), y[keep].clone())


def build_noisy_labels(options: NoisyLabelsOptions, seed: int) -> BilevelData:
    """Source: the training split minus the target examples, a fraction of its labels corrupted
    (meta ``corrupted`` and ``clean_label``). Target: ``target_per_class`` clean examples per
    class of the training split, drawn by seed. Test: the test split."""
    generator = torch.Generator().manual_seed(seed)
    x, y, classes = _load(options, "train", options.data_root)
    target_index = _per_class(y, options.target_per_class, classes, generator, "data.target_per_class")
    rest = torch.ones(len(y), dtype=torch.bool)
    rest[target_index] = False
    source_index = rest.nonzero().squeeze(1)
    source_index = source_index[transforms.random_subset(len(source_index), options.source_limit, generator)]
    clean = y[source_index]
    noisy, corrupted = transforms.corrupt_labels(clean, options.noise.rate, classes, options.noise.kind, generator)
    return BilevelData(
        source=Split(_present(x[source_index], options), noisy, {"corrupted": corrupted, "clean_label": clean}),
        target=Split(_present(x[target_index], options), y[target_index].clone()),
        test=_test(options, options.data_root, options.test_limit, generator),
        source_classes=classes,
        target_classes=classes,
    )


def build_transfer(options: TransferOptions, seed: int) -> BilevelData:
    """Source: the source set's training split (its selected classes). Target: ``per_class``
    examples per class of the target set's training split, drawn by seed. Test: the target
    set's test split, same classes. Source and target images must end with the same shape."""
    generator = torch.Generator().manual_seed(seed)
    tx, ty, target_classes = _load(options.target, "train", options.data_root)
    target_index = _per_class(ty, options.target.per_class, target_classes, generator, "data.target.per_class")
    sx, sy, source_classes = _load(options.source, "train", options.data_root)
    keep = transforms.random_subset(len(sy), options.source.limit, generator)
    source = Split(_present(sx[keep], options.source), sy[keep].clone())
    target = Split(_present(tx[target_index], options.target), ty[target_index].clone())
    if source.x.shape[1:] != target.x.shape[1:]:
        raise DataError(
            f"data: source images are {tuple(source.x.shape[1:])} but target images {tuple(target.x.shape[1:])}; "
            "set data.source.grayscale / data.source.size (e.g. grayscale: true, size: 28 for SVHN -> MNIST)"
        )
    test = _test(options.target, options.data_root, options.test_limit, generator)
    unlabeled = None
    if options.target.unlabeled is not None:  # drawn last, so the other splits are those of a run without
        rest = torch.ones(len(ty), dtype=torch.bool)
        rest[target_index] = False
        rest_index = rest.nonzero().squeeze(1)
        limit = None if options.target.unlabeled == "rest" else options.target.unlabeled
        rest_index = rest_index[transforms.random_subset(len(rest_index), limit, generator)]
        unlabeled = Split(_present(tx[rest_index], options.target), torch.full((len(rest_index),), -1))
    return BilevelData(
        source=source,
        target=target,
        test=test,
        source_classes=source_classes,
        target_classes=target_classes,
        unlabeled=unlabeled,
    )
