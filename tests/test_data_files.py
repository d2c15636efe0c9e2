"""A user's own files as data sets: image folders, tensors files, tables. Readers on generated
files, one-line errors for each problem, files that would run code refused, and each
benchmark config end to end through the CLI."""

from __future__ import annotations

import csv
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from reweight import cli
from reweight.components.datasets.image_folder import ImageFolderDataset, ImageFolderOptions, build_image_folder
from reweight.components.datasets.table_file import TableFileOptions, build_table_file
from reweight.components.datasets.tensors_file import TensorsFileOptions, build_tensors_file
from reweight.core.errors import DataError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
CLASSES = ("cat", "dog", "owl")


def write_images(root: Path, per_class: int, size: int = 10, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            pixels = (rng.integers(0, 60, (size, size, 3)) + 80 * k).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{n}.png")


def tensors(n: int, seed: int, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    return (rng.normal(size=(n, 4)) + 2.0 * y[:, None]).astype(np.float32), y.astype(np.int64)


def write_table(path: Path, n: int = 90) -> None:
    x, y = tensors(n, 0)
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["f0", "f1", "f2", "f3", "label", "annotator"])
        for row, label, k in zip(x, y, range(n)):
            out.writerow([*row.tolist(), CLASSES[label], f"a{k % 3}"])


# --- image folder -----------------------------------------------------------------------

def test_image_folder_by_folders_reads_every_image_at_one_shape(tmp_path):
    for part, count in (("source", 6), ("target", 2), ("test", 3)):
        write_images(tmp_path / part, count, size=10 + count)  # sizes differ: resized to one
    data = build_image_folder(ImageFolderOptions(path=str(tmp_path), size=8, mode="L"), seed=0)
    assert data.source.x.shape == (18, 1, 8, 8) and data.source.x.dtype == torch.uint8
    assert (len(data.target), len(data.test), data.source_classes) == (6, 9, 3)
    assert data.source.categories["label"] == list(CLASSES)
    means = [data.test.x[data.test.y == k].float().mean() for k in range(3)]
    assert means[0] < means[1] < means[2]  # the class's folder decides its label


def test_image_folder_dataset_is_map_style_and_stacks_to_the_same_tensors(tmp_path):
    write_images(tmp_path, 4)
    dataset = ImageFolderDataset(tmp_path, 6, "RGB")
    assert isinstance(dataset, torch.utils.data.Dataset) and len(dataset) == 12
    x, y = dataset[5]
    assert x.shape == (3, 6, 6) and x.dtype == torch.uint8 and int(y) == 1
    loaded = next(iter(torch.utils.data.DataLoader(dataset, batch_size=12)))
    stacked = dataset.stacked()
    assert torch.equal(loaded[0], stacked.x) and torch.equal(loaded[1], stacked.y)


def test_image_folder_by_fraction_is_seeded_disjoint_and_per_class(tmp_path):
    write_images(tmp_path, 10)
    options = ImageFolderOptions(path=str(tmp_path), size=6, split={"by": "fraction", "target": 0.2, "test": 0.3})
    data = build_image_folder(options, seed=1)
    assert torch.bincount(data.target.y).tolist() == [2, 2, 2] and torch.bincount(data.test.y).tolist() == [3, 3, 3]
    assert len(data.source) == 15
    rows = {tuple(x.flatten().tolist()) for part in (data.source, data.target, data.test) for x in part.x}
    assert len(rows) == 30  # every image in exactly one part
    again, other = build_image_folder(options, seed=1), build_image_folder(options, seed=2)
    assert torch.equal(again.target.x, data.target.x) and not torch.equal(other.target.x, data.target.x)


def test_image_folder_noise_marks_corrupted(tmp_path):
    write_images(tmp_path, 10)
    options = ImageFolderOptions(path=str(tmp_path), size=6, split={"by": "fraction"}, noise={"rate": 0.5})
    source = build_image_folder(options, seed=0).source
    assert int(source.meta["corrupted"].sum()) == round(0.5 * len(source))
    assert torch.equal(source.meta["corrupted"], source.y != source.meta["clean_label"])


def test_image_folder_errors_are_one_line(tmp_path):
    with pytest.raises(DataError, match="missing or not a folder"):
        build_image_folder(ImageFolderOptions(path=str(tmp_path / "nowhere")), 0)
    write_images(tmp_path / "source", 3)
    with pytest.raises(DataError, match="no target, test folder; split.by: folders needs"):
        build_image_folder(ImageFolderOptions(path=str(tmp_path)), 0)
    write_images(tmp_path / "target", 1)
    write_images(tmp_path / "test", 1)
    (tmp_path / "test" / "owl").rename(tmp_path / "test" / "emu")
    with pytest.raises(DataError, match=r"classes \['cat', 'dog', 'emu'\] differ from the source's"):
        build_image_folder(ImageFolderOptions(path=str(tmp_path)), 0)
    (tmp_path / "test" / "emu").rename(tmp_path / "test" / "owl")
    (tmp_path / "target" / "dog" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"dog/0.png: not a readable image"):
        build_image_folder(ImageFolderOptions(path=str(tmp_path)), 0)
    (tmp_path / "target" / "dog" / "0.png").unlink()
    with pytest.raises(DataError, match=r"dog: no image files"):
        build_image_folder(ImageFolderOptions(path=str(tmp_path)), 0)


def test_image_folder_too_small_a_class_for_fractions(tmp_path):
    write_images(tmp_path, 2)
    with pytest.raises(DataError, match="class 0 has 2 examples, too few to split"):
        build_image_folder(ImageFolderOptions(path=str(tmp_path), split={"by": "fraction"}), 0)


# --- tensors file -----------------------------------------------------------------------

def keyed_arrays() -> dict[str, np.ndarray]:
    arrays = {}
    for part, n, seed in (("source", 60, 0), ("target", 9, 1), ("test", 30, 2)):
        arrays[f"{part}_x"], arrays[f"{part}_y"] = tensors(n, seed)
    arrays["source_corrupted"] = np.arange(60) % 4 == 0
    arrays["source_annotator"] = (np.arange(60) % 5).astype(np.int32)
    return arrays


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_tensors_file_by_keys_keeps_meta_columns(tmp_path, suffix):
    arrays = keyed_arrays()
    path = tmp_path / f"data{suffix}"
    if suffix == ".npz":
        np.savez(path, **arrays)
    else:
        torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path)
    data = build_tensors_file(TensorsFileOptions(path=str(path)), seed=0)
    assert torch.equal(data.source.x, torch.from_numpy(arrays["source_x"]))
    assert torch.equal(data.test.y, torch.from_numpy(arrays["test_y"]))
    assert set(data.source.meta) == {"corrupted", "annotator"} and data.source.meta["corrupted"].dtype == torch.bool
    assert data.source_classes == data.target_classes == 3


def test_tensors_file_by_fraction_splits_one_set(tmp_path):
    x, y = tensors(60, 0)
    np.savez(tmp_path / "one.npz", x=x, y=y, group=np.arange(60) % 2)
    data = build_tensors_file(TensorsFileOptions(path=str(tmp_path / "one.npz"),
                                                 split={"by": "fraction", "target": 0.25, "test": 0.25}), seed=0)
    assert (len(data.source), len(data.target), len(data.test)) == (30, 15, 15)
    assert set(data.source.meta) == {"group"}


@pytest.mark.parametrize(("change", "expected"), [
    (lambda a: a.pop("target_y"), "no key 'target_y'"),
    (lambda a: a.update(test_y=a["test_y"][:-1]), "test_x has 30 rows but test_y 29"),
    (lambda a: a.update(source_y=a["source_y"].astype(np.float32)), "source_y must be 1-d integer class labels"),
    (lambda a: a.update(source_x=a["source_x"].astype(np.int32)), "source_x must be uint8 or floating point"),
    (lambda a: a.update(source_group=np.zeros(3)), r"source_group must hold one value per example \(60\)"),
    (lambda a: a.update(target_x=a["target_x"][:, :3]), r"target inputs have shape \(3,\) but source inputs \(4,\)"),
], ids=["missing-key", "length", "float-labels", "int-inputs", "short-column", "shape"])
def test_tensors_file_errors_are_one_line(tmp_path, change, expected):
    arrays = keyed_arrays()
    change(arrays)
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=expected):
        build_tensors_file(TensorsFileOptions(path=str(tmp_path / "d.npz")), 0)


def test_tensors_file_missing_or_of_unknown_type(tmp_path):
    with pytest.raises(DataError, match="d.npz: missing"):
        build_tensors_file(TensorsFileOptions(path=str(tmp_path / "d.npz")), 0)
    (tmp_path / "d.h5").write_bytes(b"")
    with pytest.raises(DataError, match="unknown file type '.h5'"):
        build_tensors_file(TensorsFileOptions(path=str(tmp_path / "d.h5")), 0)
    (tmp_path / "d.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable .npz file"):
        build_tensors_file(TensorsFileOptions(path=str(tmp_path / "d.npz")), 0)


class Trap:
    """Unpickling this runs code: it would create the file ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_an_npz_with_an_object_array_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "ran"
    arrays = keyed_arrays()
    arrays["source_x"] = np.array([Trap(str(marker))] * 60, dtype=object)
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match="refused: an array holds Python objects"):
        build_tensors_file(TensorsFileOptions(path=str(tmp_path / "d.npz")), 0)
    assert not marker.exists()
    pickle.loads(pickle.dumps(Trap(str(marker))))  # the trap is real: a plain unpickling runs it
    assert marker.exists()


def test_a_pt_with_a_pickled_object_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"source_x": Trap(str(marker))}, tmp_path / "d.pt")
    with pytest.raises(DataError, match="refused: it holds more than tensors"):
        build_tensors_file(TensorsFileOptions(path=str(tmp_path / "d.pt")), 0)
    assert not marker.exists()
    torch.load(tmp_path / "d.pt", weights_only=False)
    assert marker.exists()


# --- table file -------------------------------------------------------------------------

def test_table_csv_string_labels_and_meta_become_classes_and_categories(tmp_path):
    write_table(tmp_path / "t.csv")
    data = build_table_file(TableFileOptions(path=str(tmp_path / "t.csv"), meta=["annotator"]), seed=0)
    assert data.source.x.shape[1] == 4 and data.source.x.dtype == torch.float32
    assert data.source.categories == {"annotator": ["a0", "a1", "a2"], "label": list(CLASSES)}
    assert len(data.source) + len(data.target) + len(data.test) == 90 and data.source_classes == 3


def test_table_parquet_with_a_split_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, y = tensors(40, 0)
    where = ["source"] * 30 + ["target"] * 4 + ["test"] * 6
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "y": y, "part": where, "corrupted": np.arange(40) % 2 == 0}),
                   tmp_path / "t.parquet")
    options = TableFileOptions(path=str(tmp_path / "t.parquet"), label="y", features=["a", "b"], meta=["corrupted"],
                               split={"by": "column", "column": "part"})
    data = build_table_file(options, seed=0)
    assert (len(data.source), len(data.target), len(data.test)) == (30, 4, 6)
    assert torch.allclose(data.test.x[:, 1], torch.from_numpy(x[34:, 1]))
    assert data.source.meta["corrupted"].sum() == 15


@pytest.mark.parametrize(("options", "expected"), [
    ({"label": "kind"}, re.escape("no column 'kind' (columns: f0, f1, f2, f3, label, annotator)")),
    ({}, "feature column 'annotator' is not numeric"),
    ({"meta": ["annotator"], "split": {"by": "column"}}, "no column 'split'"),
    ({"features": ["f1"], "label": "f0"}, "label column 'f0' holds fractions"),
], ids=["missing-label", "text-feature", "missing-split-column", "float-labels"])
def test_table_errors_are_one_line(tmp_path, options, expected):
    write_table(tmp_path / "t.csv")
    with pytest.raises(DataError, match=expected):
        build_table_file(TableFileOptions(path=str(tmp_path / "t.csv"), **options), 0)


def test_table_ragged_csv_names_the_line(tmp_path):
    (tmp_path / "t.csv").write_text("f0,label\n1.0,0\n2.0\n")
    with pytest.raises(DataError, match="line 3 has 1 fields but the header 2"):
        build_table_file(TableFileOptions(path=str(tmp_path / "t.csv")), 0)


# --- each benchmark config, end to end ---------------------------------------------------

SMALL = ["seeds=[0]", "train.steps=4", "train.eval_every=2", "train.source_batch_size=8"]


def run(config: str, path: Path, *extra: str, capsys) -> tuple[int, str, str]:
    sets = [arg for item in [*SMALL, f"data.path={path}", *extra] for arg in ("--set", item)]
    code = cli.main(["run", str(BENCHMARKS / config), *sets])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_image_folder_config_runs(tmp_path, tracking_dir, capsys):
    write_images(tmp_path / "images", 10, size=12)
    code, out, err = run("image_folder.yaml", tmp_path / "images", "data.noise.rate=0.3", capsys=capsys)
    assert code == 0, err
    assert "test_accuracy=" in out and "weight_noise_auc=" in out


def test_tensors_file_config_runs_and_reports_the_weight_metrics(tmp_path, tracking_dir, capsys):
    np.savez(tmp_path / "d.npz", **keyed_arrays())
    code, out, err = run("tensors_file.yaml", tmp_path / "d.npz", capsys=capsys)
    assert code == 0, err
    assert "weight_noise_auc=" in out


def test_table_file_config_runs_with_one_weight_per_annotator(tmp_path, tracking_dir, capsys):
    write_table(tmp_path / "t.csv")
    code, out, err = run("table_file.yaml", tmp_path / "t.csv", capsys=capsys)
    assert code == 0, err
    assert "test_accuracy=" in out


def test_a_bad_file_through_the_cli_is_one_line(tmp_path, tracking_dir, capsys):
    (tmp_path / "t.csv").write_text("f0,label\n1.0,0\n2.0\n")
    code, _, err = run("table_file.yaml", tmp_path / "t.csv", "data.meta=[]", "granularity=per_sample", capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {tmp_path / 't.csv'}: line 3 has 1 fields")


def test_plugins_shows_the_options(capsys):
    assert cli.main(["plugins", "image_folder"]) == 0
    out = capsys.readouterr().out
    assert "split.by" in out and "folders | fraction" in out and "mode" in out
