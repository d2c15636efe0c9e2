"""The built-in per-example loss: cross-entropy of class labels, with optional label smoothing."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from reweight.core.losses import CrossEntropy


class CrossEntropyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label_smoothing: float = Field(0.0, ge=0, le=1, description="s: 1 − s on the label, s spread over the classes.")


def build_cross_entropy(options: CrossEntropyOptions) -> CrossEntropy:
    return CrossEntropy(options.label_smoothing)
