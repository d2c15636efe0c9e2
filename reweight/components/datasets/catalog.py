"""The image sets the project knows, where their files live under the data root, and how to
get them.

Folders follow what ``torchvision.datasets`` creates when it downloads into the data root, so
files fetched by torchvision (or by ``reweight data download``) are found as they are:

    <data_root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    <data_root>/FashionMNIST/raw/  (same names)
    <data_root>/svhn/{train,test}_32x32.mat
    <data_root>/cifar-10-batches-py/{data_batch_1..5,test_batch}
    <data_root>/cifar10-jpeg/{train,test}*.parquet        (any Hugging Face image Parquet export)

Each set whose files are published (all but the Parquet exports) carries the md5 of its
canonical files; a file holding the canonical number of examples must match it (see
``reweight.components.datasets.files``). For IDX files the md5 is that of the decompressed bytes.

The data root is, in order: the data set's ``data_root`` option, the ``REWEIGHT_DATA_ROOT``
environment variable, ``$XDG_CACHE_HOME/reweight/data`` (``~/.cache/reweight/data``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from reweight.components.datasets import files
from reweight.core.errors import DataError

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
    checksums: files.Checksums = field(default_factory=dict)  # file name -> (canonical count, md5)

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

# md5 of the decompressed IDX files (the .gz files differ with the compressor; their contents do not)
MNIST_MD5 = {
    "train-images-idx3-ubyte": (60000, "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (60000, "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (10000, "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (10000, "27ae3e4e09519cfbb04c329615203637"),
}
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte": (60000, "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte": (60000, "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte": (10000, "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte": (10000, "15d484375f8d13e6eb1aabb0c3f46965"),
}
# md5 of the files as published (the values torchvision's downloaders check)
SVHN_MD5 = {
    "train_32x32.mat": (73257, "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test_32x32.mat": (26032, "eb5a983be6a315427106f1b164d9cef3"),
}
CIFAR10_MD5 = {
    "data_batch_1": (10000, "c99cafc152244af753f735de768cd75f"),
    "data_batch_2": (10000, "d4bba439e000b95fd0a9bffe97cbabec"),
    "data_batch_3": (10000, "54ebc095f3ab1f0389bbae665268c751"),
    "data_batch_4": (10000, "634d18415352ddfa80567beed471001a"),
    "data_batch_5": (10000, "482c414d41f54cd18b22e5b47cb7c3cb"),
    "test_batch": (10000, "40351d587109b95175f43aff81a1287e"),
}

IMAGE_SETS = {
    s.name: s
    for s in (
        ImageSet("mnist", "MNIST/raw", "idx", IDX_FILES, 10, "MNIST", "MNIST (the four IDX files, .gz or not)",
                 MNIST_MD5),
        ImageSet("fashion_mnist", "FashionMNIST/raw", "idx", IDX_FILES, 10, "FashionMNIST",
                 "Fashion-MNIST (the four IDX files, .gz or not; Debian: package dataset-fashion-mnist)",
                 FASHION_MNIST_MD5),
        ImageSet("svhn", "svhn", "svhn_mat", {"train": ("train_32x32.mat",), "test": ("test_32x32.mat",)}, 10,
                 "SVHN", "SVHN format 2 (train_32x32.mat, test_32x32.mat from ufldl.stanford.edu/housenumbers)",
                 SVHN_MD5),
        ImageSet("cifar10", "cifar-10-batches-py", "cifar_python",
                 {"train": tuple(f"data_batch_{k}" for k in range(1, 6)), "test": ("test_batch",)}, 10, "CIFAR10",
                 "CIFAR-10 python version (cifar-10-python.tar.gz, extracted)", CIFAR10_MD5),
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
        return files.read_idx_pair(_idx_path(where, names[0]), _idx_path(where, names[1]), hint,
                                   image_set.checksums)
    if image_set.format == "svhn_mat":
        return files.read_svhn_mat(where / names[0], hint, image_set.checksums)
    if image_set.format == "cifar_python":
        return files.read_cifar_batches([where / n for n in names], hint, image_set.checksums)
    return files.read_parquet_images(_parquet_files(where, names[0], hint), hint, label_column)
