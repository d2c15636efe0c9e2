"""Per-group granularity: where groups come from, and the errors for bad options."""

from __future__ import annotations

import pytest
import torch

from reweight.components.granularities.groups import PerGroup, PerGroupOptions, PerTask
from reweight.components.granularities.kmeans import kmeans
from reweight.core.data import Split
from reweight.core.errors import ConfigError
from reweight.core.metrics import rank_auc, slot_summary
from reweight.experiment.config import validate
from reweight.experiment.runner import build_engine
from tests.conftest import random_problem


def source_with(meta: dict, categories: dict | None = None, n: int = 6) -> Split:
    return Split(torch.arange(n, dtype=torch.float64)[:, None], torch.tensor([2, 0, 2, 5, 0, 5][:n]), meta, categories or {})


def test_by_label_gives_one_slot_per_distinct_label():
    granularity = PerGroup(PerGroupOptions(by="label"), source_with({}))
    assert granularity.num_slots == 3
    assert granularity.slot_names() == ["group_label_0", "group_label_2", "group_label_5"]
    assert granularity.slots(source_with({}).all()).tolist() == [1, 0, 1, 2, 0, 2]


def test_by_meta_uses_the_column_and_its_value_names():
    column = torch.tensor([3, 1, 1, 0, 3, 3])
    source = source_with({"annotator": column}, {"annotator": ["ann", "bob", "c d", "dee"]})
    granularity = PerGroup(PerGroupOptions(by="meta", column="annotator"), source)
    assert granularity.slot_names() == ["group_annotator_ann", "group_annotator_bob", "group_annotator_dee"]
    assert granularity.slots(source.gather(torch.tensor([4, 3, 1]))).tolist() == [2, 0, 1]


def test_boolean_meta_column_makes_two_groups():
    source = source_with({"corrupted": torch.tensor([True, False, False, True, False, False])})
    granularity = PerGroup(PerGroupOptions(by="meta", column="corrupted"), source)
    assert granularity.num_slots == 2 and granularity.slots(source.all()).tolist() == [1, 0, 0, 1, 0, 0]


def test_slot_gradient_sums_members():
    source = source_with({"g": torch.tensor([0, 1, 0, 1, 0, 1])})
    granularity = PerGroup(PerGroupOptions(by="meta", column="g"), source)
    batch = source.gather(torch.tensor([0, 2, 3]))
    summed = granularity.slot_gradient(batch, torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    assert summed.tolist() == [3.0, 4.0]


@pytest.mark.parametrize(
    ("meta", "options", "message"),
    [
        ({"annotator": torch.zeros(6, dtype=torch.long)}, {"by": "meta", "column": "who"},
         "granularity.column: the source set has no meta column 'who' (it has: annotator)"),
        ({"score": torch.rand(6)}, {"by": "meta", "column": "score"},
         "granularity.column: meta column 'score' must hold one integer group id per example"),
        ({}, {"by": "kmeans", "k": 7, "features": "input"}, "granularity.k: 7 clusters but the source set has 6 examples"),
    ],
)
def test_bad_groupings_are_one_line_config_errors(meta, options, message):
    with pytest.raises(ConfigError) as caught:
        PerGroup(PerGroupOptions(**options), source_with(meta))
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("granularity", "message"),
    [
        ({"name": "per_group", "by": "meta"}, "granularity: by: meta needs a column"),
        ({"name": "per_group", "by": "kmeans"}, "granularity: by: kmeans needs k"),
        ({"name": "per_group", "by": "label", "k": 3}, "granularity: k is only used with by: kmeans"),
        ({"name": "per_group", "by": "kmeans", "k": 0}, "granularity.k: Input should be greater than or equal to 1"),
        ({"name": "per_group", "by": "annotator"}, "granularity.by: Input should be 'label', 'meta' or 'kmeans'"),
    ],
)
def test_bad_options_name_the_field(granularity, message):
    with pytest.raises(ConfigError) as caught:
        validate({"name": "t", "data": "synthetic_2d", "granularity": granularity})
    assert str(caught.value) == message


def test_per_task_needs_a_source_made_of_tasks():
    with pytest.raises(ConfigError, match="per_task needs a source made of tasks"):
        PerTask(PerGroupOptions(), source_with({}))


def test_kmeans_recovers_well_separated_blobs_and_is_seeded():
    generator = torch.Generator().manual_seed(0)
    truth = torch.arange(90) % 3
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = centres[truth] + 0.3 * torch.randn(90, 2, generator=generator)
    found = kmeans(points, 3, seed=1)
    pairs = {(int(t), int(f)) for t, f in zip(truth, found)}
    assert len(pairs) == 3 and len({f for _, f in pairs}) == 3  # a relabelling of the truth
    assert torch.equal(found, kmeans(points, 3, seed=1))


def test_kmeans_with_k_equal_to_n_gives_every_point_its_own_cluster():
    points = torch.randn(12, 3, generator=torch.Generator().manual_seed(2))
    assert sorted(kmeans(points, 12, seed=0).tolist()) == list(range(12))


def test_kmeans_on_the_initial_models_features_through_the_runner():
    config, options = validate({"name": "t", "data": {"name": "synthetic_2d", "n_source": 60},
                                "granularity": {"name": "per_group", "by": "kmeans", "k": 4}})
    first, again = build_engine(config, options, 3), build_engine(config, options, 3)
    granularity = first.strategy.granularity
    assert granularity.num_slots == 4 and granularity.slot_names()[0] == "group_cluster_0"
    assert torch.equal(granularity.slot_of, again.strategy.granularity.slot_of)  # seeded by the run
    assert len(granularity.slot_of.unique()) == 4


def test_rank_auc_and_slot_summary():
    assert rank_auc(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.8])) == pytest.approx(0.875)
    _, data = random_problem(0, n_source=6)
    source = Split(data.source.x, data.source.y,
                   {"g": torch.tensor([0, 0, 1, 1, 2, 2]), "harmful": torch.tensor([0, 0, 0, 0, 1, 1]).bool()})
    granularity = PerGroup(PerGroupOptions(by="meta", column="g"), source)
    weights = torch.tensor([1.0, 0.5, 0.25, 0.25, 0.0, 0.5])
    summary = slot_summary(weights, granularity, source)
    assert summary == pytest.approx({"weight_group_g_0": 0.75, "weight_group_g_1": 0.25, "weight_group_g_2": 0.25,
                                     "weight_harmful_auc": 0.75, "weight_harmful_mean": 0.25,
                                     "weight_helpful_mean": 0.5})
