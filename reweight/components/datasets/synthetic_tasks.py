"""Synthetic tasks over one shared world of Gaussian clusters, for the per-task benchmark.

The run's seed draws the world: ``clusters`` centres in ``dim`` dimensions. The target task
labels a point by its cluster modulo ``classes`` (so each class is a union of clusters, which
a linear read-out of the raw inputs cannot draw). A source task built from the same seed
samples the same world and labels it by one of:

- ``target``: the target's classes, under a fixed relabelling (its own label space);
- ``clusters``: the cluster id itself, a finer task that needs the same features;
- ``random``: labels drawn at random, which only memorisation fits;
- ``foreign``: the nearest of an independent set of centres, a structured task unrelated to
  the target's clusters.

The target and test splits are the same for every ``labels`` and ``stream``, so any one of
these data sets can supply the target of a ``tasks`` data set. Two source tasks with the
same options differ only if their ``stream`` differs.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from reweight.core.data import BilevelData, Split


class SyntheticTaskOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: Literal["target", "clusters", "random", "foreign"] = Field("target", description="How the source is labelled.")
    n_source: int = Field(400, ge=2, description="Source points of this task.")
    target_per_class: int = Field(5, ge=1, description="Clean target points per target class.")
    n_test: int = Field(2000, ge=2, description="Clean test points.")
    dim: int = Field(8, ge=1, description="Input dimension.")
    clusters: int = Field(8, ge=2, description="Clusters of the shared world.")
    classes: int = Field(4, ge=2, description="Target classes (cluster id modulo classes).")
    spread: float = Field(0.6, ge=0.0, description="Standard deviation around a cluster centre (centres are unit normal).")
    stream: int = Field(0, ge=0, le=1000, description="Which independent sample of the world the source is.")

    @model_validator(mode="after")
    def _every_class_has_a_cluster(self) -> SyntheticTaskOptions:
        if self.clusters < self.classes:
            raise ValueError(f"need clusters >= classes, got {self.clusters} < {self.classes}")
        return self


def world(options: SyntheticTaskOptions, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed's cluster centres and an independent set for ``foreign`` labels."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(options.clusters, options.dim, generator=generator)
    foreign = torch.randn(options.clusters, options.dim, generator=generator)
    return centres, foreign


def sample(centres: torch.Tensor, cluster: torch.Tensor, spread: float, generator: torch.Generator) -> torch.Tensor:
    return (centres[cluster] + spread * torch.randn(len(cluster), centres.shape[1], generator=generator)).float()


def build_synthetic_task(options: SyntheticTaskOptions, seed: int) -> BilevelData:
    centres, foreign = world(options, seed)
    clusters, classes = options.clusters, options.classes

    evaluation = torch.Generator().manual_seed(seed + 1_000_003)
    per_class = torch.arange(classes).repeat_interleave(options.target_per_class)
    members = (clusters - 1 - per_class) // classes + 1  # clusters c, c + classes, ... make up class c
    target_cluster = per_class + classes * (torch.rand(len(per_class), generator=evaluation) * members).long()
    x_target = sample(centres, target_cluster, options.spread, evaluation)
    test_cluster = torch.randint(clusters, (options.n_test,), generator=evaluation)
    x_test = sample(centres, test_cluster, options.spread, evaluation)

    generator = torch.Generator().manual_seed(seed + 2_000_029 * (options.stream + 1))
    cluster = torch.randint(clusters, (options.n_source,), generator=generator)
    x_source = sample(centres, cluster, options.spread, generator)
    if options.labels == "target":
        y_source, source_classes = torch.randperm(classes, generator=generator)[cluster % classes], classes
    elif options.labels == "clusters":
        y_source, source_classes = cluster, clusters
    elif options.labels == "random":
        y_source, source_classes = torch.randint(classes, (options.n_source,), generator=generator), classes
    else:
        y_source, source_classes = torch.cdist(x_source.double(), foreign.double()).argmin(1) % classes, classes
    return BilevelData(
        source=Split(x_source, y_source),
        target=Split(x_target, target_cluster % classes),
        test=Split(x_test, test_cluster % classes),
        source_classes=source_classes,
        target_classes=classes,
    )
