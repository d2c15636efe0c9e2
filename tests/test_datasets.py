"""Real-data layer on generated fixtures in each file format: readers, damaged and missing
files, label noise and per-class sampling (properties), data-set plugins, conv models with
every hypergradient method, and the baselines' effect on θ."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reweight.components.datasets import transforms
from reweight.components.datasets.catalog import load_split
from reweight.components.datasets.files import read_idx
from reweight.components.datasets.vision import NoisyLabelsOptions, TransferOptions, build_noisy_labels, build_transfer
from reweight.core.errors import DataError
from tests import datafiles


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return datafiles.write_data_root(tmp_path_factory.mktemp("data"))


# --- readers -----------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_round_trips(tmp_path, gz):
    written = datafiles.write_idx_set(tmp_path / "MNIST" / "raw", gz=gz)
    for split, (x, y) in written.items():
        got_x, got_y = load_split("mnist", split, tmp_path)
        assert got_x.dtype == torch.uint8 and got_x.shape == (len(y), 1, 28, 28)
        assert np.array_equal(got_x[:, 0].numpy(), x) and np.array_equal(got_y.numpy(), y)


def test_svhn_reader_maps_label_10_to_0_and_keeps_pixels(tmp_path):
    written = datafiles.write_svhn(tmp_path / "svhn")
    x, y = load_split("svhn", "train", tmp_path)
    assert x.shape == (120, 3, 32, 32) and set(y.tolist()) == set(range(10))
    assert np.array_equal(x.numpy(), written["train"][0]) and np.array_equal(y.numpy(), written["train"][1])


def test_cifar_python_reader_concatenates_batches(tmp_path):
    written = datafiles.write_cifar(tmp_path / "cifar-10-batches-py")
    for split in ("train", "test"):
        x, y = load_split("cifar10", split, tmp_path)
        assert np.array_equal(x.numpy(), written[split][0]) and np.array_equal(y.numpy(), written[split][1])


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_and_numpy_spelling_are_read(tmp_path, protocol):
    """The restricted unpickler admits what a real batch holds: NumPy arrays, also under NumPy
    1's module names (the published files), and bytes as protocol 2 writes them."""
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    written = datafiles.write_cifar(folder)
    x, y = written["test"]
    batch = {b"batch_label": b"testing batch 1 of 1", b"data": x.reshape(len(y), -1), b"labels": y.tolist(),
             b"filenames": [b"%d.png" % k for k in range(len(y))], b"count": np.int64(len(y))}
    raw = pickle.dumps(batch, protocol=protocol)
    if protocol == 2:  # names as a NumPy 1 pickle spells them
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    (folder / "test_batch").write_bytes(raw)
    got_x, got_y = load_split("cifar10", "test", tmp_path)
    assert np.array_equal(got_x.numpy(), x) and np.array_equal(got_y.numpy(), y)


@pytest.mark.parametrize("shape", [(3, 32, 32), (28, 28)], ids=["rgb", "gray"])
def test_parquet_reader_hugging_face_layout(tmp_path, shape):
    files = {"train": "plain_text/train-00000-of-00001.parquet", "test": "plain_text/test-00000-of-00001.parquet"}
    written = datafiles.write_parquet(tmp_path / "export", shape=shape, files=files)
    x, y = load_split("parquet", "train", tmp_path, folder="export")
    expected = written["train"][0] if len(shape) == 3 else written["train"][0][:, None]
    assert np.array_equal(x.numpy(), expected) and np.array_equal(y.numpy(), written["train"][1])


def damage(path, how):
    raw = path.read_bytes()
    path.write_bytes({"truncate": raw[: len(raw) // 2], "garbage": b"not a data file at all" * 10}[how])


@pytest.mark.parametrize("how", ["truncate", "garbage"])
@pytest.mark.parametrize(("name", "folder", "file"), [
    ("mnist", "MNIST/raw", "train-images-idx3-ubyte.gz"),
    ("fashion_mnist", "FashionMNIST/raw", "train-labels-idx1-ubyte"),
    ("svhn", "svhn", "train_32x32.mat"),
    ("cifar10", "cifar-10-batches-py", "data_batch_3"),
    ("cifar10_jpeg", "cifar10-jpeg", "train.parquet"),
])
def test_damaged_file_is_a_data_error_naming_it(tmp_path, name, folder, file, how):
    datafiles.write_data_root(tmp_path)
    damage(tmp_path / folder / file, how)
    with pytest.raises(DataError) as caught:
        load_split(name, "train", tmp_path)
    message = str(caught.value)
    assert message.startswith(str(tmp_path / folder / file)) and "\n" not in message


def test_idx_declared_size_must_match(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(datafiles.idx_bytes(np.zeros((4, 5, 5), np.uint8)) + b"\0"))
    with pytest.raises(DataError, match="header declares"):
        read_idx(path, "hint")


@pytest.mark.parametrize(("name", "missing", "how"), [
    ("mnist", "MNIST/raw/train-images-idx3-ubyte.gz", "reweight data download mnist"),
    ("svhn", "svhn/train_32x32.mat", "reweight data download svhn"),
    ("cifar10", "cifar-10-batches-py/data_batch_1", "reweight data download cifar10"),
    ("cifar10_jpeg", "cifar10-jpeg/train*.parquet", "no automatic download"),
])
def test_missing_file_names_it_and_how_to_get_it(tmp_path, name, missing, how):
    with pytest.raises(DataError) as caught:
        load_split(name, "train", tmp_path)
    assert str(caught.value).startswith(f"{tmp_path / missing}: missing;") and how in str(caught.value)


# --- transformations (properties) --------------------------------------------------------

labels = st.integers(2, 12).flatmap(lambda c: st.tuples(st.just(c), st.lists(st.integers(0, c - 1), min_size=1, max_size=300)))


@settings(max_examples=60, deadline=None)
@given(labels, st.floats(0, 1), st.sampled_from(["uniform", "pair"]), st.integers(0, 10_000))
def test_noise_has_the_exact_rate_and_marks_exactly_the_changed_labels(classes_and_y, rate, kind, seed):
    classes, y = classes_and_y
    y = torch.tensor(y)
    noisy, corrupted = transforms.corrupt_labels(y, rate, classes, kind, torch.Generator().manual_seed(seed))
    assert int(corrupted.sum()) == round(rate * len(y))
    assert torch.equal(corrupted, noisy != y)
    assert int(noisy.min()) >= 0 and int(noisy.max()) < classes
    if kind == "pair":
        assert torch.equal(noisy[corrupted], (y[corrupted] + 1) % classes)
    again = transforms.corrupt_labels(y, rate, classes, kind, torch.Generator().manual_seed(seed))
    assert torch.equal(again[0], noisy)


def test_uniform_noise_spreads_over_the_other_classes():
    y = torch.zeros(20_000, dtype=torch.long)
    noisy, _ = transforms.corrupt_labels(y, 1.0, 5, "uniform", torch.Generator().manual_seed(0))
    share = torch.bincount(noisy, minlength=5)[1:] / 20_000
    assert torch.allclose(share, torch.full((4,), 0.25), atol=0.02)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 8), st.integers(1, 6), st.integers(0, 5), st.integers(0, 10_000))
def test_per_class_sampling_is_balanced_distinct_and_reproducible(classes, n, extra, seed):
    counts = torch.randint(n, n + extra + 1, (classes,), generator=torch.Generator().manual_seed(seed))
    y = torch.repeat_interleave(torch.arange(classes), counts)
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed + 1))]
    chosen = transforms.per_class_indices(y, n, classes, torch.Generator().manual_seed(seed))
    assert len(set(chosen.tolist())) == len(chosen) == n * classes
    assert torch.equal(torch.bincount(y[chosen], minlength=classes), torch.full((classes,), n))
    assert torch.equal(chosen, transforms.per_class_indices(y, n, classes, torch.Generator().manual_seed(seed)))


def test_per_class_sampling_depends_on_the_seed_and_rejects_small_classes():
    y = torch.arange(1000) % 10
    a = transforms.per_class_indices(y, 5, 10, torch.Generator().manual_seed(0))
    b = transforms.per_class_indices(y, 5, 10, torch.Generator().manual_seed(1))
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="class 0 has 100 examples"):
        transforms.per_class_indices(y, 101, 10, torch.Generator())


def test_class_subset_relabels_in_the_given_order():
    x = torch.arange(10)[:, None]
    x_kept, y_kept = transforms.select_classes(x, torch.arange(10), [7, 5, 6])
    assert x_kept.flatten().tolist() == [5, 6, 7] and y_kept.tolist() == [1, 2, 0]


def test_grayscale_and_resize_keep_a_flat_image_flat():
    x = torch.full((3, 3, 32, 32), 77, dtype=torch.uint8)
    out = transforms.resize(transforms.grayscale(x), 28)
    assert out.shape == (3, 1, 28, 28) and out.dtype == torch.uint8 and bool((out == 77).all())


# --- data-set plugins --------------------------------------------------------------------

def test_noisy_labels_builds_disjoint_target_and_noisy_source(data_root):
    options = NoisyLabelsOptions(dataset="cifar10", data_root=str(data_root), target_per_class=3,
                                 noise={"kind": "pair", "rate": 0.5})
    data = build_noisy_labels(options, seed=1)
    assert data.source.x.dtype == torch.uint8 and data.source.x.shape[1:] == (3, 32, 32)
    assert len(data.target) == 30 and len(data.source) == 90 and len(data.test) == 40
    assert torch.equal(torch.bincount(data.target.y), torch.full((10,), 3))
    meta = data.source.meta
    assert int(meta["corrupted"].sum()) == 45 and torch.equal(meta["corrupted"], data.source.y != meta["clean_label"])
    again = build_noisy_labels(options, seed=1)
    assert torch.equal(again.target.x, data.target.x) and torch.equal(again.source.y, data.source.y)
    # no target image is also a source image (images differ by their random pixels)
    flat_s, flat_t = data.source.x.flatten(1), data.target.x.flatten(1)
    assert not (flat_t[:, None] == flat_s[None]).all(-1).any()


def test_transfer_svhn_to_mnist_shapes_and_classes(data_root):
    options = TransferOptions(
        data_root=str(data_root),
        source={"dataset": "svhn", "classes": [0, 1, 2, 3, 4], "grayscale": True, "size": 28},
        target={"dataset": "mnist", "classes": [5, 6, 7, 8, 9], "per_class": 4},
    )
    data = build_transfer(options, seed=0)
    assert data.source.x.shape == (60, 1, 28, 28) and data.target.x.shape == (20, 1, 28, 28)
    assert set(data.source.y.tolist()) == set(range(5)) and torch.equal(torch.bincount(data.target.y), torch.full((5,), 4))
    assert len(data.test) == 20 and set(data.test.y.tolist()) == set(range(5))
    assert data.source_classes == data.target_classes == 5


def test_transfer_with_mismatched_shapes_says_what_to_set(data_root):
    options = TransferOptions(data_root=str(data_root), source={"dataset": "svhn"}, target={"dataset": "mnist", "per_class": 2})
    with pytest.raises(DataError, match="grayscale: true, size: 28"):
        build_transfer(options, seed=0)


def test_too_many_per_class_names_the_field(data_root):
    with pytest.raises(DataError, match="data.target_per_class: class 0 has 12 examples"):
        build_noisy_labels(NoisyLabelsOptions(dataset="mnist", data_root=str(data_root), target_per_class=13), 0)


# --- checksums of canonical files --------------------------------------------------------

def file_md5(path) -> str:
    import hashlib

    raw = path.read_bytes()
    return hashlib.md5(gzip.decompress(raw) if path.suffix == ".gz" else raw).hexdigest()


@pytest.mark.parametrize(("name", "folder", "file", "count"), [
    ("mnist", "MNIST/raw", "train-images-idx3-ubyte.gz", 120),
    ("fashion_mnist", "FashionMNIST/raw", "train-labels-idx1-ubyte", 120),
    ("svhn", "svhn", "train_32x32.mat", 120),
    ("cifar10", "cifar-10-batches-py", "data_batch_2", 24),
])
def test_a_file_with_the_canonical_count_must_match_its_md5(tmp_path, monkeypatch, name, folder, file, count):
    """The fixtures stand in for the canonical files by declaring their count canonical."""
    import dataclasses

    from reweight.components.datasets import catalog

    datafiles.write_data_root(tmp_path)
    path = tmp_path / folder / file
    key = file.removesuffix(".gz")
    real = dataclasses.replace(catalog.IMAGE_SETS[name], checksums={key: (count, file_md5(path))})
    monkeypatch.setitem(catalog.IMAGE_SETS, name, real)
    load_split(name, "train", tmp_path)  # the right md5: read as before
    wrong = dataclasses.replace(real, checksums={key: (count, "0" * 32)})
    monkeypatch.setitem(catalog.IMAGE_SETS, name, wrong)
    catalog._load.cache_clear()
    with pytest.raises(DataError) as caught:
        load_split(name, "train", tmp_path)
    assert str(caught.value) == (f"{path}: checksum mismatch (md5 {file_md5(path)}, expected {'0' * 32}): corrupted or "
                                 f"not the original file; {real.hint(tmp_path / folder)}")
    other = dataclasses.replace(real, checksums={key: (count + 1, "0" * 32)})  # another count: structure only
    monkeypatch.setitem(catalog.IMAGE_SETS, name, other)
    catalog._load.cache_clear()
    load_split(name, "train", tmp_path)


def test_a_recompressed_canonical_idx_file_still_matches(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    datafiles.write_idx_set(folder)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    md5 = file_md5(path)
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1, mtime=12345))
    labels = read_idx(path, "hint", {"t10k-labels-idx1-ubyte": (40, md5)})
    assert labels.shape == (40,)


def test_the_catalog_knows_the_md5_of_every_published_file():
    from reweight.components.datasets.catalog import IMAGE_SETS

    for name, image_set in IMAGE_SETS.items():
        names = {n for split in image_set.files.values() for n in split}
        if image_set.format == "parquet":
            assert not image_set.checksums, name
        else:
            assert set(image_set.checksums) == names, name
            assert all(len(md5) == 32 and int(md5, 16) >= 0 for _, md5 in image_set.checksums.values())


@pytest.mark.parametrize("unlabeled, count", [("rest", 60 - 20), (7, 7)])
def test_transfer_unlabeled_targets_are_the_other_training_images_and_change_nothing_else(data_root, unlabeled, count):
    """MNIST 5-9 has 12 training images per class in the fixture: 4 per class labelled, the
    rest (or a seeded subset of it) unlabeled; every other split as without them."""
    def build(extra):
        return build_transfer(TransferOptions(
            data_root=str(data_root),
            source={"dataset": "svhn", "classes": [0, 1, 2, 3, 4], "grayscale": True, "size": 28},
            target={"dataset": "mnist", "classes": [5, 6, 7, 8, 9], "per_class": 4, **extra}), seed=3)

    plain, data = build({}), build({"unlabeled": unlabeled})
    assert plain.unlabeled is None and len(data.unlabeled) == count
    assert (data.unlabeled.y == -1).all()  # no label reaches the model
    for name in ("source", "target", "test"):
        assert torch.equal(getattr(plain, name).x, getattr(data, name).x)
        assert torch.equal(getattr(plain, name).y, getattr(data, name).y)
    flat_u, flat_t = data.unlabeled.x.flatten(1), data.target.x.flatten(1)
    assert not (flat_u[:, None] == flat_t[None]).all(-1).any()  # none of them is a labelled target image
