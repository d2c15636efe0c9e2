"""Shared fixtures: small random bilevel problems, in float64 so derivatives compare tightly."""

from __future__ import annotations

import pytest
import torch

from reweight.data import BilevelData, Split
from reweight.models import BilevelNet, MLPOptions, build_mlp


def random_problem(seed: int, n_source: int = 12, n_target: int = 6, dim: int = 3, classes: int = 3,
                   hidden: tuple[int, ...] = (5, 4)) -> tuple[BilevelNet, BilevelData]:
    generator = torch.Generator().manual_seed(seed)
    data = BilevelData(
        source=Split(torch.randn(n_source, dim, generator=generator, dtype=torch.float64),
                     torch.randint(0, classes, (n_source,), generator=generator)),
        target=Split(torch.randn(n_target, dim, generator=generator, dtype=torch.float64),
                     torch.randint(0, classes, (n_target,), generator=generator)),
        test=Split(torch.randn(8, dim, generator=generator, dtype=torch.float64),
                   torch.randint(0, classes, (8,), generator=generator)),
        source_classes=classes,
        target_classes=classes,
    )
    torch.manual_seed(seed)
    model = build_mlp(MLPOptions(hidden=list(hidden)), data).double()
    return model, data


@pytest.fixture
def tracking_dir(tmp_path, monkeypatch):
    """Run in a fresh directory with MLflow's default (SQLite) store there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path
