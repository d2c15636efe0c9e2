"""Small image sets written in the real file formats, in the layout of a data root, so the
readers and the benchmark configs can be tested without any downloaded data."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np


def images(n_per_class: int, classes: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images whose mean brightness depends on the class, labels grouped by class."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = rng.integers(0, 128, size=(len(y), *shape)).astype(np.uint8) + (y * (120 // classes)).astype(np.uint8).reshape(
        -1, *([1] * len(shape)))
    return x.astype(np.uint8), y


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, n_per_class: int = 12, test_per_class: int = 4, size: int = 28, gz: bool = True,
                  seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": images(n_per_class, 10, (size, size), seed), "test": images(test_per_class, 10, (size, size), seed + 1)}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = splits[split]
        for name, array in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
            blob = idx_bytes(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
            else:
                (folder / name).write_bytes(blob)
    return splits


def write_svhn(folder: Path, n_per_class: int = 12, test_per_class: int = 4, seed: int = 2):
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": images(n_per_class, 10, (3, 32, 32), seed), "test": images(test_per_class, 10, (3, 32, 32), seed + 1)}
    for split, (x, y) in splits.items():
        savemat(folder / f"{split}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": np.where(y == 0, 10, y)[:, None]})
    return splits


def write_cifar(folder: Path, n_per_class: int = 12, test_per_class: int = 4, seed: int = 4, batches: int = 5):
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": images(n_per_class, 10, (3, 32, 32), seed), "test": images(test_per_class, 10, (3, 32, 32), seed + 1)}
    x, y = splits["train"]
    for k, part in enumerate(np.array_split(np.arange(len(y)), batches), start=1):
        with (folder / f"data_batch_{k}").open("wb") as handle:
            pickle.dump({b"data": x[part].reshape(len(part), -1), b"labels": y[part].tolist()}, handle)
    x, y = splits["test"]
    with (folder / "test_batch").open("wb") as handle:
        pickle.dump({b"data": x.reshape(len(y), -1), b"labels": y.tolist()}, handle)
    return splits


def write_parquet(folder: Path, n_per_class: int = 12, test_per_class: int = 4, seed: int = 6, image_format: str = "PNG",
                  shape: tuple[int, ...] = (3, 32, 32), files: dict[str, str] | None = None):
    """Hugging Face layout: an ``image`` struct column {bytes, path} and a ``label`` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    splits = {"train": images(n_per_class, 10, shape, seed), "test": images(test_per_class, 10, shape, seed + 1)}
    files = files or {"train": "train.parquet", "test": "test.parquet"}
    for split, (x, y) in splits.items():
        blobs = []
        for image in x:
            buffer = io.BytesIO()
            Image.fromarray(image.transpose(1, 2, 0) if image.ndim == 3 else image).save(buffer, format=image_format)
            blobs.append({"bytes": buffer.getvalue(), "path": None})
        path = folder / files[split]
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"image": blobs, "label": y.tolist()}), path)
    return splits


def write_data_root(root: Path) -> Path:
    """Every image set the benchmarks name, small, in the standard folders."""
    write_idx_set(root / "MNIST" / "raw", seed=0)
    write_idx_set(root / "FashionMNIST" / "raw", seed=10, gz=False)
    write_svhn(root / "svhn")
    write_cifar(root / "cifar-10-batches-py")
    write_parquet(root / "cifar10-jpeg", image_format="JPEG")
    return root
