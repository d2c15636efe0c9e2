"""``reweight compare``: read child runs back from MLflow, group them, and summarise a metric.

Runs are grouped into cells by keys (``--by``). A key is looked up, run by run, as a swept
path's tag (``sweep.<path>``), then a tag (``strategy``, ``seed``, …), then a param (any
config field, ``data.noise_rate``); ``noise`` is short for ``data.noise_rate``, and a unique
last part of a param (``noise_rate``) names it too. Without ``--by``: the strategy, every
swept path of the runs, and every other config field they differ in, so that only runs that
differ in nothing but the seed share a cell; an explicit ``--by`` that pools different
configurations is obeyed, with a note naming the fields it pooled. Each cell shows the mean ±
sample std of the final metric over its runs, and how many runs it holds (repeated runs of one
config all count).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reweight.core.errors import ReweightError
from reweight.experiment.config import COMPONENT_SECTIONS
from reweight.experiment.tracking import connect, import_mlflow, store_call

if TYPE_CHECKING:
    import pandas as pd

    from reweight.experiment.plots import RunRecord

ALIASES = {"noise": "data.noise_rate"}
FORMATS = ("table", "markdown", "csv", "json")
CHILDREN = "tags.`reweight.role` = 'child' and attributes.status = 'FINISHED'"


def experiment_name(given: str | None, client: Any) -> str:
    """The experiment to read: as named, from a config file's name, or the store's only one."""
    if given and given.endswith((".yaml", ".yml")) and Path(given).is_file():
        from reweight.experiment.config_file import load_raw

        raw = load_raw(given)
        return (raw.get("tracking") or {}).get("experiment") or str(raw.get("name"))
    if given:
        return given
    names = sorted(e.name for e in store_call(client.search_experiments) if e.name != "Default")
    if len(names) != 1:
        raise ReweightError("name the experiment to compare" + (f": one of {', '.join(names)}" if names else
                                                                   "; the tracking store has none"))
    return names[0]


def child_runs(client: Any, experiment: str, parent: str | None = None, latest: bool = False) -> pd.DataFrame:
    """The finished child runs of ``experiment`` (of one parent run if asked) as a DataFrame."""
    mlflow = import_mlflow()

    found = store_call(client.get_experiment_by_name, experiment)
    if found is None:
        names = sorted(e.name for e in store_call(client.search_experiments) if e.name != "Default")
        raise ReweightError(f"no experiment {experiment!r} in the tracking store"
                            + (f" (it has: {', '.join(names)})" if names else ""))
    ids = [found.experiment_id]
    if latest:
        newest = store_call(mlflow.search_runs, ids, "tags.`reweight.role` = 'parent'", max_results=1,
                       order_by=["attributes.start_time DESC"])
        if newest.empty:
            raise ReweightError(f"experiment {experiment!r} has no parent run")
        parent = newest["run_id"].iloc[0]
    query = CHILDREN + (f" and tags.mlflow.parentRunId = '{parent}'" if parent else "")
    runs = store_call(mlflow.search_runs, ids, query)
    if runs.empty:
        raise ReweightError(f"experiment {experiment!r} has no finished child runs"
                            + (f" under parent run {parent}" if parent else ""))
    return runs


def comparison_keys(paths: Iterable[str]) -> list[str]:
    """The strategy, then every swept path, once each (``strategy.name`` is the strategy)."""
    keys = ["strategy"]
    for path in paths:
        if path and path not in keys and path != "strategy.name":
            keys.append(path)
    return keys


def default_by(runs: pd.DataFrame) -> list[str]:
    """The default grouping: the strategy, then every swept path of the runs."""
    texts = runs["tags.reweight.sweep"].dropna() if "tags.reweight.sweep" in runs else []
    return comparison_keys(path for text in texts for path in text.split(","))


# params that vary between runs of one configuration, or that do not change what is trained
NOT_CONFIGURATION = ("seed", "seeds", "name", "train.eval_every", "train.device")
NOT_CONFIGURATION_SECTIONS = ("tracking.", "checkpoint.", "sweep.")


def configuration_fields(runs: pd.DataFrame) -> list[str]:
    """The config fields logged as params, without the seed and what only says where results go."""
    fields = (column.removeprefix("params.") for column in runs if column.startswith("params."))
    return sorted(field for field in fields
                  if field not in NOT_CONFIGURATION and not field.startswith(NOT_CONFIGURATION_SECTIONS))


def pooled_fields(runs: pd.DataFrame, cells: pd.DataFrame) -> dict[str, list[str]]:
    """The config fields whose values differ between runs that share a cell (a row of
    ``cells``, which is indexed like ``runs``), with the values pooled. A field that some runs
    did not log (they predate it, or their plugin has no such option) differs from nothing."""
    from reweight.experiment.plots import natural_key

    fields = configuration_fields(runs)
    config = runs[[f"params.{field}" for field in fields]]
    config = config.where(config.isna(), config.astype(str))
    config.columns = fields
    pooled: dict[str, set[str]] = {}
    if len(cells.columns):
        groups = list(cells.groupby(list(cells.columns), sort=False, dropna=False).indices.values())
    else:
        groups = [range(len(runs))]
    for positions in groups:
        cell = config.iloc[positions]
        for field in cell.columns[cell.nunique(dropna=True) > 1]:
            pooled.setdefault(field, set()).update(cell[field].dropna())
    return {field: sorted(values, key=natural_key) for field, values in sorted(pooled.items())}


def plugin_choice(field: str) -> bool:
    """``strategy.name``, ``data.name``, ...: the field that picks a component's plugin (whose
    options then differ with it)."""
    section, _, rest = field.partition(".")
    return rest == "name" and section in COMPONENT_SECTIONS


def distinguishing_by(runs: pd.DataFrame, by: list[str]) -> list[str]:
    """``by`` plus every config field that would otherwise pool runs of different
    configurations into one cell: only runs that differ in nothing but the seed share a row.
    Plugin choices come first, so that options which differ only with the plugin add no column."""
    import pandas as pd

    for admit in (plugin_choice, lambda field: True):
        cells = pd.DataFrame({key: key_column(runs, key) for key in by}, index=runs.index)
        by = [*by, *(field for field in pooled_fields(runs, cells) if admit(field) and field not in by)]
    return by


def pooled_note(pooled: dict[str, list[str]]) -> str | None:
    """One line naming the pooled fields; a component's options are left out when its plugin
    choice itself is pooled (they differ because the plugin does)."""
    chosen = {field.partition(".")[0] for field in pooled if plugin_choice(field)}
    shown = [field for field in pooled if plugin_choice(field) or field.partition(".")[0] not in chosen]
    if not shown:
        return None
    parts = ", ".join(f"{field} ({', '.join(pooled[field])})" for field in shown)
    return f"note: rows pool runs with different {parts}; add {'it' if len(shown) == 1 else 'them'} to --by to split them"


def key_column(runs: pd.DataFrame, key: str) -> pd.Series:
    """Each run's value for a grouping key, as text (see the module docstring for the lookup)."""
    path = ALIASES.get(key, key)
    candidates = [f"tags.sweep.{path}", f"tags.{path}", f"params.{path}"]
    if path == "strategy.name":
        candidates.insert(1, "tags.strategy")
    present = [c for c in candidates if c in runs]
    if not present:
        suffix = [c for c in runs if c.startswith("params.") and c.endswith("." + path)]
        if len(suffix) == 1:
            present = suffix
        else:
            swept = [k for k in default_by(runs) if k != "strategy"]
            hint = f"; swept here: {', '.join(swept)}" if swept else ""
            which = f" (matches {', '.join(c.removeprefix('params.') for c in suffix)})" if suffix else ""
            raise ReweightError(f"--by {key}: no tag or param of that name on these runs{which}{hint}")
    values = runs[present[0]]
    for column in present[1:]:
        values = values.fillna(runs[column])
    return values.fillna("(none)").astype(str)


def metric_column(runs: pd.DataFrame, metric: str) -> pd.Series:
    column = f"metrics.{metric}"
    if column not in runs or runs[column].isna().all():
        logged = sorted(c.removeprefix("metrics.") for c in runs if c.startswith("metrics.") and runs[c].notna().any())
        raise ReweightError(f"--metric {metric}: no run logged it (logged: {', '.join(logged)})")
    return runs[column].astype(float)


def summarize(frame: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """One row per cell: the ``by`` values, ``n`` (runs), ``<metric>_mean`` and ``<metric>_std``
    (sample std; empty with one run). ``frame`` has a column per key and per metric."""
    import pandas as pd

    from reweight.experiment.plots import natural_key

    rows = []
    for cell, runs in frame.groupby(by, sort=False, dropna=False):
        cell = cell if isinstance(cell, tuple) else (cell,)
        row: dict[str, Any] = dict(zip(by, cell))
        row["n"] = len(runs)
        for metric in metrics:
            values = runs[metric].dropna()
            row[f"{metric}_mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append(row)
    rows.sort(key=lambda row: [natural_key(str(row[key])) for key in by])
    return pd.DataFrame(rows, columns=[*by, "n", *(f"{m}_{s}" for m in metrics for s in ("mean", "std"))])


def cell_text(row: Any, metric: str, digits: int = 4) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if not math.isnan(std) else "")


def render(cells: pd.DataFrame, by: list[str], metrics: list[str], fmt: str, title: str = "") -> Any:
    """Text in ``markdown``, ``csv`` or ``json``; a rich Table for ``table``."""
    if fmt == "csv":
        return cells.to_csv(index=False, float_format="%.6g", lineterminator="\n").rstrip("\n")
    if fmt == "json":
        records = [{key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in row.items()}
                   for row in cells.to_dict(orient="records")]
        return json.dumps(records, indent=2)
    header = [*by, *(metrics if fmt == "table" else (f"{m} (mean ± std)" for m in metrics)), "n"]
    body = [[str(row[key]) for key in by] + [cell_text(row, m) for m in metrics] + [str(row["n"])]
            for _, row in cells.iterrows()]
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(*header)
    for column in table.columns[len(by):]:
        column.justify = "right"
    for row in body:
        table.add_row(*row)
    lines = [Text(title)] if title else []
    return Group(*lines, table, Text("mean ± sample std over the runs of each row; n: runs"))


def records(client: Any, runs: pd.DataFrame, by: list[str], metric: str) -> list[RunRecord]:
    """Histories of ``metric`` and final weights of every run, for the plots."""
    mlflow = import_mlflow()
    import pandas as pd

    from reweight.experiment.plots import RunRecord
    from reweight.experiment.tracking import WEIGHTS_FILE

    cells = list(zip(*(key_column(runs, key) for key in by)))
    found = []
    first: set[tuple[str, ...]] = set()

    def pictured(cell: tuple[str, ...]) -> bool:  # the image plots show one run per cell: read no more
        new = cell not in first
        first.add(cell)
        return new

    with tempfile.TemporaryDirectory() as tmp:
        for position, (run_id, cell) in enumerate(zip(runs["run_id"], cells)):
            history = store_call(client.get_metric_history, run_id, metric)
            try:
                path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=WEIGHTS_FILE,
                                                           dst_path=f"{tmp}/{position}")
                weights = pd.read_csv(path, dtype={"slot": str})
            except Exception:  # noqa: BLE001 - a run without a weights file still has curves
                weights = None
            found.append(RunRecord(cell, {metric: [(m.step, m.value) for m in history]}, weights,
                                   stored_examples(run_id, f"{tmp}/{position}") if pictured(cell) else None))
    return found


def stored_examples(run_id: str, folder: str) -> dict[str, Any] | None:
    """A run's ``examples.npz`` (image data only), or None."""
    from reweight.experiment.examples import EXAMPLES_FILE, from_bytes

    try:
        path = import_mlflow().artifacts.download_artifacts(run_id=run_id, artifact_path=EXAMPLES_FILE,
                                                            dst_path=folder)
    except Exception:  # noqa: BLE001 - most runs have none
        return None
    return from_bytes(Path(path).read_bytes())


def compare(experiment: str | None, metrics: list[str], by: list[str] | None, fmt: str,
            plot_dir: str | None = None, parent: str | None = None, latest: bool = False,
            ) -> tuple[Any, list[Path], list[str]]:
    """The rendered comparison, the plot files written, and notes for the user (the config
    fields an explicit ``by`` pooled). Without ``by``, rows are the strategy, the swept paths and
    every other field that differs between the runs, so no row mixes configurations."""
    import pandas as pd

    client = connect()
    name = experiment_name(experiment, client)
    runs = child_runs(client, name, parent, latest)
    if by is None:
        by = distinguishing_by(runs, default_by(runs))
    frame = pd.DataFrame({key: key_column(runs, key) for key in by}, index=runs.index)
    note = pooled_note(pooled_fields(runs, frame))
    notes = [note] if note else []
    for metric in metrics:
        frame[metric] = metric_column(runs, metric).to_numpy()
    cells = summarize(frame, by, metrics)
    parents = runs["tags.mlflow.parentRunId"].nunique() if "tags.mlflow.parentRunId" in runs else 0
    title = f"{name}: {len(runs)} runs from {parents} parent run{'s' * (parents != 1)}"
    written: list[Path] = []
    if plot_dir:
        from reweight.experiment import plots

        written = plots.save(plots.figures(records(client, runs, by, metrics[0]), by, metrics[0]), plot_dir)
    return render(cells, by, metrics, fmt, title), written, notes
