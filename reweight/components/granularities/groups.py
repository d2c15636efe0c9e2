"""Per-group and per-task granularities: one weight shared by many source examples.

Both precompute one long tensor, the slot of every source example, once per run; a batch's
slots are a gather of it by ``batch.index``, so the training loop runs no per-example Python.
Because the inherited ``slot_gradient`` sums members' hypergradients into their slot, every
strategy and hypergradient method works with them unchanged.
"""

from __future__ import annotations

import re
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from reweight.components.granularities.kmeans import kmeans
from reweight.core.data import Batch, Split
from reweight.core.errors import ConfigError
from reweight.core.granularity import Granularity
from reweight.core.models import BilevelNet


def metric_safe(text: str) -> str:
    """Keep names usable as MLflow metric keys."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def group_ids(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(distinct values in increasing order, each example's position among them)."""
    distinct, inverse = torch.unique(values, sorted=True, return_inverse=True)
    return distinct, inverse.long()


class SlotTable(Granularity):
    """A granularity given by a precomputed slot per source example and a name per slot."""

    def __init__(self, options: BaseModel, source: Split, slot_of: torch.Tensor, names: list[str]) -> None:
        super().__init__(options, source)
        self.slot_of = slot_of.to(source.y.device).long()
        self.names = names

    @property
    def num_slots(self) -> int:
        return len(self.names)

    def slots(self, batch: Batch) -> torch.Tensor:
        return self.slot_of[batch.index]

    def slot_names(self) -> list[str]:
        return self.names


class PerGroupOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: Literal["label", "meta", "kmeans"] = Field(
        "label", description="Where groups come from: the source label, a meta column, or k-means clusters."
    )
    column: str | None = Field(None, min_length=1, description="The meta column holding group ids (by: meta).")
    k: int | None = Field(None, ge=1, description="Number of clusters (by: kmeans).")
    features: Literal["model", "input"] = Field(
        "model", description="by: kmeans clusters the initial model's representation, or the raw inputs."
    )

    @model_validator(mode="after")
    def _fields_of_the_source(self) -> PerGroupOptions:
        if self.by == "meta" and self.column is None:
            raise ValueError("by: meta needs a column")
        if self.by == "kmeans" and self.k is None:
            raise ValueError("by: kmeans needs k")
        if self.column is not None and self.by != "meta":
            raise ValueError("column is only used with by: meta")
        if self.k is not None and self.by != "kmeans":
            raise ValueError("k is only used with by: kmeans")
        return self


def meta_groups(source: Split, column: str, field: str) -> tuple[torch.Tensor, list[str]]:
    """Slots and names from an integer (or boolean) meta column; ``field`` names it in errors."""
    if column not in source.meta:
        have = ", ".join(sorted(source.meta)) or "none"
        raise ConfigError(f"{field}: the source set has no meta column {column!r} (it has: {have})")
    values = source.meta[column]
    if values.dim() != 1 or values.dtype.is_floating_point or values.is_complex():
        raise ConfigError(f"{field}: meta column {column!r} must hold one integer group id per example")
    distinct, slot_of = group_ids(values.long())
    known = source.categories.get(column, [])
    names = [known[v] if 0 <= v < len(known) else str(v) for v in distinct.tolist()]
    return slot_of, [metric_safe(f"{column}_{name}") for name in names]


@torch.no_grad()
def feature_groups(source: Split, k: int, features: str, model: BilevelNet | None) -> tuple[torch.Tensor, list[str]]:
    """k-means clusters of the initial model's representation (or of the inputs), seeded by the run."""
    if k > len(source):
        raise ConfigError(f"granularity.k: {k} clusters but the source set has {len(source)} examples")
    if features == "model":
        if model is None:
            raise ConfigError("granularity.features: 'model' needs the model; use features: input")
        was_training = model.training
        model.eval()
        parts = source.batches(4096) if source.streamed else source.x.split(4096)
        points = torch.cat([model.features(part.x if source.streamed else part) for part in parts])
        model.train(was_training)
    elif source.streamed:
        raise ConfigError("granularity.features: 'input' clusters the whole inputs tensor, which a streamed source "
                          "does not hold; use features: model")
    else:
        points = source.x
    return kmeans(points, k, seed=torch.initial_seed()), [f"cluster_{c}" for c in range(k)]


class PerGroup(SlotTable):
    """One weight per group of source examples: a label, a metadata value, or a k-means cluster."""

    Options = PerGroupOptions

    def __init__(self, options: PerGroupOptions, source: Split, model: BilevelNet | None = None) -> None:
        if options.by == "label":
            distinct, slot_of = group_ids(source.y)
            names = [f"label_{v}" for v in distinct.tolist()]
        elif options.by == "meta":
            slot_of, names = meta_groups(source, options.column, "granularity.column")
        else:
            slot_of, names = feature_groups(source, options.k, options.features, model)
        super().__init__(options, source, slot_of, [f"group_{name}" for name in names])


class PerTask(SlotTable):
    """One weight per source task, scaling that task's loss (each task has its own head)."""

    def __init__(self, options: BaseModel, source: Split, model: BilevelNet | None = None) -> None:
        if "task" not in source.meta:
            raise ConfigError(
                "granularity.name: per_task needs a source made of tasks (a 'task' meta column), "
                "e.g. data.name: tasks"
            )
        tasks = source.meta["task"].long()
        names = source.categories.get("task") or [str(k) for k in range(int(tasks.max()) + 1)]
        super().__init__(options, source, tasks, [metric_safe(f"task_{name}") for name in names])
