"""``tensors_file``: inputs, labels and per-example columns saved by the user as ``.npz``
(``numpy.savez``) or ``.pt`` (``torch.save`` of a dict of tensors).

Keys, by ``split.by``:

- ``keys``: ``source_x``, ``source_y``, ``target_x``, ``target_y``, ``test_x``, ``test_y``, plus
  any ``<part>_<column>`` (e.g. ``source_corrupted``, ``source_annotator``) as a meta column;
- ``fraction``: ``x``, ``y`` and any ``<column>``, split per class by seeded fractions.

Neither reader can run code a file carries: ``numpy.load(allow_pickle=False)`` refuses object
arrays, ``torch.load(weights_only=True)`` admits tensors and plain containers only.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from reweight.components.datasets.user_splits import (
    PARTS,
    FractionOptions,
    NoiseOptions,
    Part,
    assemble,
    split_by_fraction,
)
from reweight.core.data import BilevelData
from reweight.core.errors import DataError


class KeysSplitOptions(FractionOptions):
    by: Literal["keys", "fraction"] = Field(
        "keys", description="keys: source_x, source_y, target_x, ...; fraction: x, y split per class.")


class TensorsFileOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="The .npz or .pt file.")
    split: KeysSplitOptions = Field(default_factory=KeysSplitOptions)
    noise: NoiseOptions = Field(default_factory=NoiseOptions, description="Optional label noise on the source.")


def read_arrays(path: Path) -> dict[str, torch.Tensor]:
    """Every array of the file as a tensor, without unpickling anything."""
    if not path.is_file():
        raise DataError(f"{path}: missing")
    if path.suffix == ".npz":
        if not zipfile.is_zipfile(path):
            raise DataError(f"{path}: not a readable .npz file (not a zip archive; save it with numpy.savez)")
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {key: torch.from_numpy(np.array(archive[key])) for key in archive.files}
        except ValueError as error:
            if "allow_pickle" in str(error):
                raise DataError(f"{path}: refused: an array holds Python objects (a pickle); save numeric or "
                                "boolean arrays only") from None
            raise DataError(f"{path}: not a readable .npz file ({error})") from None
        except (OSError, zipfile.BadZipFile) as error:
            raise DataError(f"{path}: not a readable .npz file ({type(error).__name__}: {error})") from None
    if path.suffix == ".pt":
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DataError(f"{path}: refused: it holds more than tensors and plain containers ({first})") from None
        except Exception as error:  # noqa: BLE001 - a damaged zip or pickle raises many kinds
            raise DataError(f"{path}: not a readable .pt file ({type(error).__name__}: {error})") from None
        if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise DataError(f"{path}: expected a dict of tensors (torch.save({{'source_x': ..., ...}}))")
        return {str(k): v for k, v in loaded.items()}
    raise DataError(f"{path}: unknown file type {path.suffix!r}; expected .npz or .pt")


def labels(y: torch.Tensor, path: Path, key: str) -> torch.Tensor:
    if y.dim() != 1 or y.dtype.is_floating_point or y.is_complex() or y.dtype == torch.bool:
        raise DataError(f"{path}: {key} must be 1-d integer class labels, got {y.dtype} of shape {tuple(y.shape)}")
    return y.long()


def part_of(arrays: dict[str, torch.Tensor], prefix: str, path: Path) -> Part:
    for key in (f"{prefix}x", f"{prefix}y"):
        if key not in arrays:
            raise DataError(f"{path}: no key {key!r} (keys: {', '.join(sorted(arrays)) or 'none'})")
    x, y = arrays[f"{prefix}x"], labels(arrays[f"{prefix}y"], path, f"{prefix}y")
    if x.dtype not in (torch.uint8, torch.float16, torch.float32, torch.float64):
        raise DataError(f"{path}: {prefix}x must be uint8 or floating point, got {x.dtype}")
    if len(x) != len(y):
        raise DataError(f"{path}: {prefix}x has {len(x)} rows but {prefix}y {len(y)}")
    meta = {}
    others = (key for key in arrays if key.startswith(prefix) and key not in (f"{prefix}x", f"{prefix}y"))
    for key in sorted(others):
        column = arrays[key]
        if prefix == "" and any(key.startswith(f"{part}_") for part in PARTS):
            continue
        if column.dim() != 1 or len(column) != len(y):
            raise DataError(f"{path}: {key} must hold one value per example ({len(y)}), got shape {tuple(column.shape)}")
        meta[key.removeprefix(prefix)] = column
    return Part(x.float() if x.dtype in (torch.float16, torch.float64) else x, y, meta)


def build_tensors_file(options: TensorsFileOptions, seed: int) -> BilevelData:
    path = Path(options.path).expanduser()
    arrays = read_arrays(path)
    if options.split.by == "fraction":
        whole = part_of(arrays, "", path)
        classes = int(whole.y.max()) + 1 if len(whole.y) else 0
        parts = split_by_fraction(whole, options.split, classes, seed, str(path))
    else:
        parts = {part: part_of(arrays, f"{part}_", path) for part in PARTS}
        classes = max(int(p.y.max()) + 1 for p in parts.values() if len(p.y))
    if min(int(p.y.min()) for p in parts.values() if len(p.y)) < 0:
        raise DataError(f"{path}: labels must be class indices 0, 1, ..., got a negative one")
    return assemble(parts, classes, [str(k) for k in range(classes)], options.noise, seed, str(path))
