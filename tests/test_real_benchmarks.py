"""Conv models under every hypergradient method, the baselines' effect on θ, and a tiny run
of each real-data benchmark config with its data replaced by generated fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reweight import cli
from reweight.components.granularities.per_sample import PerSample
from reweight.components.hypergradients.one_step import OneStep, OneStepOptions
from reweight.components.hypergradients.unrolled import Unrolled, UnrolledOptions
from reweight.components.models.convnets import CifarQuickOptions, DigitsOptions, build_cifar10_quick, build_digits
from reweight.core.data import BilevelData, Split
from reweight.core.engine import Engine, TrainSettings
from reweight.core.plugins import NoOptions, registry
from tests import datafiles
from tests.conftest import inner_optimizer, make_problem

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def image_problem(builder, options, size: int, channels: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)

    def split(n):
        return Split(torch.randint(0, 256, (n, channels, size, size), generator=generator, dtype=torch.uint8),
                     torch.randint(0, 3, (n,), generator=generator))

    data = BilevelData(split(6), split(5), split(4), source_classes=3, target_classes=3)
    torch.manual_seed(seed)
    return builder(options, data).double(), data


@pytest.mark.parametrize(("builder", "options", "size", "channels"), [
    (build_digits, DigitsOptions(channels=[4, 6], hidden=[8]), 28, 1),
    (build_cifar10_quick, CifarQuickOptions(fc=8), 32, 3),
    (build_cifar10_quick, CifarQuickOptions(fc=8, shared_head=True), 32, 3),
], ids=["digits", "cifar10_quick", "cifar10_quick-shared-head"])
def test_conv_models_agree_across_hypergradient_methods(builder, options, size, channels):
    """One look-ahead step: forward-mode one_step and both unrolled backends give the same dL_t/dw.
    With a shared head the unrolled step also moves the head the target loss reads, a path the
    one-step method (v = ∇_θ L_t) leaves out by design: there only the two backends must agree."""
    model, data = image_problem(builder, options, size, channels)
    assert model.representation[0].mean.dtype == torch.float64  # buffers follow .double()
    assert all(not name.startswith("representation.0.") for name in model.representation_params())
    weights = torch.full((len(data.source),), 0.5, dtype=torch.float64)
    results = [
        OneStep(OneStepOptions(at="lookahead"))(make_problem(model, data, weights, inner_optimizer(model, 0.1))),
        Unrolled(UnrolledOptions(steps=1))(make_problem(model, data, weights, inner_optimizer(model, 0.1))),
        Unrolled(UnrolledOptions(steps=1, backend="higher"))(make_problem(model, data, weights, inner_optimizer(model, 0.1))),
    ]
    grads = [r.gradients[0].grad for r in results][1 if options.shared_head else 0:]
    assert grads[0].abs().max() > 0
    for other in grads[1:]:
        torch.testing.assert_close(other, grads[0], rtol=1e-6, atol=1e-9)


def test_shared_head_is_one_module_and_needs_one_label_space():
    model, data = image_problem(build_cifar10_quick, CifarQuickOptions(fc=8, shared_head=True), 32, 3)
    assert model.source_head is model.target_head
    data.target_classes = 4
    from reweight.core.errors import ConfigError

    with pytest.raises(ConfigError, match="model.shared_head"):
        build_cifar10_quick(CifarQuickOptions(shared_head=True), data)


def strategy(name, data, **options):
    component = registry().get("strategy", name)
    return component.factory(component.options(**options), PerSample(NoOptions(), data.source), torch.device("cpu"))


def one_step_state(name, **options):
    model, data = image_problem(build_digits, DigitsOptions(channels=[4, 6], hidden=[8]), 28, 1)
    engine = Engine(model, strategy(name, data, **options), OneStep(OneStepOptions()), data,
                    TrainSettings(source_batch_size=6, momentum=0.0, lr=0.1, target_lr=0.1), seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine.step()
    return model, data, before


def test_joint_step_adds_the_target_gradient_to_the_source_step():
    joint, data, before = one_step_state("joint")
    uniform, _, _ = one_step_state("uniform")
    fresh, _ = image_problem(build_digits, DigitsOptions(channels=[4, 6], hidden=[8]), 28, 1)
    loss = fresh.target_loss(data.target.all())
    theta = fresh.representation_params()
    grads = dict(zip(theta, torch.autograd.grad(loss, list(theta.values()))))
    for name, value in joint.representation_params().items():
        torch.testing.assert_close(value, uniform.state_dict()[name] - 0.1 * grads[name])
    for name, value in joint.source_head.state_dict().items():  # the source head sees the source loss only
        torch.testing.assert_close(value, uniform.source_head.state_dict()[name])


def test_target_only_leaves_the_source_head_and_fine_tune_switches():
    model, _, before = one_step_state("target_only")
    assert all(torch.equal(v, before[f"source_head.{k}"]) for k, v in model.source_head.state_dict().items())
    assert not torch.equal(model.representation[1].weight, before["representation.1.weight"])
    tuned, _, before = one_step_state("fine_tune", source_steps=0)  # straight to the target phase
    assert all(torch.equal(v, before[f"source_head.{k}"]) for k, v in tuned.source_head.state_dict().items())
    torch.testing.assert_close(tuned.representation[1].weight, model.representation[1].weight)
    source, _, before = one_step_state("fine_tune", source_steps=1)
    assert not torch.equal(source.source_head.weight, before["source_head.weight"])


# --- each benchmark config, end to end, on fixtures --------------------------------------

SMALL = ["seeds=[0]", "train.steps=2", "train.eval_every=1", "train.source_batch_size=8"]
RUNS = {
    "svhn_mnist.yaml": ["data.target.per_class=3"],
    "fashion_mnist_mnist.yaml": ["data.target.per_class=3"],
    "cifar10_noisy.yaml": ["data.target_per_class=3", "train.target_batch_size=8"],
    "cifar10_augmented.yaml": ["data.target_per_class=3", "train.target_batch_size=8", "stream.splits=[source]",
                               "stream.workers=0"],
    "mnist_noisy.yaml": ["data.target_per_class=3"],
    "fashion_mnist_noisy.yaml": ["data.target_per_class=3"],
    "mnist_pipeline.yaml": ["data.target_per_class=3", "selection.per_class=1", "train.target_batch_size=8",
                            "pipeline=[{phase: fine_tune, steps: 2}]"],
    "fashion_mnist_mnist_unlabeled.yaml": ["data.target.per_class=3", "unlabeled.batch_size=8"],
}


def run_cli(args, capsys):
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def fixture_root(tmp_path, monkeypatch, tracking_dir):
    root = datafiles.write_data_root(tmp_path / "data")
    monkeypatch.setenv("REWEIGHT_DATA_ROOT", str(root))
    return root


def test_every_real_benchmark_config_has_a_test():
    shipped = {p.name for p in BENCHMARKS.glob("*.yaml")} - {"synthetic_2d.yaml", "synthetic_sweep.yaml", "groups_annotators.yaml", "tasks_related.yaml",
                                                    "image_folder.yaml", "tensors_file.yaml", "table_file.yaml"}  # tests/test_data_files.py
    assert shipped == set(RUNS)


@pytest.mark.parametrize("config", sorted(RUNS))
def test_benchmark_config_runs_on_fixtures(config, fixture_root, capsys):
    sets = [arg for item in SMALL + RUNS[config] for arg in ("--set", item)]
    code, out, err = run_cli(["run", str(BENCHMARKS / config), *sets], capsys)
    assert code == 0, err
    assert "test_accuracy=" in out
    if "noisy" in config:
        assert "weight_noise_auc=" in out


@pytest.mark.parametrize("baseline", [["strategy.name=joint"], ["strategy.name=target_only"],
                                      ["strategy.name=fine_tune", "strategy.source_steps=1"], ["strategy.name=source_only"]])
def test_baselines_run_in_the_same_config(baseline, fixture_root, capsys):
    sets = [arg for item in SMALL + RUNS["svhn_mnist.yaml"] + baseline for arg in ("--set", item)]
    code, out, err = run_cli(["run", str(BENCHMARKS / "svhn_mnist.yaml"), *sets], capsys)
    assert code == 0, err and "test_accuracy=" in out


def test_svhn_mnist_without_svhn_stops_with_one_line(tmp_path, monkeypatch, tracking_dir, capsys):
    root = tmp_path / "data"
    datafiles.write_idx_set(root / "MNIST" / "raw", n_per_class=30)
    monkeypatch.setenv("REWEIGHT_DATA_ROOT", str(root))
    code, out, err = run_cli(["run", str(BENCHMARKS / "svhn_mnist.yaml")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {root / 'svhn' / 'train_32x32.mat'}: missing;")
    assert "reweight data download svhn" in err and "Traceback" not in err


def test_data_download_without_torchvision_says_what_to_place_where(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torchvision(name, *args, **kwargs):
        if name.startswith("torchvision"):
            raise ModuleNotFoundError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    code, _, err = run_cli(["data", "download", "svhn", "--root", str(tmp_path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "pip install 'reweight[vision]'" in err and str(tmp_path / "svhn" / "test_32x32.mat") in err


def test_data_list_reports_what_is_there(fixture_root, capsys):
    code, out, _ = run_cli(["data", "list"], capsys)
    assert code == 0 and "mnist" in out and "ok: 120 + 40" in out
