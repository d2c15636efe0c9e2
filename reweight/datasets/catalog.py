"""The image sets the project knows, where their files live under the data root, and how to
get them.

Folders follow what ``torchvision.datasets`` creates when it downloads into the data root, so
files fetched by torchvision (or by ``reweight data download``) are found as they are:

    <data_root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    <data_root>/FashionMNIST/raw/  (same names)
    <data_root>/svhn/{train,test}_32x32.mat
    <data_root>/cifar-10-batches-py/{data_batch_1..5,test_batch}
    <data_root>/cifar10-jpeg/{train,test}*.parquet        (any Hugging Face image Parquet export)

The data root is, in order: the data set's ``data_root`` option, the ``REWEIGHT_DATA_ROOT``
environment variable, ``$XDG_CACHE_HOME/reweight/data`` (``~/.cache/reweight/data``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from reweight.datasets import files
from reweight.errors import DataError

DATA_ROOT_ENV = "REWEIGHT_DATA_ROOT"


def default_data_root() -> Path:
    if os.environ.get(DATA_ROOT_ENV):
        return Path(os.environ[DATA_ROOT_ENV]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "reweight" / "data"


def resolve_data_root(option: str | None) -> Path:
    return Path(option).expanduser() if option else default_data_root()


@dataclass(frozen=True)
class ImageSet:
    name: str
    folder: str  # relative to the data root
    format: str  # idx | svhn_mat | cifar_python | parquet
    files: dict[str, tuple[str, ...]]  # split -> file names (for parquet: name prefixes)
    classes: int
    torchvision: str | None  # the torchvision.datasets class that downloads it
    source: str  # where to get it by hand

    def hint(self, folder: Path) -> str:
        if self.torchvision:
            how = f"run `reweight data download {self.name}` (needs `pip install 'reweight[vision]'` and internet)"
        else:
            how = "no automatic download"
        return f"{how}, or place the files of {self.source} in {folder} (see the data page of the docs)"


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

IMAGE_SETS = {
    s.name: s
    for s in (
        ImageSet("mnist", "MNIST/raw", "idx", IDX_FILES, 10, "MNIST", "MNIST (the four IDX files, .gz or not)"),
        ImageSet("fashion_mnist", "FashionMNIST/raw", "idx", IDX_FILES, 10, "FashionMNIST",
                 "Fashion-MNIST (the four IDX files, .gz or not; Debian: package dataset-fashion-mnist)"),
        ImageSet("svhn", "svhn", "svhn_mat", {"train": ("train_32x32.mat",), "test": ("test_32x32.mat",)}, 10,
                 "SVHN", "SVHN format 2 (train_32x32.mat, test_32x32.mat from ufldl.stanford.edu/housenumbers)"),
        ImageSet("cifar10", "cifar-10-batches-py", "cifar_python",
                 {"train": tuple(f"data_batch_{k}" for k in range(1, 6)), "test": ("test_batch",)}, 10, "CIFAR10",
                 "CIFAR-10 python version (cifar-10-python.tar.gz, extracted)"),
        ImageSet("cifar10_jpeg", "cifar10-jpeg", "parquet", {"train": ("train",), "test": ("test",)}, 10, None,
                 "a CIFAR-10 Parquet export in the Hugging Face image layout (train*.parquet, test*.parquet)"),
        ImageSet("parquet", "parquet", "parquet", {"train": ("train",), "test": ("test",)}, 0, None,
                 "a Parquet image export in the Hugging Face layout (train*.parquet, test*.parquet)"),
    )
}


def _idx_path(folder: Path, name: str) -> Path:
    plain = folder / name
    return plain if plain.is_file() else folder / f"{name}.gz"


def _parquet_files(folder: Path, prefix: str, hint: str) -> list[Path]:
    found = sorted(p for p in folder.rglob(f"{prefix}*.parquet") if p.is_file())
    if not found:
        raise DataError(f"{folder / (prefix + '*.parquet')}: missing; {hint}")
    return found


def split_folder(image_set: ImageSet, root: Path, folder: str | None) -> Path:
    return Path(folder).expanduser() if folder and Path(folder).is_absolute() else root / (folder or image_set.folder)


def load_split(name: str, split: str, root: Path, folder: str | None = None,
               label_column: str = "label") -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images N×C×H×W, int64 labels) of one split, read once per process and cached.
    Callers must not modify the returned tensors in place."""
    image_set = IMAGE_SETS[name]
    where = split_folder(image_set, root, folder)
    return _load(name, split, where, image_set.hint(where), label_column, _stamp(where))


def _stamp(folder: Path) -> float:
    """Changes when the folder's files change, so the cache never serves stale data."""
    try:
        return max((p.stat().st_mtime for p in folder.iterdir()), default=0.0)
    except OSError:
        return 0.0


@lru_cache(maxsize=8)
def _load(name: str, split: str, where: Path, hint: str, label_column: str,
          stamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    image_set = IMAGE_SETS[name]
    names = image_set.files[split]
    if image_set.format == "idx":
        return files.read_idx_pair(_idx_path(where, names[0]), _idx_path(where, names[1]), hint)
    if image_set.format == "svhn_mat":
        return files.read_svhn_mat(where / names[0], hint)
    if image_set.format == "cifar_python":
        return files.read_cifar_batches([where / n for n in names], hint)
    return files.read_parquet_images(_parquet_files(where, names[0], hint), hint, label_column)
