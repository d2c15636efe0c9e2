"""Properties that tie the granularities together, checked through whole engine runs."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reweight_soseleto import Soseleto, SoseletoOptions

from reweight.components.datasets.synthetic_tasks import SyntheticTaskOptions, build_synthetic_task
from reweight.components.datasets.tasks import TasksOptions, TaskSpec, build_tasks
from reweight.components.granularities.groups import PerGroup, PerGroupOptions, PerTask
from reweight.components.granularities.per_sample import PerSample
from reweight.components.hypergradients.one_step import OneStep, OneStepOptions
from reweight.components.models.mlp import MLPOptions, build_mlp
from reweight.core.data import BilevelData, Split
from reweight.core.engine import Engine, TrainSettings
from reweight.core.plugins import NoOptions
from tests.conftest import inner_optimizer, make_problem, random_problem

seeds = st.integers(0, 10_000)


def run(model, data, granularity, steps=4, batch_size=4, at="current", lr=20.0):
    strategy = Soseleto(SoseletoOptions(lr=lr), granularity, torch.device("cpu"))
    settings = TrainSettings(source_batch_size=batch_size, momentum=0.5)
    engine = Engine(model, strategy, OneStep(OneStepOptions(at=at)), data, settings, seed=0)
    for _ in range(steps):
        engine.step()
    return engine


def with_meta(data: BilevelData, **meta: torch.Tensor) -> BilevelData:
    data.source = Split(data.source.x, data.source.y, {**data.source.meta, **meta})
    return data


def same_parameters(a, b) -> None:
    for mine, theirs in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(seed=seeds, at=st.sampled_from(["current", "lookahead"]))
def test_one_example_per_group_is_per_sample(seed, at):
    model, data = random_problem(seed)
    labels = torch.randperm(len(data.source), generator=torch.Generator().manual_seed(seed))
    with_meta(data, who=labels)
    per_sample = run(model, data, PerSample(NoOptions(), data.source), at=at)
    model_g, _ = random_problem(seed)
    per_group = run(model_g, data, PerGroup(PerGroupOptions(by="meta", column="who"), data.source), at=at)
    torch.testing.assert_close(per_group.strategy.alpha[labels], per_sample.strategy.alpha, rtol=0, atol=1e-12)
    same_parameters(model_g, model)


@settings(max_examples=15, deadline=None)
@given(seed=seeds, c=st.floats(0.05, 1.0))
def test_one_group_is_one_global_scale(seed, c):
    """A single group's hypergradient is exactly d/dc L_t(θ − λ c ∇θ mean ℓ): the derivative
    with respect to one global scale of the source loss."""
    model, data = random_problem(seed)
    with_meta(data, one=torch.zeros(len(data.source), dtype=torch.long))
    granularity = PerGroup(PerGroupOptions(by="meta", column="one"), data.source)
    source, target = data.source.all(), data.target.all()
    weights = torch.full((len(source),), c, dtype=torch.float64)
    problem = make_problem(model, data, weights, inner_optimizer(model, 0.3))
    per_example = OneStep(OneStepOptions(at="lookahead"))(problem).gradients[0].grad
    slot = granularity.slot_gradient(source, per_example)

    scale = torch.tensor(c, dtype=torch.float64, requires_grad=True)
    theta = model.representation_params()
    grads = torch.autograd.grad(model.source_losses(source).mean(), list(theta.values()), create_graph=True)
    stepped = {name: p - 0.3 * scale * g for (name, p), g in zip(theta.items(), grads)}
    (expected,) = torch.autograd.grad(model.target_loss(target, stepped), scale)
    assert slot.shape == (1,)
    torch.testing.assert_close(slot[0], expected, rtol=1e-9, atol=1e-12)

    engine = run(model, data, granularity)
    weights_now = engine.source_weights()
    assert engine.strategy.alpha.shape == (1,) and torch.all(weights_now == weights_now[0])


def one_task_problem(seed: int, tasks: bool) -> tuple[torch.nn.Module, BilevelData]:
    options = SyntheticTaskOptions(n_source=24, target_per_class=2, n_test=10, dim=3, clusters=4, classes=2)
    if tasks:
        spec = TaskSpec.model_validate({"task": "only", "data": {"name": "synthetic_task", **options.model_dump()}})
        data = build_tasks(TasksOptions.model_validate({"target": spec.data.model_dump(), "sources": [spec.model_dump()]}), seed)
    else:
        data = build_synthetic_task(options, seed)
        with_meta(data, one=torch.zeros(len(data.source), dtype=torch.long))
    torch.manual_seed(seed)
    model = build_mlp(MLPOptions(hidden=[5]), data)
    model.restrict_source_labels(data.source_label_mask())
    return model, data


@settings(max_examples=10, deadline=None)
@given(seed=seeds)
def test_one_task_is_one_group(seed):
    task_model, task_data = one_task_problem(seed, tasks=True)
    group_model, group_data = one_task_problem(seed, tasks=False)
    assert torch.equal(task_data.source.x, group_data.source.x) and torch.equal(task_data.source.y, group_data.source.y)
    per_task = run(task_model, task_data, PerTask(NoOptions(), task_data.source))
    per_group = run(group_model, group_data, PerGroup(PerGroupOptions(by="meta", column="one"), group_data.source))
    assert per_task.strategy.granularity.slot_names() == ["task_only"]
    torch.testing.assert_close(per_task.strategy.alpha, per_group.strategy.alpha, rtol=0, atol=0)
    same_parameters(task_model, group_model)


@settings(max_examples=15, deadline=None)
@given(seed=seeds, kind=st.sampled_from(["per_sample", "label", "meta"]), at=st.sampled_from(["current", "lookahead"]))
def test_permuting_the_source_permutes_its_weights_and_nothing_else(seed, kind, at):
    """Full-batch steps, so the permuted run sees the same examples in another order (sums
    in another order too: SOSELETO's float32 table sets the tolerance)."""
    def granularity(source):
        if kind == "per_sample":
            return PerSample(NoOptions(), source)
        return PerGroup(PerGroupOptions(by=kind, column="g" if kind == "meta" else None), source)

    model, data = random_problem(seed)
    with_meta(data, g=torch.arange(len(data.source)) % 4)
    n = len(data.source)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    original = run(model, data, granularity(data.source), batch_size=n, at=at)

    permuted_model, permuted = random_problem(seed)
    permuted.source = Split(data.source.x[order], data.source.y[order], {k: v[order] for k, v in data.source.meta.items()})
    shuffled = run(permuted_model, permuted, granularity(permuted.source), batch_size=n, at=at)

    close = {"rtol": 1e-5, "atol": 1e-6}
    assert original.source_weights().unique().numel() > 1  # the weights did move, and not all alike
    torch.testing.assert_close(shuffled.source_weights(), original.source_weights()[order], **close)
    if kind != "per_sample":
        torch.testing.assert_close(shuffled.strategy.alpha, original.strategy.alpha, **close)
    for mine, theirs in zip(permuted_model.parameters(), model.parameters()):
        torch.testing.assert_close(mine, theirs, **close)
