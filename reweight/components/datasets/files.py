"""Readers for the standard image-set file formats, each returning whole uint8 arrays.

Every reader returns ``(x, y)``: ``x`` uint8 of shape (N, C, H, W), ``y`` int64 of shape (N,).
Files are checked structurally while they are read (magic numbers, declared sizes against the
bytes present, counts of images against labels); any problem is a ``DataError`` naming the
file, what is wrong, and the hint the caller passes (how to get the file again).

A reader may also be given the published checksums of a set's canonical files (``Checksums``:
file name -> (example count, md5)). A file holding exactly the canonical count of examples is
taken to be the canonical file, and the md5 of the bytes already read (for IDX files: the
decompressed bytes, so a re-compressed ``.gz`` is still the canonical file) must match; a file
with any other count (an export of one's own, a small test fixture) is checked structurally only.

Formats:

- IDX (MNIST, Fashion-MNIST): ``*-idx3-ubyte`` / ``*-idx1-ubyte``, gzip-compressed or not.
- SVHN: ``train_32x32.mat`` / ``test_32x32.mat`` (MATLAB v5; ``X`` is 32×32×3×N, ``y`` uses 10
  for the digit 0, mapped here to 0).
- CIFAR-10 python batches: pickled dicts with ``data`` (N×3072 uint8) and ``labels``. They are
  read by a restricted unpickler that admits only what a batch holds (dicts, lists, bytes,
  strings, numbers and NumPy arrays), so a crafted file in the data root cannot run code: a
  pickle's checksum is known only once it is read, too late to refuse it by that.
- Parquet images in the Hugging Face layout: an image column of structs ``{bytes, path}``
  (PNG/JPEG bytes) and an integer label column. Decoded once, at load time.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from reweight.core.errors import DataError

IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
             0x0E: np.dtype(">f8")}


Checksums = Mapping[str, tuple[int, str]]  # file name (without .gz) -> (canonical example count, md5)


def _bad(path: Path, problem: str, hint: str) -> DataError:
    return DataError(f"{path}: {problem}; {hint}")


def _canonical_name(path: Path) -> str:
    return path.name.removesuffix(".gz")


def verify(path: Path, raw: bytes, count: int, checksums: Checksums | None, hint: str) -> None:
    """If ``path`` holds the canonical count of examples of a known file, its md5 must match."""
    known = (checksums or {}).get(_canonical_name(path))
    if known is None or count != known[0]:
        return
    actual = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    if actual != known[1]:
        raise _bad(path, f"checksum mismatch (md5 {actual}, expected {known[1]}): corrupted or not the original file",
                   hint)


def read_idx(path: Path, hint: str, checksums: Checksums | None = None) -> np.ndarray:
    """One IDX file (plain or ``.gz``) as a numpy array of its declared shape."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: missing; {hint}") from None
    except (OSError, EOFError, zlib.error) as error:
        raise _bad(path, f"corrupted ({error})", hint) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES or raw[3] == 0:
        raise _bad(path, "not an IDX file (bad magic number)", hint)
    dims = raw[3]
    if len(raw) < 4 + 4 * dims:
        raise _bad(path, "truncated header", hint)
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=dims, offset=4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = 4 + 4 * dims + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise _bad(path, f"{len(raw)} bytes but its header declares {expected} (truncated or corrupted)", hint)
    verify(path, raw, shape[0], checksums, hint)
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * dims).reshape(shape)


def _pair(x: np.ndarray, y: np.ndarray, path: Path, hint: str) -> tuple[torch.Tensor, torch.Tensor]:
    if len(x) != len(y):
        raise _bad(path, f"{len(x)} images but {len(y)} labels", hint)
    return torch.from_numpy(np.array(x, dtype=np.uint8)), torch.from_numpy(y.astype(np.int64))


def read_idx_pair(images: Path, labels: Path, hint: str,
                  checksums: Checksums | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    x = read_idx(images, hint, checksums)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise _bad(images, f"expected uint8 images of shape (N, H, W), got {x.dtype} {x.shape}", hint)
    y = read_idx(labels, hint, checksums)
    if y.ndim != 1:
        raise _bad(labels, f"expected one label per image, got shape {y.shape}", hint)
    return _pair(x[:, None], y, labels, hint)


def read_svhn_mat(path: Path, hint: str, checksums: Checksums | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    from scipy.io import loadmat

    if not path.is_file():
        raise DataError(f"{path}: missing; {hint}")
    try:
        raw = path.read_bytes()
        mat = loadmat(io.BytesIO(raw))
        x, y = mat["X"], mat["y"].reshape(-1)
    except Exception as error:  # noqa: BLE001 - scipy raises many kinds for a damaged file
        raise _bad(path, f"not a readable SVHN .mat file ({type(error).__name__}: {error})", hint) from None
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise _bad(path, f"expected X of shape (32, 32, 3, N), got {x.shape}", hint)
    verify(path, raw, x.shape[3], checksums, hint)
    y = np.where(y == 10, 0, y)
    return _pair(x.transpose(3, 2, 0, 1), y, path, hint)


class Refused(pickle.UnpicklingError):
    """A pickle asked for something a CIFAR batch never holds."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.what = f"{module}.{name}"


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR batch's pickle names: NumPy's reconstruction of an array or a
    scalar, in NumPy 1's spelling (the published files) and NumPy 2's, and the decoding of
    bytes (pickles of protocol 2 written by Python 3). Taken from NumPy itself, not imported by
    the names a file gives."""
    import codecs

    array = np.zeros(1, np.uint8)
    found: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                             ("_codecs", "encode"): codecs.encode}
    for core in ("numpy.core", "numpy._core"):
        found[f"{core}.multiarray", "_reconstruct"] = array.__reduce__()[0]
        found[f"{core}.multiarray", "scalar"] = np.uint8(0).__reduce__()[0]
        found[f"{core}.numeric", "_frombuffer"] = array.__reduce_ex__(5)[0]
    return found


class BatchUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes, strings, numbers and NumPy arrays, and nothing else."""

    admitted = _numpy_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.admitted[module, name]
        except KeyError:
            raise Refused(module, name) from None


def read_cifar_batches(paths: list[Path], hint: str,
                       checksums: Checksums | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: missing; {hint}")
        try:
            raw = path.read_bytes()
            batch = BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            labels = np.asarray(batch.get(b"labels", batch.get(b"fine_labels")), dtype=np.int64)
        except Refused as refused:
            raise _bad(path, f"refused: the pickle asks for {refused.what}, but a CIFAR python batch holds only dicts, "
                       "lists, bytes, strings, numbers and NumPy arrays", hint) from None
        except Exception as error:  # noqa: BLE001
            raise _bad(path, f"not a readable CIFAR python batch ({type(error).__name__}: {error})", hint) from None
        if data.ndim != 2 or data.shape[1] != 3072:
            raise _bad(path, f"expected data of shape (N, 3072), got {data.shape}", hint)
        if len(data) != len(labels):
            raise _bad(path, f"{len(data)} images but {len(labels)} labels", hint)
        verify(path, raw, len(data), checksums, hint)
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    return _pair(np.concatenate(xs), np.concatenate(ys), paths[-1], hint)


def read_parquet_images(paths: list[Path], hint: str, label_column: str = "label") -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of encoded images (Hugging Face ``Image`` feature) and integer labels."""
    import pyarrow.parquet as pq
    from PIL import Image

    xs, ys = [], []
    for path in paths:
        try:
            table = pq.read_table(path)
        except FileNotFoundError:
            raise DataError(f"{path}: missing; {hint}") from None
        except Exception as error:  # noqa: BLE001
            raise _bad(path, f"not a readable Parquet file ({type(error).__name__}: {error})", hint) from None
        image_column = next((field.name for field in table.schema
                             if hasattr(field.type, "get_field_index") and field.type.get_field_index("bytes") >= 0), None)
        if image_column is None:
            raise _bad(path, "no image column (a struct column with a 'bytes' field)", hint)
        if label_column not in table.column_names:
            raise _bad(path, f"no label column {label_column!r} (columns: {', '.join(table.column_names)})", hint)
        images = table.column(image_column).combine_chunks().field("bytes").to_pylist()
        try:
            decoded = [np.asarray(Image.open(io.BytesIO(blob))) for blob in images]
        except Exception as error:  # noqa: BLE001
            raise _bad(path, f"an image does not decode ({type(error).__name__}: {error})", hint) from None
        shapes = {a.shape for a in decoded}
        if len(shapes) != 1:
            raise _bad(path, f"images of different shapes {sorted(shapes)[:3]}; all must match", hint)
        array = np.stack(decoded)
        xs.append(array[:, None] if array.ndim == 3 else array.transpose(0, 3, 1, 2))
        ys.append(np.asarray(table.column(label_column).to_pylist(), dtype=np.int64))
    return _pair(np.concatenate(xs), np.concatenate(ys), paths[-1], hint)
