"""Data-parallel training: N ranks with per-rank batch B/N compute what one process computes
with batch B (the α table, the parameters, the metrics), to float tolerance.

Two processes with the Gloo backend on the CPU train every case on tiny generated data; the
test process trains the same cases alone. The ranks must also agree with each other exactly.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given
from hypothesis import strategies as st
from reweight_ltr import LearningToReweight
from reweight_mwn import MetaWeightNet, MetaWeightNetOptions
from reweight_soseleto import Soseleto, SoseletoOptions
from reweight_uniform import Joint, JointOptions, Uniform

from reweight.components.granularities.groups import PerGroup, PerGroupOptions
from reweight.components.granularities.per_sample import PerSample
from reweight.components.hypergradients.one_step import OneStep, OneStepOptions
from reweight.components.hypergradients.unrolled import Unrolled, UnrolledOptions
from reweight.components.models.mlp import MLPOptions, build_mlp
from reweight.core.contracts import strategy_state
from reweight.core.data import BilevelData, Split
from reweight.core.distributed import SINGLE, DataParallel, Shard
from reweight.core.engine import Engine, TrainSettings
from reweight.core.errors import ConfigError
from reweight.core.plugins import NoOptions

WORLD = 2
BENCHMARK = str(Path(__file__).resolve().parents[1] / "benchmarks" / "synthetic_2d.yaml")
STEPS = 6
SOURCE_BATCH = 8  # 4 per rank
# float32 throughout; the reductions that differ in order from one process's: each rank sums its
# shard (of the inner loss, the target loss, the per-example products) and the all-reduce adds
# the ranks' sums, where one process sums the whole batch at once
TOLERANCE = 1e-5

CASES = {
    "soseleto_one_step": ("soseleto", "per_sample", ("one_step", {}), {}),
    "soseleto_one_step_lookahead_adam": ("soseleto", "per_sample", ("one_step", {"at": "lookahead"}),
                                         {"optimizer": "adam", "lr": 0.01}),
    "soseleto_unrolled_torch_func": ("soseleto", "per_sample", ("unrolled", {"steps": 2}), {}),
    "soseleto_unrolled_higher": ("soseleto", "per_sample", ("unrolled", {"steps": 2, "backend": "higher"}), {}),
    "meta_weight_net": ("meta_weight_net", "per_sample", ("one_step", {"at": "lookahead"}), {}),
    "meta_weight_net_unrolled": ("meta_weight_net", "per_sample", ("unrolled", {"steps": 2}), {}),
    "learning_to_reweight": ("learning_to_reweight", "per_sample", ("one_step", {}), {}),
    "soseleto_per_group": ("soseleto", "per_group", ("one_step", {}), {}),
    "meta_weight_net_per_group": ("meta_weight_net", "per_group", ("unrolled", {"steps": 2}), {}),
    "learning_to_reweight_per_group": ("learning_to_reweight", "per_group", ("one_step", {}), {}),
    "uniform": ("uniform", "per_sample", ("one_step", {}), {}),
    "joint": ("joint", "per_sample", ("one_step", {}), {}),
}


def problem() -> tuple[torch.nn.Module, BilevelData]:
    """32 source examples in 3 classes, a target set of 9 (shards of 5 and 4: uneven on purpose)."""
    generator = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        return Split(torch.randn(n, 4, generator=generator), torch.randint(0, 3, (n,), generator=generator))

    data = BilevelData(split(32), split(9), split(12), 3, 3)
    torch.manual_seed(0)
    return build_mlp(MLPOptions(hidden=[8]), data), data


def engine_for(case: str, parallel: DataParallel) -> Engine:
    strategy_name, granularity_name, (method, method_options), train = CASES[case]
    model, data = problem()
    granularity = (PerGroup(PerGroupOptions(by="label"), data.source) if granularity_name == "per_group"
                   else PerSample(NoOptions(), data.source))
    cpu = torch.device("cpu")
    strategy = {
        "soseleto": lambda: Soseleto(SoseletoOptions(lr=20.0), granularity, cpu),
        "meta_weight_net": lambda: MetaWeightNet(MetaWeightNetOptions(hidden=[6], lr=0.05), granularity, cpu),
        "learning_to_reweight": lambda: LearningToReweight(NoOptions(), granularity, cpu),
        "uniform": lambda: Uniform(NoOptions(), granularity, cpu),
        "joint": lambda: Joint(JointOptions(target_weight=0.5), granularity, cpu),
    }[strategy_name]()
    hypergradient = (OneStep(OneStepOptions(**method_options)) if method == "one_step"
                     else Unrolled(UnrolledOptions(**method_options)))
    settings = TrainSettings(source_batch_size=SOURCE_BATCH, **train)
    return Engine(model, strategy, hypergradient, data, settings, seed=0, parallel=parallel)


def train(case: str, parallel: DataParallel) -> dict:
    engine = engine_for(case, parallel)
    metrics = engine.fit(STEPS, eval_every=STEPS)
    return {"strategy": strategy_state(engine.strategy) or {}, "model": engine.model.state_dict(),
            "metrics": metrics, "weights": engine.source_weights(), "last_weights": engine.last_weights.clone()}


def rank_main(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        parallel = DataParallel(rank, WORLD)
        torch.save({case: train(case, parallel) for case in CASES}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """Every case trained by two Gloo ranks (forked processes, a file store: no ports)."""
    folder = tmp_path_factory.mktemp("ranks")
    mp.start_processes(rank_main, args=(str(folder / "store"), str(folder)), nprocs=WORLD, start_method="fork")
    return [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD)]


def tensors(result: dict) -> dict[str, torch.Tensor]:
    """Every tensor of a result, by path."""
    found = {f"model.{k}": v for k, v in result["model"].items()}
    found["weights"], found["last_weights"] = result["weights"], result["last_weights"]

    def walk(value, path):
        if isinstance(value, torch.Tensor):
            found[path] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")

    walk(result["strategy"], "strategy")
    return found


def deviation(ours: dict, theirs: dict) -> float:
    """The largest absolute difference over every tensor and metric of two results."""
    a, b = tensors(ours), tensors(theirs)
    assert a.keys() == b.keys()
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].numel())
    assert ours["metrics"].keys() == theirs["metrics"].keys()
    for key, value in ours["metrics"].items():
        other = theirs["metrics"][key]
        if not (math.isnan(value) and math.isnan(other)):
            worst = max(worst, abs(value - other))
    return worst


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_compute_what_one_process_computes(ranks, case):
    alone = train(case, SINGLE)
    measured = deviation(ranks[0][case], alone)
    print(f"{case}: largest deviation {measured:.3g}")
    assert measured <= TOLERANCE, f"{case}: {measured:.3g}"
    # the training really moved, so the comparison is not between two untouched states
    untouched = engine_for(case, SINGLE).model.state_dict()
    assert max((alone["model"][k] - v).abs().max().item() for k, v in untouched.items()) > 1e-3


@pytest.mark.parametrize("case", list(CASES))
def test_every_rank_holds_the_same_state(ranks, case):
    first, second = tensors(ranks[0][case]), tensors(ranks[1][case])
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert ranks[0][case]["metrics"] == ranks[1][case]["metrics"]


def test_a_batch_that_does_not_divide_into_the_ranks_is_a_config_error():
    with pytest.raises(ConfigError, match="does not divide into 3 equal shards"):
        engine_for("soseleto_one_step", DataParallel(0, 3))  # 8 examples over 3 ranks; no collective yet


def test_a_streamed_source_without_a_distributed_sampler_is_a_config_error():
    model, data = problem()
    data.source.streamed = True
    strategy = Uniform(NoOptions(), PerSample(NoOptions(), data.source), torch.device("cpu"))
    with pytest.raises(ConfigError, match="streamed source set needs a distributed sampler"):
        Engine(model, strategy, OneStep(OneStepOptions()), data, TrainSettings(source_batch_size=8), seed=0,
               parallel=DataParallel(0, 2))


@given(size=st.integers(0, 50), world=st.integers(1, 8))
def test_shards_cut_a_batch_into_contiguous_parts_in_order(size, world):
    batch = Split(torch.arange(size).float()[:, None], torch.arange(size)).all()
    shards = [DataParallel(rank, world).shard(batch) for rank in range(world)]
    assert torch.equal(torch.cat([s.index for s in shards]) if shards else batch.index, batch.index)
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1
    for shard in shards:
        if world > 1:
            assert isinstance(shard, Shard) and shard.whole is batch
            assert torch.equal(DataParallel.local(batch.y, shard), shard.y)


@given(values=st.lists(st.floats(-100, 100), min_size=2, max_size=40), world=st.integers(2, 5))
def test_the_ranks_shares_add_up_to_the_mean(values, world):
    x = torch.tensor(values, dtype=torch.float64)
    batch = Split(x[:, None], torch.zeros(len(x), dtype=torch.long)).all()
    sums, shares = [], []
    for rank in range(world):
        parallel = DataParallel(rank, world)
        shard = parallel.shard(batch)
        if len(shard):  # a rank's share of a sum over its shard, and of its shard's own mean
            sums.append(parallel.mean(shard.x[:, 0], shard))
            shares.append(parallel.share(shard.x[:, 0].mean(), shard))
    assert torch.isclose(sum(sums), x.mean(), atol=1e-9)
    assert torch.isclose(sum(shares), x.mean(), atol=1e-9)


def command(*args: str, cwd: Path, torchrun: bool = False) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}"]
    return [*(launcher if torchrun else [sys.executable]), "-m", "reweight.cli", *args]


def clean_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}


def final_child(folder: Path) -> tuple[dict[str, float], str, str]:
    """The child run's final metrics, its weights file and its world size param."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["synthetic_2d"])
    child = runs[runs["tags.reweight.role"] == "child"].iloc[0]
    metrics = {key.removeprefix("metrics."): child[key] for key in runs if key.startswith("metrics.")}
    weights = Path(mlflow.artifacts.download_artifacts(run_id=child["run_id"], artifact_path="weights.csv",
                                                       dst_path=str(folder / "dl"))).read_text()
    return metrics, weights, child["params.distributed.world_size"]


@pytest.mark.slow
def test_a_run_killed_under_torchrun_resumes_to_the_single_process_result(tmp_path):
    """SIGTERM to torchrun mid-run: every rank stops at one step, rank 0 saves and prints the
    resume line once; ``reweight resume --nproc 2`` finishes it; the result is one process's."""
    overrides = ["--set", "train.steps=400", "--set", "checkpoint.every=20", "--set", "train.eval_every=100"]
    killed, alone = tmp_path / "killed", tmp_path / "alone"
    killed.mkdir(), alone.mkdir()
    started = subprocess.Popen(command("run", BENCHMARK, *overrides, cwd=killed, torchrun=True), cwd=killed,
                               env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list((killed / "checkpoints").glob("*.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    started.send_signal(signal.SIGTERM)
    out, err = started.communicate(timeout=120)
    assert started.returncode != 0, out + err
    assert err.count("resume with: reweight resume") == 1, err
    print(err)
    parent = err.split("resume with: reweight resume ")[1].split()[0]

    resumed = subprocess.run(command("resume", parent, "--nproc", str(WORLD), cwd=killed), cwd=killed,
                             env=clean_env(), capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step" in resumed.stdout
    print(resumed.stdout)
    reference = subprocess.run(command("run", BENCHMARK, *overrides, cwd=alone), cwd=alone, env=clean_env(),
                               capture_output=True, text=True, timeout=300, check=False)
    assert reference.returncode == 0, reference.stderr

    (metrics, weights, world), (expected, expected_weights, one) = final_child(killed), final_child(alone)
    assert (world, one) == ("2", "1")
    for key, value in expected.items():
        assert abs(metrics[key] - value) <= 1e-4, key
    rows = [line.split(",") for line in weights.splitlines()[1:]]
    expected_rows = [line.split(",") for line in expected_weights.splitlines()[1:]]
    assert max(abs(float(a[1]) - float(b[1])) for a, b in zip(rows, expected_rows)) <= 1e-4


def test_how_the_ranks_talk_is_not_part_of_what_resume_matches():
    from reweight.experiment.config_file import load_raw
    from reweight.experiment.sweep import expand

    raw = load_raw(BENCHMARK)
    assert expand(raw, ["distributed.backend=gloo"]).fingerprint == expand(raw, []).fingerprint
    with pytest.raises(ConfigError, match="distributed"):
        expand(raw, ["distributed.backend=mpi"])


def test_each_rank_runs_the_command_without_nproc():
    from reweight.cli import without_nproc

    assert without_nproc(["run", "a.yaml", "--nproc", "2", "--set", "x=1", "--nproc=3"]) == [
        "run", "a.yaml", "--set", "x=1"]


@pytest.mark.slow
def test_a_batch_that_does_not_divide_is_one_line_from_one_rank(tmp_path):
    result = subprocess.run(command("run", BENCHMARK, "--nproc", "3", "--set", "train.steps=5", cwd=tmp_path),
                            cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [("error: train.source_batch_size: the global source batch of 16 examples does not divide "
                       "into 3 equal shards, one per rank; use a multiple of 3")]
