"""Streamed splits: a DataLoader over a Dataset trains exactly as the in-memory set would (same
order, look-ahead, augmentation, weights), with 0 or 2 workers, and resumes bit for bit."""

from __future__ import annotations

import hashlib
import io
import signal
import subprocess

import pytest
import torch
from torch.utils.data import Dataset

import reweight
from reweight.components.models.mlp import MLPOptions, build_mlp
from reweight.core.augment import Augmentation
from reweight.core.data import BatchSampler, BilevelData, Split
from reweight.core.engine import Engine, TrainSettings
from reweight.core.errors import ConfigError, DataError
from reweight.core.plugins import registry
from reweight.core.streaming import StreamedSampler, StreamedSplit, StreamSettings, from_datasets, stream_data
from reweight.experiment.config import validate
from reweight.experiment.runner import build_engine


def images(n: int, generator: torch.Generator, classes: int = 4) -> Split:
    x = torch.randint(0, 256, (n, 3, 8, 8), generator=generator, dtype=torch.uint8)
    y = torch.randint(0, classes, (n,), generator=generator)
    return Split(x, y, {"corrupted": torch.arange(n) % 3 == 0, "group": torch.arange(n) % 5})


def small_data(seed: int = 0) -> BilevelData:
    generator = torch.Generator().manual_seed(seed)
    return BilevelData(images(40, generator), images(12, generator), images(10, generator), 4, 4)


def component(kind: str, name: str, **options):
    found = registry().get(kind, name)
    return found, found.options(**options)


def engine(data: BilevelData, augment: Augmentation, strategy: str = "soseleto", granularity: str = "per_sample",
           steps: int = 3, **granularity_options) -> Engine:
    torch.manual_seed(0)
    model = build_mlp(MLPOptions(hidden=[8]), data)
    found, options = component("granularity", granularity, **granularity_options)
    slots = found.factory(options, data.source, model=model)
    found, options = component("strategy", strategy)
    chosen = found.factory(options, slots, torch.device("cpu"))
    found, options = component("hypergradient", "unrolled", steps=steps)
    settings = TrainSettings(source_batch_size=8, target_batch_size=5, augment=augment)
    return Engine(model, chosen, found.factory(options), data, settings, seed=1)


def digest(state) -> str:
    """A hash of every tensor of a state, bit for bit."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


AUGMENT = Augmentation(crop_padding=2, flip=True, target=True)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("strategy", ["soseleto", "meta_weight_net"])
def test_a_streamed_run_trains_exactly_as_the_in_memory_run(workers, strategy):
    data = small_data()
    in_memory = engine(data, AUGMENT, strategy)
    in_memory.fit(12, eval_every=4)
    streamed = engine(stream_data(data, ["source", "target", "test"], StreamSettings(workers=workers)), AUGMENT,
                      strategy)
    assert isinstance(streamed.source_sampler, StreamedSampler) and isinstance(streamed.target_sampler, StreamedSampler)
    streamed.fit(12, eval_every=4)
    for key in ("model", "strategy", "source_sampler", "target_sampler", "last_weights", "inner_optimizer"):
        assert digest(streamed.state_dict()[key]) == digest(in_memory.state_dict()[key]), key
    assert torch.equal(streamed.source_weights(), in_memory.source_weights())
    assert streamed.evaluate() == pytest.approx(in_memory.evaluate(), rel=1e-6)


def test_augmentation_changes_training():
    data = small_data()
    plain, augmented = engine(data, Augmentation()), engine(data, AUGMENT)
    plain.fit(6, eval_every=6)
    augmented.fit(6, eval_every=6)
    assert digest(plain.state_dict()["model"]) != digest(augmented.state_dict()["model"])


@pytest.mark.parametrize("workers", [0, 2])
def test_peek_then_next_and_a_restored_sampler_follow_the_in_memory_order(workers):
    split = small_data().source
    stream = StreamedSampler(stream_data(small_data(), ["source"], StreamSettings(workers=workers)).source, 6, 2,
                             AUGMENT)
    memory = BatchSampler(split, 6, 2, AUGMENT)
    assert [b.index.tolist() for b in stream.peek(3)] == [b.index.tolist() for b in memory.peek(3)]
    for _ in range(4):
        a, b = stream.next(), memory.next()
        assert torch.equal(a.x, b.x) and torch.equal(a.meta["group"], b.meta["group"])
    stream.peek(5)  # fetched ahead, not consumed: the saved position is the consumed one
    saved = stream.state_dict()
    assert digest(saved) == digest(memory.state_dict())
    expected = [memory.next().x for _ in range(9)]
    restored = StreamedSampler(stream.split, 6, 2, AUGMENT)
    restored.load_state_dict(saved)
    assert all(torch.equal(restored.next().x, x) for x in expected)
    assert restored.carries_distributed_sampler is False


def test_a_streamed_augmented_engine_resumes_bit_for_bit(tmp_path):
    from reweight.experiment import checkpoint

    def make() -> Engine:
        return engine(stream_data(small_data(), ["source", "target"], StreamSettings(workers=2)), AUGMENT)

    straight = make()
    path = tmp_path / "run.pt"
    straight.fit(14, eval_every=5, after_step=lambda step: step == 7 and checkpoint.save(
        path, {"engine": straight.state_dict()}))
    resumed = make()
    resumed.load_state_dict(checkpoint.load(path)["engine"])
    resumed.fit(14, eval_every=5)
    assert digest(resumed.state_dict()) == digest(straight.state_dict())


class ItemsWithMeta(Dataset):
    """A user's Dataset: (x, y, meta) items, no ``targets`` attribute, a random draw of its own."""

    def __init__(self, split: Split, jitter: bool = False) -> None:
        self.split, self.jitter = split, jitter

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        x = self.split.x[i]
        if self.jitter:  # drawn from torch's RNG: seeded per batch by the loader
            x = x + torch.randint(0, 2, x.shape, dtype=x.dtype)
        return x, int(self.split.y[i]), {"group": int(self.split.meta["group"][i])}


def test_labels_and_meta_are_read_from_the_items_and_groups_work():
    data = small_data()
    split = StreamedSplit.of(ItemsWithMeta(data.source))
    assert torch.equal(split.y, data.source.y) and torch.equal(split.meta["group"], data.source.meta["group"])
    streamed = BilevelData(split, data.target, data.test, 4, 4)
    grouped = engine(streamed, Augmentation(), granularity="per_group", by="meta", column="group")
    reference = engine(data, Augmentation(), granularity="per_group", by="meta", column="group")
    grouped.fit(6, eval_every=3)
    reference.fit(6, eval_every=3)
    assert torch.equal(grouped.source_weights(), reference.source_weights())
    assert "weight_group_group_4" in grouped.evaluate()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_dataset_s_own_random_draws_repeat_in_peek_and_across_workers(workers):
    split = StreamedSplit.of(ItemsWithMeta(small_data().source, jitter=True), settings=StreamSettings(workers=workers))
    sampler = StreamedSampler(split, 8, 0)
    ahead = sampler.peek(3)
    torch.manual_seed(123)  # the main process's RNG plays no part
    drawn = [sampler.next() for _ in range(3)]
    assert all(torch.equal(a.x, b.x) for a, b in zip(ahead, drawn))
    single = StreamedSampler(StreamedSplit.of(ItemsWithMeta(small_data().source, jitter=True),
                                              settings=StreamSettings(workers=0)), 8, 0)
    assert all(torch.equal(single.next().x, b.x) for b in drawn)


def test_reading_in_the_training_process_leaves_its_rng_alone():
    split = StreamedSplit.of(ItemsWithMeta(small_data().source, jitter=True), settings=StreamSettings(workers=0))
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    StreamedSampler(split, 8, 0).next()
    assert torch.equal(torch.rand(3), expected)


def test_evaluation_in_small_batches_matches_the_whole_set():
    data = small_data()
    whole = engine(data, Augmentation())
    whole.fit(4, eval_every=4)
    batched = engine(stream_data(data, ["source", "target", "test"], StreamSettings(workers=0, eval_batch_size=3)),
                     Augmentation(), strategy="meta_weight_net")
    reference = engine(data, Augmentation(), strategy="meta_weight_net")
    batched.fit(4, eval_every=4)
    reference.fit(4, eval_every=4)
    assert batched.evaluate() == pytest.approx(reference.evaluate(), rel=1e-5)
    assert torch.allclose(batched.source_weights(), reference.source_weights(), atol=1e-6)


def test_one_line_errors():
    split = stream_data(small_data(), ["source"], StreamSettings(workers=0)).source
    with pytest.raises(DataError, match="holds no whole inputs tensor"):
        _ = split.x
    with pytest.raises(DataError, match=r"must be \(x, y\) or \(x, y, meta\)"):
        StreamedSplit.of([torch.zeros(3)])
    with pytest.raises(DataError, match="map-style"):
        StreamedSplit.of(object())
    data = BilevelData(split, small_data().target, small_data().test, 4, 4)
    torch.manual_seed(0)
    model = build_mlp(MLPOptions(hidden=[8]), data)
    found, options = component("granularity", "per_group", by="kmeans", k=3, features="input")
    with pytest.raises(ConfigError, match="streamed source"):
        found.factory(options, data.source, model=model)


def test_from_datasets_mixes_datasets_and_tensors():
    data = small_data()
    mixed = from_datasets(ItemsWithMeta(data.source), (data.target.x, data.target.y))
    assert mixed.source.streamed and not mixed.target.streamed and torch.equal(mixed.test.y, mixed.target.y)
    assert mixed.source_classes == 4 and reweight.from_datasets is from_datasets
    with pytest.raises(DataError, match="labels must lie in 0..1"):
        from_datasets(ItemsWithMeta(data.source), (data.target.x, data.target.y), classes=2)


def test_the_stream_section_is_validated_and_streams_a_built_in_set():
    base = {"name": "t", "data": {"name": "synthetic_2d", "n_source": 40, "n_target": 10, "n_test": 20},
            "model": {"name": "mlp", "hidden": [4]}, "train": {"source_batch_size": 8}}
    with pytest.raises(ConfigError, match="stream.splits.0"):
        validate({**base, "stream": {"splits": ["everything"]}})
    with pytest.raises(ConfigError, match="stream.workers"):
        validate({**base, "stream": {"workers": -1}})
    config, options = validate({**base, "stream": {"splits": ["source", "target"], "workers": 0}})
    built = build_engine(config, options, seed=0)
    assert built.data.source.streamed and built.data.validation is None and not built.data.test.streamed
    memory = build_engine(*validate(base), seed=0)
    built.fit(5, eval_every=5)
    memory.fit(5, eval_every=5)
    assert digest(built.state_dict()["model"]) == digest(memory.state_dict()["model"])


def crops(x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    return 255 - x  # a transform of one's own (deterministic here)


def test_the_python_api_streams_a_users_dataset_with_a_transform(tracking_dir):
    data = small_data()
    config = {"name": "api_stream", "model": {"name": "mlp", "hidden": [8]}, "strategy": "soseleto",
              "train": {"steps": 6, "eval_every": 3, "source_batch_size": 8}, "stream": {"workers": 0},
              "augment": {"crop_padding": 1, "flip": True}, "tracking": {"plots": False}}
    result = reweight.run(config, data=from_datasets(ItemsWithMeta(data.source), (data.target.x, data.target.y),
                                                     (data.test.x, data.test.y)), transforms=[crops])
    assert result.weights.shape == (40,) and [step for step, _ in result.history["test_accuracy"]] == [3, 6]
    import mlflow

    params = mlflow.get_run(result.run_ids[0]).data.params
    assert params["augment.transforms"] == "['tests.test_streaming:crops']" and params["stream.workers"] == "0"


# --- end to end: a streamed, augmented CIFAR-style run killed and resumed -------------------

@pytest.mark.slow
def test_a_killed_streamed_augmented_run_resumes_exactly(tmp_path):
    from tests.datafiles import write_cifar
    from tests.test_checkpoints import assert_identical, command, environment, start_and_stop

    root = write_cifar(tmp_path / "root" / "cifar-10-batches-py", n_per_class=20) and tmp_path / "root"
    config = tmp_path / "c.yaml"
    config.write_text(f"""
name: stream_resume
data: {{name: noisy_labels, dataset: cifar10, data_root: {root}, target_per_class: 4}}
model: {{name: mlp, hidden: [8]}}
strategy: {{name: soseleto, lr: 20}}
hypergrad: {{name: unrolled, steps: 2}}
train: {{steps: 400, eval_every: 100, source_batch_size: 16, target_batch_size: 8}}
stream: {{splits: [source, target], workers: 2}}
augment: {{crop_padding: 4, flip: true, target: true}}
checkpoint: {{every: 20}}
tracking: {{plots: false}}
""")
    from reweight.experiment import checkpoint

    def finish(cwd, *extra):
        done = subprocess.run(command("run", str(config), *extra), cwd=cwd, env=environment(), capture_output=True, check=False,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        [path] = (cwd / "checkpoints").glob("*.pt")
        return checkpoint.load(path)["engine"]

    straight = tmp_path / "straight"
    straight.mkdir()
    expected = finish(straight)
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    killed = start_and_stop(stopped, signal.SIGKILL, ["run", str(config)])
    assert killed.returncode == -signal.SIGKILL
    resumed = finish(stopped, "--resume")
    assert_identical(resumed, expected)
    assert digest(resumed) == digest(expected)
