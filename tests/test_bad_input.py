"""Bad input, end to end through the ``reweight`` command: every case exits with code 2 and one
line on stderr, ``error: ...``, naming the problem (the field path, the file, the plugin, the
URI), with no traceback; ``--debug`` shows the traceback. A plugin that fails is a one-line
warning naming it, and the run goes on with the others.

docs/errors.md shows the messages of these cases: a new kind of bad input gets a row in both.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import os
import re
import socket
import subprocess
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from pydantic import BaseModel

from reweight import Hypergradient, HypergradientResult, Strategy, WeightGradient, cli
from reweight.components.hypergradients.one_step import OneStep, OneStepOptions
from reweight.core.plugins import hookimpl, registry
from tests import datafiles

SMALL_TRAIN = {"steps": 2, "eval_every": 1, "source_batch_size": 8}
SYNTHETIC = {"name": "bad_input", "data": {"name": "synthetic_2d", "n_source": 40, "n_target": 10, "n_test": 20},
             "model": {"name": "mlp", "hidden": [4]}, "train": SMALL_TRAIN}
IMAGES = {"name": "bad_images", "data": {"name": "noisy_labels", "dataset": "mnist", "target_per_class": 2},
          "model": {"name": "mlp", "hidden": [4], "shared_head": True}, "train": SMALL_TRAIN}


def config(base: dict, **changes) -> dict:
    """``base`` with dotted paths set: ``config(SYNTHETIC, **{"train.lr": -1})``."""
    raw = yaml.safe_load(yaml.safe_dump(base))
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


def mnist(root: Path, **options) -> Path:
    """A small MNIST in the standard folder (120 train, 40 test images)."""
    folder = root / "MNIST" / "raw"
    datafiles.write_idx_set(folder, **options)
    return folder


def truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def canonical_but_not_original_test_split(root: Path) -> None:
    """A t10k pair with MNIST's canonical 10,000 examples (all zero images) that is not MNIST."""
    folder = mnist(root)
    zeros = np.zeros((10_000, 28, 28), np.uint8)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(datafiles.idx_bytes(zeros)))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(datafiles.idx_bytes(np.arange(10_000) % 10)))


def canonical_but_not_original_cifar_test_batch(root: Path) -> None:
    """A CIFAR-10 test batch of the canonical 10,000 examples (all zero images) that is not CIFAR-10."""
    import pickle

    folder = root / "cifar-10-batches-py"
    datafiles.write_cifar(folder)
    batch = {b"data": np.zeros((10_000, 3072), np.uint8), b"labels": [k % 10 for k in range(10_000)]}
    (folder / "test_batch").write_bytes(pickle.dumps(batch))


class RunsCode:
    """Unpickled, this calls ``os.system``: it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def cifar_batch_that_runs_code(root: Path) -> None:
    """A CIFAR-10 train batch whose data, unpickled by ``pickle.loads``, would run a command
    creating ``<root>/ran``."""
    import pickle

    folder = root / "cifar-10-batches-py"
    datafiles.write_cifar(folder)
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": RunsCode(root / "ran"), b"labels": [0]}))


@dataclass
class Case:
    id: str
    config: str | dict | list  # YAML text, or data written as YAML
    names: list[str]  # what the line must contain ({root}: the data root, {config}: the config file, {port})
    sets: list[str] = field(default_factory=list)  # --set overrides
    data: Callable[[Path], None] | None = None  # writes files under the data root
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] | None = None  # another command than ``run {config}``


CASES = [
    Case("malformed-yaml", "name: x\ntrain: {steps: 3\n",
         ["{config}: malformed YAML (line 3, column 1): expected ',' or '}', but got '<stream end>'"]),
    Case("yaml-value-that-is-no-value", "name: x\ndata: synthetic_2d\nwhen: 2024-02-30\n",
         ["{config}: malformed YAML: a value YAML cannot read (ValueError: day is out of range for month)"]),
    Case("not-utf8", b"name: caf\xe9\n".decode("latin-1"),
         ["{config}: not a UTF-8 text file (byte 9: invalid continuation byte)"]),
    Case("config-is-a-list", "- name: x\n- data: synthetic_2d\n", ["{config}: the config must be a mapping of fields"]),
    Case("empty-config", "", ["{config}: the config must be a mapping of fields"]),
    Case("no-such-config", SYNTHETIC, ["missing.yaml: no such config file"], argv=["run", "{dir}/missing.yaml"]),
    Case("unknown-top-level-field", config(SYNTHETIC, bogus=1), ["bogus: unknown field"]),
    Case("unknown-train-field", config(SYNTHETIC, **{"train.stepz": 3}), ["train.stepz: unknown field"]),
    Case("unknown-plugin-option", config(SYNTHETIC, strategy={"name": "soseleto", "speed": 2}),
         ["strategy.speed: unknown field"]),
    Case("missing-name", {"data": "synthetic_2d"}, ["name: Field required"]),
    Case("wrong-type", config(SYNTHETIC, **{"train.steps": "many"}),
         ["train.steps: Input should be a valid integer, unable to parse string as an integer"]),
    Case("negative-lr", config(SYNTHETIC, **{"train.lr": -0.1}), ["train.lr: Input should be greater than 0"]),
    Case("noise-rate-above-1", config(IMAGES, **{"data.noise": {"rate": 1.5}}),
         ["data.noise.rate: Input should be less than or equal to 1"], data=mnist),
    Case("checkpoint-dir-not-writable", config(SYNTHETIC, checkpoint={"dir": "/proc/reweight-checkpoints"}),
         ["/proc/reweight-checkpoints: cannot write checkpoints there (", "); set checkpoint.dir"]),
    Case("checkpoint-every-0", config(SYNTHETIC, checkpoint={"every": 0}),
         ["checkpoint.every: Input should be greater than or equal to 1"]),
    Case("schedule-without-milestones", config(SYNTHETIC, **{"train.schedule": {"kind": "step"}}),
         ["train.schedule: a step schedule needs milestones, e.g. [10000, 15000]"]),
    Case("schedule-field-of-another-kind", config(SYNTHETIC, **{"train.schedule": {"kind": "cosine", "gamma": 0.5}}),
         ["train.schedule: gamma is only for kind: step, not kind: cosine"]),
    Case("selection-fraction-and-per-class", config(SYNTHETIC, selection={"fraction": 0.2, "per_class": 2}),
         ["selection: give fraction or per_class, not both"]),
    Case("selection-patience-without-validation", config(SYNTHETIC, selection={"patience": 3}),
         ["selection: patience needs a validation part: set fraction or per_class"]),
    Case("selection-leaves-no-target", config(SYNTHETIC, selection={"per_class": 10}),
         ["target examples; holding out 10 would leave none to train the weights (lower selection.fraction or "
          "per_class)"]),
    Case("unknown-optimizer", config(SYNTHETIC, **{"train.optimizer": "rmsprop"}),
         ["train.optimizer.name: Input should be 'sgd', 'adam' or 'adamw'"]),
    Case("optimizer-field-of-another-kind", config(SYNTHETIC, **{"train.optimizer": {"name": "sgd", "betas": [0.5, 0.9]}}),
         ["train.optimizer: betas is only for name: adam or adamw, not name: sgd"]),
    Case("momentum-without-sgd", config(SYNTHETIC, **{"train.momentum": 0.5, "train.optimizer": "adam",
                                                      "train.target_optimizer": "adam"}),
         ["train: momentum is SGD's, and neither optimizer nor target_optimizer is sgd"]),
    Case("seed-count-0", config(SYNTHETIC, seeds=0), ["seeds: a seed count must be between 1 and 10000"]),
    Case("seed-too-large", config(SYNTHETIC, seeds=[2**64]),
         ["seeds.0: Input should be less than or equal to 4294967295"]),
    Case("batch-larger-than-source", config(SYNTHETIC, **{"train.source_batch_size": 41}),
         ["train.source_batch_size: 41 is larger than the source set (40 examples)"]),
    Case("batch-larger-than-images", config(IMAGES, **{"train.source_batch_size": 500}),
         ["train.source_batch_size: 500 is larger than the source set (100 examples)"], data=mnist),
    Case("bad-override-syntax", SYNTHETIC,
         ["--set 'train.steps': expected KEY=VALUE with KEY a dotted field path, e.g. train.steps=100"],
         sets=["train.steps"]),
    Case("override-empty-path", SYNTHETIC, ["--set 'train..lr=1': expected KEY=VALUE"], sets=["train..lr=1"]),
    Case("override-not-a-date", SYNTHETIC, ["train.steps: Input should be a valid integer"],
         sets=["train.steps=2024-02-30"]),
    Case("override-negative-lr", SYNTHETIC, ["train.lr: Input should be greater than 0"], sets=["train.lr=-1"]),
    Case("bad-sweep", config(SYNTHETIC, sweep={"train.lr": 0.1}),
         ["sweep.train.lr: expected a non-empty list of values, got 0.1"]),
    Case("unknown-strategy", config(SYNTHETIC, strategy="nope"),
         ["strategy.name: unknown strategy 'nope' (installed: fine_tune, joint, learning_to_reweight, meta_weight_net, "
          "soseleto, source_only, target_only, uniform)"]),
    Case("unknown-granularity", config(SYNTHETIC, granularity="per_batch"),
         ["granularity.name: unknown granularity 'per_batch' (installed: per_group, per_sample, per_task)"]),
    Case("unknown-hypergrad", config(SYNTHETIC, hypergrad={"method": "implicit"}),
         ["hypergrad.name: unknown hypergradient 'implicit' (installed: one_step, unrolled)"]),
    Case("unknown-data", config(SYNTHETIC, data="imagenet"),
         ["data.name: unknown dataset 'imagenet' (installed: image_folder, noisy_labels, synthetic_2d, "
          "synthetic_annotators, synthetic_task, table_file, tasks, tensors_file, transfer)"]),
    Case("unknown-model", config(SYNTHETIC, model="resnet"),
         ["model.name: unknown model 'resnet' (installed: cifar10_quick, digits, mlp)"]),
    Case("unknown-loss", config(SYNTHETIC, loss="focal"), ["loss.name: unknown loss 'focal' (installed: cross_entropy)"]),
    Case("label-smoothing-above-1", config(SYNTHETIC, loss={"name": "cross_entropy", "label_smoothing": 1.5}),
         ["loss.label_smoothing: Input should be less than or equal to 1"]),
    Case("unknown-image-set", config(IMAGES, **{"data.dataset": "imagenet"}),
         ["data.dataset: Input should be 'mnist', 'fashion_mnist', 'svhn', 'cifar10', 'cifar10_jpeg' or 'parquet'"]),
    Case("unknown-task-data", config(SYNTHETIC, data={"name": "tasks", "target": "synthetic_task",
                                                       "sources": [{"task": "a", "data": "nope"}]}),
         ["data.sources.0.data.name: unknown dataset 'nope' (installed: "]),
    Case("missing-data-file", IMAGES,
         ["{root}/MNIST/raw/train-images-idx3-ubyte.gz: missing; run `reweight data download mnist` (needs "
          "`pip install 'reweight[vision]'` and internet), or place the files of MNIST (the four IDX files, .gz or "
          "not) in {root}/MNIST/raw (see the data page of the docs)"]),
    Case("truncated-data-file", IMAGES,
         ["{root}/MNIST/raw/train-images-idx3-ubyte: 47048 bytes but its header declares 94096 (truncated or "
          "corrupted); run `reweight data download mnist`"],
         data=lambda root: truncate(mnist(root, gz=False) / "train-images-idx3-ubyte")),
    Case("truncated-gz-file", IMAGES,
         ["{root}/MNIST/raw/train-labels-idx1-ubyte.gz: corrupted (Compressed file ended before the end-of-stream "
          "marker was reached); run `reweight data download mnist`"],
         data=lambda root: truncate(mnist(root) / "train-labels-idx1-ubyte.gz")),
    Case("not-a-data-file", IMAGES,
         ["{root}/MNIST/raw/t10k-labels-idx1-ubyte.gz: corrupted (Not a gzipped file (b'no')); "
          "run `reweight data download mnist`"],
         data=lambda root: (mnist(root) / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not an IDX file")),
    Case("checksum-mismatch", IMAGES,
         ["{root}/MNIST/raw/t10k-images-idx3-ubyte.gz: checksum mismatch (md5 ",
          ", expected 2646ac647ad5339dbf082846283269ea): corrupted or not the original file; "
          "run `reweight data download mnist`"],
         data=canonical_but_not_original_test_split),
    Case("cifar10-checksum-mismatch", config(IMAGES, **{"data.dataset": "cifar10"}),
         ["{root}/cifar-10-batches-py/test_batch: checksum mismatch (md5 ",
          ", expected 40351d587109b95175f43aff81a1287e): corrupted or not the original file; "
          "run `reweight data download cifar10`"],
         data=canonical_but_not_original_cifar_test_batch),
    Case("cifar10-pickle-that-runs-code", config(IMAGES, **{"data.dataset": "cifar10"}),
         ["{root}/cifar-10-batches-py/data_batch_1: refused: the pickle asks for posix.system, but a CIFAR python "
          "batch holds only dicts, lists, bytes, strings, numbers and NumPy arrays; run `reweight data download "
          "cifar10`"],
         data=cifar_batch_that_runs_code),
    Case("too-few-images-per-class", config(IMAGES, **{"data.target_per_class": 13}),
         ["data.target_per_class: class 0 has 12 examples, fewer than the 13 requested"], data=mnist),
    Case("unreachable-tracking-uri", SYNTHETIC,
         ["cannot reach the MLflow tracking server http://127.0.0.1:{port}: [Errno 111] Connection refused"],
         env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:{port}"}),
    Case("sqlite-store-in-a-missing-folder", SYNTHETIC,
         ["cannot use the MLflow tracking store sqlite:///{dir}/nowhere/mlflow.db: cannot create its lock file "
          "{dir}/nowhere/mlflow.db.lock (No such file or directory)"],
         env={"MLFLOW_TRACKING_URI": "sqlite:///{dir}/nowhere/mlflow.db"}),
    Case("plugins-unknown-name", SYNTHETIC,
         ["unknown component 'sosoleto' (installed: cifar10_quick, cross_entropy, digits, entropy, fine_tune, "
          "image_folder, joint, learning_to_reweight, "
          "meta_weight_net, mlp, noisy_labels, one_step, per_group, per_sample, per_task, pseudo_label, soseleto, "
          "source_only, "
          "synthetic_2d, synthetic_annotators, synthetic_task, table_file, target_only, tasks, tensors_file, transfer, "
          "uniform, unrolled); "
          "plugins are found through the entry-point group 'reweight'"],
         argv=["plugins", "sosoleto"]),
    Case("download-unknown-set", SYNTHETIC,
         ["unknown image set 'imagenet' (known: mnist, fashion_mnist, svhn, cifar10, cifar10_jpeg)"],
         argv=["data", "download", "imagenet", "--root", "{root}"]),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Prepared:
    argv: list[str]
    names: list[str]
    env: dict[str, str]


def prepare(case: Case, where: Path) -> Prepared:
    """The case's config file, data root and environment under ``where``; its argv and expected text."""
    root = where / "data"
    root.mkdir(parents=True, exist_ok=True)
    if case.data:
        case.data(root)
    path = where / "config.yaml"
    path.write_text(case.config if isinstance(case.config, str) else yaml.safe_dump(case.config), encoding="latin-1")
    port = str(free_port())

    def fill(text: str) -> str:
        for key, value in (("{config}", path), ("{root}", root), ("{dir}", where), ("{port}", port)):
            text = text.replace(key, str(value))
        return text

    argv = [fill(arg) for arg in case.argv] if case.argv else ["run", str(path)]
    argv += [arg for override in case.sets for arg in ("--set", override)]
    env = {"REWEIGHT_DATA_ROOT": str(root), **{key: fill(value) for key, value in case.env.items()}}
    return Prepared(argv, [fill(name) for name in case.names], env)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_naming_the_problem(case, tracking_dir, monkeypatch, capsys):
    prepared = prepare(case, tracking_dir / "case")
    for key, value in prepared.env.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    code = cli.main(prepared.argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for name in prepared.names:
        assert name in lines[0]
    assert "Traceback" not in err
    if case.id not in ("unreachable-tracking-uri",):
        assert not (tracking_dir / "mlflow.db").exists()  # stopped before any run was recorded


def test_a_crafted_cifar_batch_runs_nothing(tracking_dir, monkeypatch, capsys):
    """The crafted file does run its command when unpickled plainly; read as a data set, it is
    refused before anything in it runs."""
    import pickle

    case = next(case for case in CASES if case.id == "cifar10-pickle-that-runs-code")
    prepared = prepare(case, tracking_dir / "case")
    root = tracking_dir / "case" / "data"
    for key, value in prepared.env.items():
        monkeypatch.setenv(key, value)
    assert cli.main(prepared.argv) == 2
    assert capsys.readouterr().err.startswith(f"error: {root}/cifar-10-batches-py/data_batch_1: refused: ")
    assert not (root / "ran").exists()
    pickle.loads((root / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    assert (root / "ran").exists()  # what the reader kept from happening


# --- plugins that fail: a warning naming the plugin, the rest still load ----------------------------------

@hookimpl
def _register_then_fail(register):
    raise RuntimeError("bad registration")


FAILS_TO_REGISTER = types.SimpleNamespace(register_strategies=_register_then_fail)


@pytest.fixture
def extra_entry_points(monkeypatch, tmp_path):
    """Add fake ``reweight`` entry points to the installed ones; a fresh registry before and after."""
    added: list[importlib.metadata.EntryPoint] = []
    real = importlib.metadata.entry_points

    def entry_points(**selection):
        found = real(**selection)
        return [*found, *added] if selection.get("group") == "reweight" else found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.cache_clear()
    yield added, tmp_path
    registry.cache_clear()
    sys.modules.pop("reweight_explodes", None)


@pytest.mark.parametrize(("plugin", "warning"), [
    (("fails_to_register", "tests.test_bad_input:FAILS_TO_REGISTER"),
     "warning: plugin 'fails_to_register' failed to register strategies (RuntimeError: bad registration)"),
    (("explodes", "reweight_explodes"),
     "warning: plugin 'explodes' failed to load (RuntimeError: boom at import)"),
    (("not_installed", "reweight_not_installed"),
     "warning: plugin 'not_installed' failed to load (ModuleNotFoundError: No module named 'reweight_not_installed')"),
], ids=["raises-during-registration", "raises-on-import", "module-missing"])
def test_a_failing_plugin_is_one_warning_and_the_run_goes_on(plugin, warning, extra_entry_points, tracking_dir,
                                                              capsys):
    added, site = extra_entry_points
    (site / "reweight_explodes.py").write_text("raise RuntimeError('boom at import')\n")
    added.append(importlib.metadata.EntryPoint(name=plugin[0], value=plugin[1], group="reweight"))
    path = tracking_dir / "config.yaml"
    path.write_text(yaml.safe_dump(SYNTHETIC))
    code = cli.main(["run", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err.splitlines() == [warning]
    assert "test_accuracy=" in out
    assert "soseleto" in registry().names("strategy")


def test_a_failing_plugin_is_named_beside_an_unknown_name(extra_entry_points, tracking_dir, capsys):
    """Asking for a component the broken plugin would have provided: the warning, then the error."""
    added, _ = extra_entry_points
    added.append(importlib.metadata.EntryPoint(name="half", value="reweight_half_missing", group="reweight"))
    path = tracking_dir / "config.yaml"
    path.write_text(yaml.safe_dump(config(SYNTHETIC, strategy="half")))
    code = cli.main(["run", str(path)])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 2
    assert err[0].startswith("warning: plugin 'half' failed to load (ModuleNotFoundError")
    assert err[1].startswith("error: strategy.name: unknown strategy 'half' (installed: ")


# --- the real command, in a subprocess ----------------------------------------------------------------------

def test_the_command_prints_no_traceback_unless_debug(tmp_path):
    case = next(case for case in CASES if case.id == "checksum-mismatch")
    prepared = prepare(case, tmp_path)
    clean = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}

    def command(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "reweight.cli", *extra, *prepared.argv], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300, env={**clean, **prepared.env})

    plain = command()
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert len(plain.stderr.splitlines()) == 1 and plain.stderr.startswith("error: ")
    assert all(name in plain.stderr for name in prepared.names)
    debug = command("--debug")
    assert debug.returncode == 2 and "Traceback (most recent call last)" in debug.stderr
    assert re.search(r"reweight\.core\.errors\.DataError: .*checksum mismatch", debug.stderr)
    assert debug.stderr.splitlines()[-1] == plain.stderr.strip()  # the same one line ends the traceback


# --- plugins that break their contract: one line naming the plugin and the rule, before compute is lost ----

class Table(Strategy):
    """A per-slot table trained by the hypergradient; the subclasses below each break one rule."""

    def __init__(self, options, granularity, device) -> None:
        super().__init__(options, granularity, device)
        self.alpha = torch.full((granularity.num_slots,), 0.5, device=device)

    def weights(self, batch, losses):
        return self.alpha[self.granularity.slots(batch)]

    def update(self, gradients):
        for g in gradients:
            self.alpha.index_add_(0, self.granularity.slots(g.batch), -g.grad).clamp_(0, 1)
        return self.weights(gradients[0].batch, gradients[0].losses)

    def state_dict(self):
        return {"alpha": self.alpha.clone()}

    def load_state_dict(self, state):
        self.alpha.copy_(state["alpha"])


class ColumnWeights(Table):
    def update(self, gradients):
        return super().update(gradients)[:, None]


class ZeroDimWeights(Table):
    def update(self, gradients):
        super().update(gradients)
        return torch.tensor(1.0)


class WholeTableWeights(Table):
    def update(self, gradients):
        super().update(gradients)
        return self.alpha[self.granularity.slots(gradients[0].batch)]

    def weights(self, batch, losses):
        return self.alpha


class IntegerWeights(Table):
    def update(self, gradients):
        return super().update(gradients).long()


class NaNWeights(Table):
    def update(self, gradients):
        return super().update(gradients) * float("nan")


class InfiniteWeights(Table):
    def update(self, gradients):
        return super().update(gradients) / 0.0


class MetaDeviceWeights(Table):
    def update(self, gradients):
        return super().update(gradients).to("meta")


class Fixed(Strategy):
    needs_hypergradient = False

    def weights(self, batch, losses):
        return torch.ones(len(batch) + 1)


class NumpyState(Table):
    def state_dict(self):
        return {"alpha": self.alpha.numpy()}


class OwnObject:
    def __init__(self, alpha):
        self.alpha = alpha


class OwnClassState(Table):
    def state_dict(self):
        return {"alpha": OwnObject(self.alpha.clone())}


class ForgetfulState(Table):
    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class NumpyStateLater(Table):
    """A state the checkpoint format admits before training, and not once training has begun."""

    def state_dict(self):
        trained = bool((self.alpha != 0.5).any())
        return {"alpha": self.alpha.numpy() if trained else self.alpha.clone()}


class LaxOptions(BaseModel):  # pydantic's default: unknown fields ignored
    speed: float = 1.0


class Lax(Table):
    Options = LaxOptions


def strategy_plugin(name: str, cls: type[Strategy]) -> types.SimpleNamespace:
    @hookimpl
    def register_strategies(register):
        register(name, cls)

    return types.SimpleNamespace(register_strategies=register_strategies)


def run_with_plugin(extra_entry_points, tracking_dir, plugin: str, attribute: str, raw: dict) -> int:
    """``reweight run`` of ``raw`` with this module's ``attribute`` installed as the plugin ``plugin``."""
    added, _ = extra_entry_points
    added.append(importlib.metadata.EntryPoint(name=plugin, value=f"tests.test_bad_input:{attribute}", group="reweight"))
    path = tracking_dir / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return cli.main(["run", str(path)])


CONTRACT_CASES = {
    "weights-of-shape-b-by-1": (ColumnWeights, "update() must return a floating tensor of shape (8,), one weight per "
                                "example of the batch, on cpu; got a torch.float32 tensor of shape (8, 1) on cpu"),
    "weights-0-d": (ZeroDimWeights, "update() must return a floating tensor of shape (8,), one weight per example of "
                    "the batch, on cpu; got a torch.float32 tensor of shape () on cpu"),
    "weights-the-whole-table": (WholeTableWeights, "weights() must return a floating tensor of shape (8,), one weight "
                                "per example of the batch, on cpu (or None); got a torch.float32 tensor of shape (40,)"),
    "weights-integers": (IntegerWeights, "update() must return a floating tensor of shape (8,), one weight per "
                         "example of the batch, on cpu; got a torch.int64 tensor of shape (8,) on cpu"),
    "weights-nan": (NaNWeights, "update() must return a floating tensor of shape (8,), one weight per example of the "
                    "batch, on cpu; got NaN or infinite weights"),
    "weights-infinite": (InfiniteWeights, "update() must return a floating tensor of shape (8,), one weight per "
                         "example of the batch, on cpu; got NaN or infinite weights"),
    "weights-on-another-device": (MetaDeviceWeights, "got a torch.float32 tensor of shape (8,) on meta"),
    "weights-without-hypergradient": (Fixed, "weights() must return a floating tensor of shape (8,), one weight per "
                                      "example of the batch, on cpu; got a torch.float32 tensor of shape (9,) on cpu"),
    "state-dict-numpy": (NumpyState, "state_dict() must hold only tensors, numbers, strings and lists, tuples or "
                         "dicts of them, so that a checkpoint can be resumed; state_dict()['alpha'] is a numpy.ndarray"),
    "state-dict-numpy-once-trained": (NumpyStateLater, "state_dict()['alpha'] is a numpy.ndarray"),
    "state-dict-own-class": (OwnClassState, "state_dict()['alpha'] is a tests.test_bad_input.OwnObject"),
    "state-dict-empty-but-state-changes": (ForgetfulState, "its state changed in the first step (alpha) but "
                                           "state_dict() is empty, so a resumed run would silently differ"),
}


@pytest.mark.parametrize("case", sorted(CONTRACT_CASES))
def test_a_strategy_that_breaks_its_contract_is_one_line_before_training(case, extra_entry_points, tracking_dir,
                                                                          capsys):
    cls, rule = CONTRACT_CASES[case]
    globals()["PLUGIN_UNDER_TEST"] = strategy_plugin("broken", cls)
    code = run_with_plugin(extra_entry_points, tracking_dir, "broken_plugin", "PLUGIN_UNDER_TEST",
                           config(SYNTHETIC, strategy="broken", **{"train.steps": 50}))
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: strategy 'broken' (plugin 'broken_plugin'): ") and rule in lines[0], lines[0]
    assert "test_accuracy=" not in out
    assert not list((tracking_dir / "checkpoints").glob("*.pt"))  # nothing that cannot be resumed was written


def test_plugin_options_that_do_not_forbid_unknown_fields_are_made_to(extra_entry_points, tracking_dir, capsys):
    globals()["PLUGIN_UNDER_TEST"] = strategy_plugin("lax", Lax)
    raw = config(SYNTHETIC, strategy={"name": "lax", "sped": 2})
    assert run_with_plugin(extra_entry_points, tracking_dir, "lax_plugin", "PLUGIN_UNDER_TEST", raw) == 2
    assert capsys.readouterr().err.strip() == "error: strategy.sped: unknown field"
    path = tracking_dir / "config.yaml"
    path.write_text(yaml.safe_dump(config(SYNTHETIC, strategy={"name": "lax", "speed": 2})))
    assert cli.main(["run", str(path)]) == 0, capsys.readouterr().err


@hookimpl
def register_strategy(register):  # misspelt: the hook is register_strategies
    register("never", Table)


def register_models(register):  # the right name, but not marked
    raise AssertionError("never called")


MISNAMED_HOOKS = types.SimpleNamespace(register_strategy=register_strategy, register_models=register_models)


def test_hooks_that_would_never_be_called_are_reported(extra_entry_points, tracking_dir, capsys):
    raw = config(SYNTHETIC, strategy="never")
    assert run_with_plugin(extra_entry_points, tracking_dir, "misnamed", "MISNAMED_HOOKS", raw) == 2
    assert capsys.readouterr().err.splitlines() == [
        "warning: plugin 'misnamed': register_strategy is not a reweight hook, so it is never called "
        "(did you mean register_strategies?)",
        "warning: plugin 'misnamed': register_models is not marked @reweight.hookimpl, so it is never called",
        "error: strategy.name: unknown strategy 'never' (installed: fine_tune, joint, learning_to_reweight, "
        "meta_weight_net, soseleto, source_only, target_only, uniform); plugins are found through the entry-point "
        "group 'reweight' of installed packages: install the plugin's package, or reinstall it after changing its "
        "entry points",
    ]


class ColumnGradients(Hypergradient):
    def __call__(self, problem):
        result = OneStep(OneStepOptions())(problem)
        first = result.gradients[0]
        return HypergradientResult(result.losses, [WeightGradient(first.batch, first.losses, first.grad[:, None])])


@hookimpl
def register_hypergradients(register):
    register("columns", ColumnGradients)


BROKEN_METHOD = types.SimpleNamespace(register_hypergradients=register_hypergradients)


def test_a_hypergradient_method_that_breaks_its_contract_is_named(extra_entry_points, tracking_dir, capsys):
    raw = config(SYNTHETIC, hypergrad="columns")
    assert run_with_plugin(extra_entry_points, tracking_dir, "method_plugin", "BROKEN_METHOD", raw) == 2
    assert capsys.readouterr().err.strip() == (
        "error: hypergradient 'columns' (plugin 'method_plugin'): gradients[0].grad must be dL_t/dw of each example "
        "of its batch, shape (8,); got a torch.float32 tensor of shape (8, 1) on cpu")
