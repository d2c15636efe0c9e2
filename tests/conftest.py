"""Shared fixtures: small random bilevel problems, in float64 so derivatives compare tightly."""

from __future__ import annotations

import os

import pytest
import torch

# The tests' models are tiny: a second thread only adds synchronisation. Subprocesses (the
# end-to-end CLI tests) inherit the variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

from reweight.components.models.mlp import MLPOptions, build_mlp
from reweight.core.data import BilevelData, Split
from reweight.core.models import BilevelNet


def random_problem(seed: int, n_source: int = 12, n_target: int = 6, dim: int = 3, classes: int = 3,
                   hidden: tuple[int, ...] = (5, 4), shared_head: bool = False) -> tuple[BilevelNet, BilevelData]:
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
    model = build_mlp(MLPOptions(hidden=list(hidden), shared_head=shared_head), data).double()
    return model, data


@pytest.fixture
def tracking_dir(tmp_path, monkeypatch):
    """Run in a fresh directory with MLflow's default (SQLite) store there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def inner_optimizer(model: BilevelNet, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                    **extra) -> torch.optim.SGD:
    """The engine's inner optimizer over θ and φˢ."""
    return torch.optim.SGD(list(model.inner_params().values()), lr=lr, momentum=momentum,
                           weight_decay=weight_decay, **extra)


def make_problem(model: BilevelNet, data: BilevelData, weights: torch.Tensor | None, optimizer: torch.optim.SGD,
                 batch_size: int | None = None, seed: int = 0):
    """A hypergradient problem whose weights in force are ``weights[index]`` (None: no standing
    weights) and whose source batches come from a seeded sampler (the whole set by default)."""
    from reweight.core.data import BatchSampler
    from reweight.core.hypergrad import HypergradientProblem

    sampler = BatchSampler(data.source, batch_size, seed)
    source, target = sampler.next(), data.target.all()
    weight_fn = (lambda batch, losses: None) if weights is None else (lambda batch, losses: weights[batch.index])
    return HypergradientProblem(model, source, target, model.target_loss(target), optimizer, weight_fn, sampler.peek)


@pytest.fixture(autouse=True)
def no_runtime_components_left():
    """Components registered from Python live as long as the process: each test starts without
    those an earlier test registered."""
    yield
    from reweight.core import plugins

    if plugins._runtime:
        plugins._runtime.clear()
        plugins.registry.cache_clear()
