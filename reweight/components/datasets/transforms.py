"""Vectorised transformations of whole uint8 image sets, applied once when a data set is built.

- ``select_classes``: keep some classes and renumber them 0..k-1 in the order given;
- ``per_class_indices``: n examples of every class, drawn reproducibly from a generator;
- ``grayscale`` and ``resize``: e.g. SVHN (3×32×32) to MNIST's 1×28×28;
- ``corrupt_labels``: uniform (symmetric) or pair-flip label noise at an exact rate, returning
  which labels were corrupted.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

NoiseKind = Literal["uniform", "pair"]


def select_classes(x: torch.Tensor, y: torch.Tensor, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples whose label is in ``classes``, relabelled by position: ``classes[k]`` becomes k."""
    lookup = torch.full((int(max(classes + [int(y.max()) if len(y) else 0])) + 1,), -1, dtype=torch.long)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    new = lookup[y]
    keep = new >= 0
    return x[keep], new[keep]


def per_class_indices(y: torch.Tensor, n: int, classes: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``n`` examples of each class 0..classes-1, chosen uniformly at random
    (reproducible for a given generator state), sorted. Raises ``ValueError`` if a class has
    fewer than ``n`` examples."""
    if len(y) and int(y.max()) >= classes:
        raise ValueError(f"labels must lie in 0..{classes - 1}")
    counts = torch.bincount(y, minlength=classes)
    if n > 0 and int(counts.min()) < n:
        short = int(counts.argmin())
        raise ValueError(f"class {short} has {int(counts[short])} examples, fewer than the {n} requested")
    order = torch.randperm(len(y), generator=generator)
    order = order[torch.argsort(y[order], stable=True)]  # grouped by class, random within a class
    labels = y[order]
    counts = torch.bincount(labels, minlength=classes)
    starts = torch.cumsum(counts, 0) - counts  # where each class's run begins in ``order``
    rank = torch.arange(len(order)) - starts[labels]
    chosen = order[rank < n]
    return torch.sort(chosen).values


def random_subset(n_total: int, n: int | None, generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of ``n`` of ``n_total`` examples (all of them when ``n`` is None or larger)."""
    if n is None or n >= n_total:
        return torch.arange(n_total)
    return torch.sort(torch.randperm(n_total, generator=generator)[:n]).values


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of uint8 RGB images (N×3×H×W -> N×1×H×W); single-channel input is returned as is."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    out = torch.empty((len(x), 1, *x.shape[2:]), dtype=torch.uint8)
    for start in range(0, len(x), 8192):  # bounded float memory
        part = (x[start:start + 8192].float() * weights).sum(1, keepdim=True)
        out[start:start + 8192] = part.round().clamp(0, 255).to(torch.uint8)
    return out


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear, antialiased resize of uint8 images to size×size."""
    if tuple(x.shape[2:]) == (size, size):
        return x
    out = torch.empty((len(x), x.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, len(x), 8192):
        part = F.interpolate(x[start:start + 8192].float(), size=(size, size), mode="bilinear",
                             align_corners=False, antialias=True)
        out[start:start + 8192] = part.round().clamp(0, 255).to(torch.uint8)
    return out


def corrupt_labels(y: torch.Tensor, rate: float, classes: int, kind: NoiseKind,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt exactly ``round(rate · n)`` labels, chosen uniformly at random; return
    (noisy labels, corrupted mask).

    A corrupted label always differs from the original, so the mask marks exactly the
    labels that are wrong:

    - ``uniform`` (symmetric): the new label is uniform over the *other* classes;
    - ``pair``: class c becomes (c + 1) mod ``classes``.

    (Some papers draw symmetric noise over all classes, keeping the true label with
    probability 1/classes; their rate r corresponds to ``rate = r · (classes − 1) / classes`` here.)
    """
    if classes < 2:
        raise ValueError("label noise needs at least two classes")
    n = len(y)
    corrupted = torch.zeros(n, dtype=torch.bool)
    corrupted[torch.randperm(n, generator=generator)[: round(rate * n)]] = True
    if kind == "pair":
        shift = torch.ones(n, dtype=torch.long)
    else:
        shift = torch.randint(1, classes, (n,), generator=generator)
    return torch.where(corrupted, (y + shift) % classes, y), corrupted
