"""Augmentation keyed by (seed, epoch, index): the crop and flip are what they claim, the same
on the device and in a worker, in the look-ahead and in the step, and independent of RNG state."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from reweight.core.augment import Augmentation, example_keys, random_crop, random_flip, random_integers
from reweight.core.data import BatchSampler, Split
from reweight.core.errors import ConfigError, DataError
from reweight.core.streaming import StreamSettings, streamed
from reweight.experiment.config import validate


def images(n: int, seed: int = 0, channels: int = 3, size: int = 6) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, size, size), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), epoch=st.integers(0, 10**6), padding=st.integers(1, 4))
def test_a_crop_is_a_shifted_window_of_the_padded_image(seed, epoch, padding):
    x = images(5, seed % 1000)
    keys = example_keys(seed, epoch, torch.arange(5))
    out = random_crop(x, keys, padding)
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    top, left = random_integers(keys, 1, 2 * padding + 1), random_integers(keys, 2, 2 * padding + 1)
    for k in range(5):
        assert 0 <= int(top[k]) <= 2 * padding and 0 <= int(left[k]) <= 2 * padding
        window = padded[k, :, int(top[k]):int(top[k]) + 6, int(left[k]):int(left[k]) + 6]
        assert torch.equal(out[k], window)
    assert out.dtype == x.dtype and out.shape == x.shape


def test_a_flip_mirrors_about_half_of_the_images():
    x = images(400)
    keys = example_keys(7, 1, torch.arange(400))
    out = random_flip(x, keys)
    mirrored = torch.tensor([torch.equal(out[k], x[k].flip(-1)) for k in range(400)])
    kept = torch.tensor([torch.equal(out[k], x[k]) for k in range(400)])
    assert bool((mirrored | kept).all())
    assert 150 < int(mirrored.sum()) < 250


def test_keys_depend_on_seed_epoch_and_index_only():
    index = torch.tensor([3, 9, 4])
    torch.manual_seed(1)
    first = example_keys(5, 2, index)
    torch.manual_seed(2)  # no RNG is read
    assert torch.equal(example_keys(5, 2, index), first)
    assert torch.equal(example_keys(5, 2, index[[1]]), first[[1]])  # an example's key ignores its batch
    assert not torch.equal(example_keys(6, 2, index), first)
    assert not torch.equal(example_keys(5, 3, index), first)
    assert len(set(example_keys(5, 2, torch.arange(10_000)).tolist())) == 10_000


def test_random_integers_are_roughly_uniform():
    draws = random_integers(example_keys(0, 0, torch.arange(9000)), 1, 9)
    counts = torch.bincount(draws, minlength=9)
    assert int(counts.min()) > 850 and int(counts.max()) < 1150


def test_peek_and_next_give_the_same_augmented_batches_and_epochs_change_them():
    split = Split(images(10), torch.arange(10) % 3)
    augment = Augmentation(crop_padding=2, flip=True)
    sampler = BatchSampler(split, 4, seed=3, augment=augment)
    ahead = sampler.peek(6)  # crosses an epoch (10 examples, 4 per batch: 2 batches an epoch)
    drawn = [sampler.next() for _ in range(6)]
    for a, b in zip(ahead, drawn):
        assert torch.equal(a.x, b.x) and torch.equal(a.index, b.index)
    assert any(not torch.equal(b.x, split.x[b.index]) for b in drawn)  # it does augment
    plain = BatchSampler(split, 4, seed=3)
    assert [b.index.tolist() for b in drawn] == [plain.next().index.tolist() for _ in range(6)]  # same order


def test_the_whole_target_set_is_augmented_afresh_at_every_draw():
    split = Split(images(6), torch.arange(6) % 2)
    sampler = BatchSampler(split, None, seed=1, augment=Augmentation(crop_padding=3, flip=True))
    first, second = sampler.next(), sampler.next()
    assert torch.equal(first.index, torch.arange(6)) and not torch.equal(first.x, second.x)
    assert torch.equal(sampler.peek(1)[0].x, sampler.next().x)


def test_a_restored_sampler_augments_as_the_uninterrupted_one():
    split = Split(images(10), torch.arange(10) % 3)
    augment = Augmentation(crop_padding=1, flip=True)
    straight = BatchSampler(split, 3, seed=0, augment=augment)
    for _ in range(4):
        straight.next()
    saved = straight.state_dict()
    expected = [straight.next().x for _ in range(5)]
    restored = BatchSampler(split, 3, seed=0, augment=augment)
    restored.load_state_dict(saved)
    assert all(torch.equal(restored.next().x, x) for x in expected)


@pytest.mark.parametrize("workers", [0, 2])
def test_in_a_worker_the_augmentation_is_the_device_s(workers):
    split = Split(images(13), torch.arange(13) % 4)
    augment = Augmentation(crop_padding=2, flip=True, transforms=(lambda x, keys: x // 2 + (keys % 2).view(-1, 1, 1, 1).to(x.dtype),))
    on_device = BatchSampler(split, 5, seed=4, augment=augment)
    from reweight.core.streaming import StreamedSampler

    in_workers = StreamedSampler(streamed(split, StreamSettings(workers=workers)), 5, seed=4, augment=augment)
    for _ in range(7):
        a, b = on_device.next(), in_workers.next()
        assert torch.equal(a.x, b.x) and torch.equal(a.index, b.index) and torch.equal(a.y, b.y)


def test_crop_and_flip_on_flat_inputs_are_one_line_errors():
    from reweight.core.streaming import make_sampler

    split = Split(torch.randn(8, 5), torch.arange(8) % 2)
    with pytest.raises(DataError, match="crop and flip need images"):
        make_sampler(split, 4, 0, Augmentation(flip=True), "source")


def test_the_augment_section_is_validated():
    base = {"name": "t", "data": {"name": "synthetic_2d"}}
    with pytest.raises(ConfigError, match="augment.crop_padding"):
        validate({**base, "augment": {"crop_padding": -1}})
    with pytest.raises(ConfigError, match="augment.transforms.0"):
        validate({**base, "augment": {"transforms": ["no module path"]}})
    config, _ = validate({**base, "augment": {"crop_padding": 4, "flip": True}})
    assert config.augment.crop_padding == 4 and not config.augment.target


def test_a_transform_that_cannot_be_imported_is_one_line():
    from reweight.experiment.augmentation import resolve

    with pytest.raises(ConfigError, match="cannot import 'no_such_module:f'"):
        resolve("no_such_module:f")
    assert resolve("torch:neg") is torch.neg
