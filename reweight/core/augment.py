"""Augmentation whose randomness is a pure function of (seed, epoch, example index).

Each example drawn in a batch gets a 64-bit *key* hashed from the sampler's seed, the epoch
it is drawn in and its index in the set. Every random choice (crop offset, flip) is derived
from that key, never from an RNG's state, so that the augmented batch is the same

- in the unrolled method's look-ahead (``peek``) and in the step that trains on it,
- after a checkpoint is resumed (nothing to save: the sampler's epoch and order suffice),
- with 0, 2 or 8 DataLoader workers, and on the device (in-memory sets) or in a worker
  (streamed sets): the same function on the same values.

A transform of one's own is any callable ``(x, keys) -> x`` over a batch (N×C×H×W, keys an
int64 tensor of N); ``random_integers(keys, stream, high)`` draws from the keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN, _MIX1, _MIX2 = (_signed(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical (unsigned) right shift of int64 values; torch's ``>>`` is arithmetic."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def mix(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (products wrap modulo 2⁶⁴): a bijection whose
    outputs look independent for neighbouring inputs, on any device."""
    z = z + _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


def example_keys(seed: int, epoch: int, index: torch.Tensor) -> torch.Tensor:
    """One key per example: a hash of (seed, epoch, index), on ``index``'s device."""
    head = mix(torch.tensor(_signed(seed), dtype=torch.long))
    head = mix(head ^ _signed(epoch))
    return mix(index.long() ^ head.to(index.device))


def random_integers(keys: torch.Tensor, stream: int, high: int) -> torch.Tensor:
    """An integer in 0..high-1 per key; ``stream`` tells apart the draws made from one key."""
    bits = mix(keys ^ _signed(stream * 0x5851F42D4C957F2D)) & ((1 << 62) - 1)
    return bits % high


def random_crop(x: torch.Tensor, keys: torch.Tensor, padding: int) -> torch.Tensor:
    """Each image padded by ``padding`` zero pixels per side, then cropped back to its size at
    an offset drawn from its key (0..2·padding along each axis)."""
    n, _, height, width = x.shape
    padded = F.pad(x, (padding,) * 4)
    top = random_integers(keys, 1, 2 * padding + 1)
    left = random_integers(keys, 2, 2 * padding + 1)
    rows = (top[:, None] + torch.arange(height, device=x.device))[:, :, None]  # N×H×1
    cols = (left[:, None] + torch.arange(width, device=x.device))[:, None, :]  # N×1×W
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()  # advanced indices first: N×H×W×C


def random_flip(x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Each image mirrored left-right, or not, by its key (probability 1/2)."""
    flip = random_integers(keys, 3, 2).bool().view(-1, *([1] * (x.dim() - 1)))
    return torch.where(flip, x.flip(-1), x)


@dataclass(frozen=True)
class Augmentation:
    """The standard CIFAR recipe (random crop with zero padding, horizontal flip), then any
    transforms of one's own; ``target``: the target batches are augmented too."""

    crop_padding: int = 0
    flip: bool = False
    transforms: Sequence[Transform] = ()
    target: bool = False

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip or bool(self.transforms)

    def for_target(self) -> Augmentation | None:
        return self if self.target and self.active else None

    def for_source(self) -> Augmentation | None:
        return self if self.active else None

    def __call__(self, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        if self.crop_padding:
            x = random_crop(x, keys, self.crop_padding)
        if self.flip:
            x = random_flip(x, keys)
        for transform in self.transforms:
            x = transform(x, keys)
        return x

    def check_inputs(self, example: torch.Tensor, where: str) -> str | None:
        """Why these inputs cannot be cropped or flipped (a problem), or None."""
        if (self.crop_padding or self.flip) and example.dim() != 4:
            return (f"augment: crop and flip need images N×C×H×W, but the {where} inputs are "
                    f"{tuple(example.shape[1:])} per example")
        return None
