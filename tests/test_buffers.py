"""The buffer policy: look-ahead passes never write BatchNorm running statistics; only the
forward pass of the real inner step does, once per step, whatever the hypergradient method."""

from __future__ import annotations

import copy

import pytest
import torch
from reweight_soseleto import Soseleto, SoseletoOptions
from torch import nn

from reweight.components.granularities.per_sample import PerSample
from reweight.components.hypergradients.one_step import OneStep, OneStepOptions
from reweight.components.hypergradients.unrolled import Unrolled, UnrolledOptions
from reweight.core.engine import Engine, TrainSettings
from reweight.core.models import BilevelNet
from reweight.core.plugins import NoOptions
from tests.conftest import inner_optimizer, make_problem, random_problem

METHODS = [
    OneStep(OneStepOptions(at="current")),
    OneStep(OneStepOptions(at="lookahead")),
    Unrolled(UnrolledOptions(steps=3, backend="torch_func")),
    Unrolled(UnrolledOptions(steps=3, backend="higher")),
]


def batchnorm_problem(seed: int):
    _, data = random_problem(seed, n_source=16)
    torch.manual_seed(seed)
    representation = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Tanh())
    model = BilevelNet(representation, nn.Linear(6, 3), nn.Linear(6, 3)).double()
    return model, data


@pytest.mark.parametrize("method", METHODS, ids=lambda m: f"{type(m).__name__}-{m.options.model_dump()}")
def test_only_the_inner_steps_forward_moves_running_statistics(method):
    model, data = batchnorm_problem(0)
    model.train()
    strategy = Soseleto(SoseletoOptions(lr=10.0), PerSample(NoOptions(), data.source), torch.device("cpu"))
    engine = Engine(model, strategy, method, data, TrainSettings(source_batch_size=4), seed=0)
    for _ in range(2):
        reference = copy.deepcopy(model)  # the parameters this step starts from
        batch = engine.source_sampler.peek(1)[0]
        engine.step()
        with torch.no_grad():  # exactly one source forward per step, on that step's batch
            reference.source_losses(batch)
        for (name, mine), theirs in zip(model.named_buffers(), reference.buffers()):
            torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12, msg=name)
    assert model.representation[1].num_batches_tracked.item() == 2


def test_backends_agree_on_a_batchnorm_model():
    model, data = batchnorm_problem(1)
    model.train()
    weights = torch.rand(16, dtype=torch.float64)
    results = []
    for backend in ("torch_func", "higher"):
        problem = make_problem(model, data, weights, inner_optimizer(model, 0.3, 0.9), batch_size=4)
        results.append(Unrolled(UnrolledOptions(steps=2, backend=backend))(problem))
    for a, b in zip(results[0].gradients, results[1].gradients):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)
        assert a.grad.abs().max() > 0
