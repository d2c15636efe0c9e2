"""benchmarks/paper_tables.py end to end in its quick mode, on generated data in the real file
formats: both tables written, every row with numbers, rejected rows and a missing SVHN skipped
with a line each."""

from __future__ import annotations

import csv
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from tests import datafiles

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_tables.py"


@pytest.fixture
def paper_tables(monkeypatch):
    spec = importlib.util.spec_from_file_location("paper_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "paper_tables", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| row |")]


def test_quick_mode_writes_both_tables_with_every_row(paper_tables, tmp_path, tracking_dir, monkeypatch, capsys):
    monkeypatch.setenv("REWEIGHT_DATA_ROOT", str(datafiles.write_data_root(tmp_path / "data")))
    shipped = paper_tables.best_pipeline
    monkeypatch.setattr(paper_tables, "best_pipeline", lambda steps: {
        **shipped(steps), "soseleto, c = 1, fewer steps": {"strategy.target_weight": 1.0, "train.steps": steps - 1},
        "no such row": {"strategy.no_such_option": 1.0}})
    out = tmp_path / "tables.md"
    assert paper_tables.main(["--quick", "--workers", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "projected total" in printed and "skipped row 'no such row' of cifar10" in printed

    text = out.read_text()
    for field in ("- command: `python benchmarks/paper_tables.py --quick", "- machine: CPU", "- total wall time: ",
                  "- git commit: "):
        assert field in text
    assert "Row 'no such row' skipped: the installed reweight rejects it: strategy.no_such_option" in text
    rows = {"cifar10": ["soseleto (shipped, c = 0)", "joint", "target_only", "fine_tune (3/4 source, 1/4 target)",
                        "soseleto, c = 1, fewer steps"],
            "svhn_mnist": ["soseleto", "target_only", "fine_tune (3/5 source, 2/5 target)", "joint"]}
    for row in shipped(4):  # the pipeline row runs, or is skipped by name if this reweight does not know it yet
        if f"Row {row!r} skipped" not in text:
            rows["cifar10"].append(row)
    lines = table_lines(text)
    assert len(lines) == 2 * len(rows["cifar10"]) + len(rows["svhn_mnist"])  # cifar10: accuracy and AUC
    for line in lines:
        numbers = [float(n) for n in re.findall(r"\d+\.\d+", line.split("|", 2)[2])]
        assert numbers and all(0 <= n <= 1 for n in numbers), line

    with out.with_suffix(".csv").open() as handle:
        records = list(csv.DictReader(handle))
    found = {(r["table"], r["row"], r["metric"]) for r in records}
    expected = {(table, row, "test_accuracy") for table, names in rows.items() for row in names}
    expected |= {("cifar10", row, "weight_noise_auc") for row in rows["cifar10"]}
    assert found == expected
    assert all(0 <= float(r["mean"]) <= 1 and r["n"] == "1" and r["failed"] == "0" for r in records)


def test_without_svhn_the_table_is_one_line_saying_why(paper_tables, tmp_path, tracking_dir, monkeypatch):
    root = tmp_path / "data"
    datafiles.write_idx_set(root / "MNIST" / "raw")
    monkeypatch.setenv("REWEIGHT_DATA_ROOT", str(root))
    out = tmp_path / "tables.md"
    assert paper_tables.main(["--quick", "--workers", "0", "--tables", "svhn_mnist", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.count(f"SVHN -> MNIST skipped: no train_32x32.mat, test_32x32.mat in {root / 'svhn'}") == 1
    assert not table_lines(text)


def test_dry_run_prints_the_plan_and_an_estimate(paper_tables, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REWEIGHT_DATA_ROOT", str(datafiles.write_data_root(tmp_path / "data")))
    assert paper_tables.main(["--dry-run", "--out", str(tmp_path / "tables.md")]) == 0
    printed = capsys.readouterr().out
    assert "cifar10: " in printed and "svhn_mnist: 4 rows x 2 columns" in printed and " x 3 seeds = 24 runs" in printed
    assert re.search(r"on one H100-class GPU with 4 workers: \d+\.\d min", printed)
    assert not (tmp_path / "tables.md").exists()


def test_measure_prints_every_kind_of_step(paper_tables, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REWEIGHT_DATA_ROOT", str(datafiles.write_data_root(tmp_path / "data")))
    assert paper_tables.main(["--measure", "--quick", "--tables", "cifar10"]) == 0
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and not line.startswith("| kind")}
    assert set(rows) == set(paper_tables.KINDS) and set(paper_tables.STEP["cifar10"]) < set(rows)
    assert rows["plain"][1] == "1.00"
    assert all(float(seconds) > 0 and float(gflop) > 0 and int(ops.rstrip(" |")) > 0
               for seconds, _, gflop, ops in rows.values())
