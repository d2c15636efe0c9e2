"""What the three user-file data sets share: splitting one labelled set into source, target
and test by seeded per-class fractions, optional label noise on the source, and assembling
the ``BilevelData`` with class names and per-example meta columns.

Meta columns come from the user's file (``corrupted``, ``harmful``, a group or annotator id)
and reach the metrics and granularities by name: ``corrupted`` gives ``weight_noise_auc``,
``harmful`` gives ``weight_harmful_auc``, and any integer column can be grouped by
(``granularity: {name: per_group, by: meta, column: annotator}``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from reweight.components.datasets import transforms
from reweight.core.data import BilevelData, Split
from reweight.core.errors import DataError

PARTS = ("source", "target", "test")


class FractionOptions(BaseModel):
    """Shares of each class drawn by seed into the target and test sets; the rest is the source."""

    model_config = ConfigDict(extra="forbid")
    target: float = Field(0.1, gt=0.0, lt=1.0, description="Share of each class for the target set (by: fraction).")
    test: float = Field(0.2, gt=0.0, lt=1.0, description="Share of each class for the test set (by: fraction).")

    @model_validator(mode="after")
    def _room_for_a_source(self) -> FractionOptions:
        if self.target + self.test >= 1.0:
            raise ValueError(f"target + test must leave a source, got {self.target} + {self.test}")
        return self


class NoiseOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: transforms.NoiseKind = Field("uniform", description="uniform (symmetric) or pair (c -> c+1 mod C).")
    rate: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of source labels corrupted on top of the file's.")


@dataclass
class Part:
    """One labelled set as read: inputs, int64 labels, meta columns and their value names."""

    x: torch.Tensor
    y: torch.Tensor
    meta: dict[str, torch.Tensor] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)

    def take(self, index: torch.Tensor) -> Part:
        return Part(self.x[index], self.y[index], {k: v[index] for k, v in self.meta.items()}, self.categories)


def split_by_fraction(whole: Part, fractions: FractionOptions, classes: int, seed: int,
                      where: str) -> dict[str, Part]:
    """Per class: ``round(target · n)`` examples (at least one) to the target set,
    ``round(test · n)`` (at least one) to the test set, the rest to the source; by seed."""
    generator = torch.Generator().manual_seed(seed)
    chosen: dict[str, list[torch.Tensor]] = {part: [] for part in PARTS}
    for label in range(classes):
        members = (whole.y == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_target = max(1, round(fractions.target * len(members)))
        n_test = max(1, round(fractions.test * len(members)))
        if n_target + n_test >= len(members):
            raise DataError(f"{where}: class {label} has {len(members)} examples, too few to split into source, "
                            f"target and test (need at least {n_target + n_test + 1})")
        chosen["target"].append(members[:n_target])
        chosen["test"].append(members[n_target:n_target + n_test])
        chosen["source"].append(members[n_target + n_test:])
    return {part: whole.take(torch.sort(torch.cat(index)).values) for part, index in chosen.items()}


def assemble(parts: dict[str, Part], classes: int, names: list[str], noise: NoiseOptions, seed: int,
             where: str) -> BilevelData:
    """The bilevel data of three read parts, with label noise added to the source if asked."""
    for name, part in parts.items():
        if len(part.y) == 0:
            raise DataError(f"{where}: the {name} set is empty")
        if int(part.y.min()) < 0 or int(part.y.max()) >= classes:
            raise DataError(f"{where}: {name} labels must lie in 0..{classes - 1}, "
                            f"got {int(part.y.min())}..{int(part.y.max())}")
        if part.x.shape[1:] != parts["source"].x.shape[1:]:
            raise DataError(f"{where}: {name} inputs have shape {tuple(part.x.shape[1:])} but source inputs "
                            f"{tuple(parts['source'].x.shape[1:])}")
    source = parts["source"]
    meta = dict(source.meta)
    if noise.rate > 0:
        generator = torch.Generator().manual_seed(seed + 7919)  # apart from the split's draws
        noisy, flipped = transforms.corrupt_labels(source.y, noise.rate, classes, noise.kind, generator)
        meta["clean_label"] = source.y
        meta["corrupted"] = flipped | meta["corrupted"].bool() if "corrupted" in meta else flipped
        source = Part(source.x, noisy, meta, source.categories)
    categories = {"label": names}

    def split(part: Part) -> Split:
        return Split(part.x, part.y, dict(part.meta), {**part.categories, **categories})

    return BilevelData(split(source), split(parts["target"]), split(parts["test"]), classes, classes)
