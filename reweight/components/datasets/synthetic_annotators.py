"""A source labelled by several annotators, some of whom get most labels wrong.

The per-group benchmark's data: two moons (see ``reweight.components.datasets.synthetic``), each source point
labelled by one of ``annotators`` annotators chosen at random. The first ``harmful`` of them
flip a ``harmful_flip`` share of their labels, the others a ``helpful_flip`` share. The
source carries an ``annotator`` meta column to group by, plus ground truth the training
never sees: ``corrupted`` (this label was flipped) and ``harmful`` (its annotator is a bad
one), which the ``weight_noise_auc`` and ``weight_harmful_auc`` metrics read.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from reweight.components.datasets.synthetic import two_moons
from reweight.core.data import BilevelData, Split


class AnnotatorsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_source: int = Field(1200, ge=2, description="Source points, shared among the annotators.")
    n_target: int = Field(50, ge=2, description="Clean target points.")
    n_test: int = Field(2000, ge=2, description="Clean test points.")
    annotators: int = Field(6, ge=1, description="How many annotators label the source.")
    harmful: int = Field(2, ge=0, description="How many of them (the first ones) are bad.")
    harmful_flip: float = Field(0.8, ge=0.0, le=1.0, description="Share of a bad annotator's labels flipped.")
    helpful_flip: float = Field(0.05, ge=0.0, le=1.0, description="Share of a good annotator's labels flipped.")
    spread: float = Field(0.15, ge=0.0, description="Gaussian jitter around the moons.")

    @model_validator(mode="after")
    def _harmful_within_annotators(self) -> AnnotatorsOptions:
        if self.harmful > self.annotators:
            raise ValueError(f"harmful ({self.harmful}) cannot exceed annotators ({self.annotators})")
        return self


def build_synthetic_annotators(options: AnnotatorsOptions, seed: int) -> BilevelData:
    generator = torch.Generator().manual_seed(seed)
    x_source, y_clean = two_moons(options.n_source, options.spread, generator)
    annotator = torch.randint(options.annotators, (options.n_source,), generator=generator)
    harmful = annotator < options.harmful
    flip_rate = torch.where(harmful, options.harmful_flip, options.helpful_flip)
    corrupted = torch.rand(options.n_source, generator=generator) < flip_rate
    y_source = torch.where(corrupted, 1 - y_clean, y_clean)
    x_target, y_target = two_moons(options.n_target, options.spread, generator)
    x_test, y_test = two_moons(options.n_test, options.spread, generator)
    meta = {"annotator": annotator, "corrupted": corrupted, "harmful": harmful}
    return BilevelData(
        source=Split(x_source, y_source, meta),
        target=Split(x_target, y_target),
        test=Split(x_test, y_test),
        source_classes=2,
        target_classes=2,
    )
