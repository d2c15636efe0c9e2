"""A small, seeded k-means in torch, for grouping source examples by their features.

Written here rather than taken from scikit-learn so that it runs on the tensors where they
already are (GPU included), is reproducible from a ``torch.Generator``, and adds no host
round trip or thread pool of its own. k-means++ seeding, then Lloyd iterations until the
assignment stops changing.
"""

from __future__ import annotations

import torch


def kmeans_plus_plus(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k initial centres, each drawn with probability proportional to its squared distance
    from the nearest centre already chosen (uniformly when every point coincides)."""
    n = len(points)
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [points[first]]
    nearest = ((points - points[first]) ** 2).sum(1)
    for _ in range(1, k):
        total = nearest.sum()
        probabilities = nearest / total if total > 0 else torch.full_like(nearest, 1.0 / n)
        chosen = int(torch.multinomial(probabilities.cpu(), 1, generator=generator))
        centres.append(points[chosen])
        nearest = torch.minimum(nearest, ((points - points[chosen]) ** 2).sum(1))
    return torch.stack(centres)


def kmeans(points: torch.Tensor, k: int, seed: int, iterations: int = 100) -> torch.Tensor:
    """Cluster id (0..k-1, a long tensor on ``points``' device) of each row of ``points``.

    A cluster that loses all its points keeps its centre, so ids stay in range; its slot
    simply has no members.
    """
    if not 1 <= k <= len(points):
        raise ValueError(f"k must be between 1 and the number of points ({len(points)}), got {k}")
    points = points.flatten(1).double()
    generator = torch.Generator().manual_seed(seed)
    centres = kmeans_plus_plus(points, k, generator)
    assignment = torch.cdist(points, centres).argmin(1)
    for _ in range(iterations):
        sums = torch.zeros_like(centres).index_add_(0, assignment, points)
        counts = torch.bincount(assignment, minlength=k).unsqueeze(1)
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        updated = torch.cdist(points, centres).argmin(1)
        if torch.equal(updated, assignment):
            break
        assignment = updated
    return assignment
