"""``table_file``: a CSV or Parquet table of numeric features with a label column, one row
per example. Labels may be integers (class indices) or strings (classes named in sorted
order); meta columns may be numbers, booleans or strings (coded in sorted order, the names
kept for per-group weights). Split by a column holding ``source`` / ``target`` / ``test`` or
per class by seeded fractions. CSV is read with the standard library, Parquet with pyarrow.
"""

from __future__ import annotations

import csv
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


class ColumnSplitOptions(FractionOptions):
    by: Literal["column", "fraction"] = Field(
        "fraction", description="column: a column naming each row's part; fraction: split per class by seed.")
    column: str = Field("split", description="The column holding source, target or test (by: column).")


class TableFileOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="The .csv or .parquet file.")
    label: str = Field("label", description="The label column (integers, or strings naming classes).")
    features: list[str] | None = Field(None, min_length=1, description="Feature columns (default: all the others).")
    meta: list[str] = Field(default_factory=list, description="Per-example columns kept as meta (e.g. corrupted).")
    split: ColumnSplitOptions = Field(default_factory=ColumnSplitOptions)
    noise: NoiseOptions = Field(default_factory=NoiseOptions, description="Optional label noise on the source.")


def read_columns(path: Path) -> dict[str, list]:
    if not path.is_file():
        raise DataError(f"{path}: missing")
    if path.suffix == ".csv":
        try:
            with path.open(newline="") as handle:
                rows = list(csv.reader(handle))
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise DataError(f"{path}: not a readable CSV file ({type(error).__name__}: {error})") from None
        if not rows:
            raise DataError(f"{path}: empty; expected a header row of column names")
        header, body = rows[0], rows[1:]
        short = next((n for n, row in enumerate(body, start=2) if len(row) != len(header)), None)
        if short is not None:
            raise DataError(f"{path}: line {short} has {len(body[short - 2])} fields but the header {len(header)}")
        return {name: [row[k] for row in body] for k, name in enumerate(header)}
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pydict()
        except Exception as error:  # noqa: BLE001
            raise DataError(f"{path}: not a readable Parquet file ({type(error).__name__}: {error})") from None
    raise DataError(f"{path}: unknown file type {path.suffix!r}; expected .csv or .parquet")


def numbers(values: list, path: Path, name: str) -> np.ndarray | None:
    """The column as float64, or None when a value is not a number."""
    try:
        return np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        return None


def coded(values: list, path: Path, name: str) -> tuple[torch.Tensor, list[str] | None]:
    """Numbers as they are (whole numbers as int64), anything else as codes of its sorted names."""
    found = numbers(values, path, name)
    if found is None:
        names = sorted({str(v) for v in values})
        return torch.tensor([names.index(str(v)) for v in values], dtype=torch.long), names
    if np.all(found == np.round(found)):
        return torch.from_numpy(found.astype(np.int64)), None
    return torch.from_numpy(found), None


def build_table_file(options: TableFileOptions, seed: int) -> BilevelData:
    path = Path(options.path).expanduser()
    columns = read_columns(path)
    split_column = [options.split.column] if options.split.by == "column" else []
    for name in [options.label, *options.meta, *split_column, *(options.features or [])]:
        if name not in columns:
            raise DataError(f"{path}: no column {name!r} (columns: {', '.join(columns)})")
    features = options.features or [c for c in columns if c not in {options.label, *options.meta, *split_column}]
    if not features:
        raise DataError(f"{path}: no feature columns besides the label and meta columns")
    matrix = []
    for name in features:
        values = numbers(columns[name], path, name)
        if values is None:
            raise DataError(f"{path}: feature column {name!r} is not numeric (list features, or move it to meta)")
        matrix.append(values)
    x = torch.from_numpy(np.stack(matrix, 1)).float()
    y, names = coded(columns[options.label], path, options.label)
    if y.dtype != torch.long:
        raise DataError(f"{path}: label column {options.label!r} holds fractions; labels are classes")
    if names is None:
        if int(y.min()) < 0:
            raise DataError(f"{path}: label column {options.label!r} has negative values; classes are 0, 1, ...")
        names = [str(k) for k in range(int(y.max()) + 1)]
    meta, categories = {}, {}
    for name in options.meta:
        meta[name], value_names = coded(columns[name], path, name)
        if value_names is not None:
            categories[name] = value_names
    whole = Part(x, y, meta, categories)
    if options.split.by == "fraction":
        parts = split_by_fraction(whole, options.split, len(names), seed, str(path))
    else:
        where = [str(v) for v in columns[options.split.column]]
        unknown = sorted(set(where) - set(PARTS))
        if unknown:
            raise DataError(f"{path}: column {options.split.column!r} holds {unknown[0]!r}; "
                            "expected source, target or test")
        parts = {part: whole.take(torch.tensor([k for k, v in enumerate(where) if v == part], dtype=torch.long))
                 for part in PARTS}
    return assemble(parts, len(names), names, options.noise, seed, str(path))
