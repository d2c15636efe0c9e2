"""``reweight`` command line: run experiments (and sweeps), resume them, compare runs, list
plugins, fetch image sets.

User errors (bad config, missing data, unreachable tracking store) print one line and exit
with code 2; ``--debug`` shows the traceback instead. A run stopped by Ctrl-C or SIGTERM saves
a checkpoint, says how to resume, and exits with code 130.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

from reweight.core.errors import ReweightError
from reweight.experiment.interrupts import Interrupted

EXIT_USER_ERROR = 2


def make_console() -> Console:
    """Rich output; when piped, wide enough that tables are not truncated."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=max(console.width, 160))


def launched_elsewhere(args: argparse.Namespace) -> bool:
    """Whether this process is a launcher for ``--nproc`` ranks rather than a rank itself."""
    from reweight.core.distributed import launched_world

    return bool(args.nproc) and launched_world() == 1


def launch(nproc: int, argv: list[str]) -> int:
    """``torchrun --standalone --nproc-per-node N -m reweight.cli ARGV``, run in this process: torch's
    own launcher starts the ranks, forwards Ctrl-C and SIGTERM to them, and this returns the exit
    code of the ranks (the first failing one's), which print their own one-line messages."""
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, get_args_parser

    rendezvous = ["--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", f"--rdzv-id={uuid.uuid4()}"]  # --standalone's
    options = get_args_parser().parse_args([*rendezvous, f"--nproc-per-node={nproc}", "-m", "reweight.cli", *argv])
    config, command, command_args = config_from_args(options)
    try:
        elastic_launch(config, command)(*command_args)
    except ChildFailedError as error:
        return next(iter(error.failures.values())).exitcode or 1
    except SignalException as error:
        return 128 + int(error.sigval)
    return 0


def without_nproc(argv: list[str]) -> list[str]:
    """The command line of each rank: this one without ``--nproc N``."""
    kept, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == "--nproc":
            skip = True
        elif not word.startswith("--nproc="):
            kept.append(word)
    return kept


def command_run(args: argparse.Namespace) -> int:
    from reweight.core.plugins import registry
    from reweight.experiment import runner, sweep
    from reweight.experiment.config_file import load_raw

    console = make_console()
    for problem in registry().problems:
        print(f"warning: {problem}", file=sys.stderr)
    plan = sweep.expand(load_raw(args.config), args.overrides)
    runner.run(plan, console, resume=args.resume, pool=launcher(args.workers))
    return 0


def launcher(workers: int):
    """None (the serial loop) for one worker, else the process pool's entry point."""
    if workers == 1:
        return None
    from reweight.experiment import workers as pool

    return pool.launcher(workers)


def worker_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of processes, at least 1, got {text!r}")
    return value


def command_resume(args: argparse.Namespace) -> int:
    from reweight.experiment import runner, sweep
    from reweight.experiment.tracking import resumable

    raw, parent_id = resumable(args.run_id)
    runner.run(sweep.expand(raw), make_console(), resume=parent_id, pool=launcher(args.workers))
    return 0


def command_compare(args: argparse.Namespace) -> int:
    from reweight.experiment import compare

    def keys(text: str | None) -> list[str]:
        return [key.strip() for key in (text or "").split(",") if key.strip()]

    metrics = keys(args.metric) or ["test_accuracy"]
    output, written, notes = compare.compare(args.experiment, metrics, keys(args.by) or None, args.format,
                                      args.plot, args.parent, args.latest)
    if args.format == "table":
        make_console().print(output)
    else:
        print(output)
    sys.stdout.flush()  # the table first, then what it pooled
    for note in notes:
        print(note, file=sys.stderr)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def fitted(console: Console, table: Table) -> Any:
    """``table``, where it fits the console with its first column (the names) whole and every
    other column at least as wide as its longest word, the room left going to the narrowest
    columns first; else its rows as lines of ``column: value``, which a narrow terminal wraps
    without losing anything. Nothing is ever cut."""
    from rich.cells import cell_len
    from rich.measure import Measurement

    texts = [[str(column.header), *map(str, column.cells)] for column in table.columns]
    natural = [max(cell_len(line) for text in column for line in text.splitlines() or [""]) for column in texts]
    least = [natural[0], *(max(cell_len(word) for text in column for word in text.split() or [""])
                           for column in texts[1:])]
    for column, width in zip(table.columns, least):
        column.width = width
    spare = console.width - Measurement.get(console, console.options.update_width(10**6), table).maximum
    if spare >= 0:
        for index in sorted(range(len(least)), key=lambda i: natural[i] - least[i]):
            grown = min(spare, natural[index] - least[index])
            table.columns[index].width = least[index] + grown
            table.columns[index].overflow = "fold"
            spare -= grown
        return table
    headers = [str(column.header) for column in table.columns]
    lines = [str(table.title)] if table.title else []
    for row in zip(*(column[1:] for column in texts)):
        lines.append(row[0])
        lines += [f"  {header}: {value}" for header, value in zip(headers[1:], row[1:]) if value]
    if table.caption:
        lines.append(str(table.caption))
    return Text("\n".join(lines))


def type_text(annotation: Any, metadata: list[Any] = ()) -> str:
    """A field's type as a user writes its value: ``float > 0``, ``current | lookahead``,
    ``list[int > 0]``, ``int | null``."""
    import types
    import typing

    import annotated_types

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        text = "null"
    elif origin is typing.Annotated:
        return type_text(args[0], [*args[1:], *metadata])
    elif origin is typing.Literal:
        text = " | ".join(str(arg) for arg in args)
    elif origin in (typing.Union, types.UnionType):  # the field's limits are those of its non-null values
        return " | ".join(type_text(arg, () if arg is type(None) else metadata) for arg in args)
    elif origin in (list, tuple, set, dict):
        text = f"{origin.__name__}[{', '.join(type_text(arg) for arg in args if arg is not Ellipsis)}]"
    else:
        text = getattr(annotation, "__name__", str(annotation))
    bounds = {annotated_types.Gt: ("> ", "gt"), annotated_types.Ge: (">= ", "ge"), annotated_types.Lt: ("< ", "lt"),
              annotated_types.Le: ("<= ", "le"), annotated_types.MinLen: ("length >= ", "min_length"),
              annotated_types.MaxLen: ("length <= ", "max_length")}
    limits = [f"{bounds[type(item)][0]}{getattr(item, bounds[type(item)][1])}" for item in metadata
              if type(item) in bounds]
    return f"{text} {', '.join(limits)}" if limits else text


def option_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(option, type, default, description) of every field of an options model; a field that is
    itself a section of options is followed by its own fields, ``noise.rate``."""
    from pydantic_core import PydanticUndefined, to_jsonable_python

    from reweight.experiment.sweep import label

    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        nested = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if field.is_required():
            default = "required"
        elif nested:
            default = ""
        else:
            value = field.get_default(call_default_factory=True)
            default = "" if value is PydanticUndefined else label(to_jsonable_python(value))
            default = "null" if value is None else default
        kind = "section" if nested else type_text(annotation, field.metadata)
        rows.append((prefix + name, kind, default, field.description or ""))
        if nested:
            rows += option_rows(annotation, f"{prefix}{name}.")
    return rows


def options_table(component: Any) -> Table:
    summary = (component.factory.__doc__ or "").strip().split("\n\n")[0].replace("``", "`")
    title = f"{component.kind} {component.name} (plugin {component.plugin}, {component.package} {component.version})"
    table = Table("option", "type", "default", "description", title=title, title_justify="left",
                  caption=Text(" ".join(summary.split())) if summary else None, caption_justify="left")
    for row in option_rows(component.options):
        table.add_row(*map(Text, row))  # Text: a type such as list[int] is no markup
    if not table.rows:
        table.add_row("(none)", "", "", "this component takes no options")
    return table


def command_plugins(args: argparse.Namespace) -> int:
    from reweight.core.plugins import KINDS, NOT_FOUND_HINT, registry

    found = registry()
    for problem in found.problems:
        print(f"warning: {problem}", file=sys.stderr)
    console = make_console()
    everything = [found.get(kind, name) for kind in KINDS for name in found.names(kind)]
    if args.name:
        chosen = [component for component in everything if component.name == args.name]
        if not chosen:
            names = ", ".join(sorted({component.name for component in everything}))
            raise ReweightError(f"unknown component {args.name!r} (installed: {names}); {NOT_FOUND_HINT}")
    elif args.options:
        chosen = everything
    else:
        table = Table("name", "kind", "package", "version", "plugin")
        for component in everything:
            table.add_row(*map(Text, (component.name, component.kind, component.package, component.version,
                                      component.plugin)))
        console.print(fitted(console, table), soft_wrap=True)
        return 0
    for component in chosen:
        console.print(fitted(console, options_table(component)), soft_wrap=True)
    return 0


def command_data_download(args: argparse.Namespace) -> int:
    from reweight.components.datasets.catalog import resolve_data_root
    from reweight.components.datasets.download import download

    print(download(args.name, resolve_data_root(args.root)))
    return 0


def command_data_list(args: argparse.Namespace) -> int:
    from reweight.components.datasets.catalog import resolve_data_root
    from reweight.components.datasets.download import describe

    root = resolve_data_root(args.root)
    table = Table("name", "folder", "status", title=f"data root: {root}")
    for row in describe(root):
        table.add_row(*row)
    Console(highlight=False).print(table)
    return 0


def compare_formats() -> tuple[str, ...]:
    from reweight.experiment.compare import FORMATS

    return FORMATS


def parser() -> argparse.ArgumentParser:
    from reweight import __version__

    top = argparse.ArgumentParser(prog="reweight", description="Bilevel data reweighting: learn source weights on a target task.")
    top.add_argument("--version", action="version", version=f"reweight {__version__}")
    top.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = top.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run an experiment from a YAML config")
    run.add_argument("config", help="path to the experiment YAML, e.g. benchmarks/synthetic_2d.yaml")
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field, e.g. --set train.steps=100 --set strategy.name=uniform (repeatable)",
    )
    run.add_argument("--resume", action="store_true",
                     help="continue the newest unfinished run of this same config from its checkpoints "
                          "(a new run if there is none)")
    nproc_help = "train data-parallel on N processes on this machine (torchrun's --nproc-per-node N)"
    run.add_argument("--nproc", type=positive, metavar="N", help=nproc_help)
    run.add_argument("--workers", type=worker_count, default=1, metavar="N",
                     help="train N child runs at once, in N processes (one per GPU when there are GPUs, "
                          "else a share of the CPU cores); default 1, one after another")
    run.set_defaults(handler=command_run)

    resume = commands.add_parser("resume", help="continue an interrupted run from its checkpoints")
    resume.add_argument("run_id", help="the parent run id `reweight run` printed (or one of its child runs)")
    resume.add_argument("--nproc", type=positive, metavar="N", help=nproc_help)
    resume.add_argument("--workers", type=worker_count, default=1, metavar="N",
                        help="train N of the remaining child runs at once (as `reweight run --workers`)")
    resume.set_defaults(handler=command_resume)

    data = commands.add_parser("data", help="image sets: where their files go, download them")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    root_help = "the data root (default: $REWEIGHT_DATA_ROOT, else ~/.cache/reweight/data)"
    fetch = data_commands.add_parser("download", help="download an image set with torchvision (the vision extra)")
    fetch.add_argument("name", help="mnist, fashion_mnist, svhn, cifar10 (cifar10_jpeg: placed by hand)")
    fetch.add_argument("--root", help=root_help)
    fetch.set_defaults(handler=command_data_download)
    listing = data_commands.add_parser("list", help="the known image sets, their folders, and whether they are there")
    listing.add_argument("--root", help=root_help)
    listing.set_defaults(handler=command_data_list)


    compare = commands.add_parser(
        "compare", help="compare runs from MLflow: a metric's mean ± std per strategy, swept value, tag or param",
        description="Group the finished child runs of an experiment and show each group's mean ± std and run count.",
    )
    compare.add_argument("experiment", nargs="?", help="MLflow experiment name, or the experiment's YAML config "
                         "(default: the tracking store's only experiment)")
    compare.add_argument("--metric", default="test_accuracy", help="metric(s) to compare, comma-separated "
                         "(default: test_accuracy)")
    compare.add_argument("--by", help="group by these keys, comma-separated: strategy, a swept or config path "
                         "(data.noise_rate; noise for short), any tag or param (default: strategy, the swept paths and "
                         "every other config field the runs differ in)")
    compare.add_argument("--format", choices=compare_formats(), default="table", help="output format (default: table)")
    compare.add_argument("--plot", metavar="DIR", help="also write the comparison plots (PNG) to DIR")
    which = compare.add_mutually_exclusive_group()
    which.add_argument("--parent", metavar="RUN_ID", help="only the child runs of this parent run")
    which.add_argument("--latest", action="store_true", help="only the child runs of the newest parent run")
    compare.set_defaults(handler=command_compare)

    plugins = commands.add_parser(
        "plugins", help="list installed strategies, granularities, methods, data sets and models, or their options",
        description="List the installed components; with NAME (or --options), their options: type, default, meaning.",
    )
    plugins.add_argument("name", nargs="?", metavar="NAME", help="a component's name, e.g. soseleto: show its options")
    plugins.add_argument("--options", action="store_true", help="show the options of every component")
    plugins.set_defaults(handler=command_plugins)
    return top


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if getattr(args, "nproc", None) and launched_elsewhere(args):
        return launch(args.nproc, without_nproc(argv))
    from reweight.core.distributed import launched_rank

    say = launched_rank() == 0  # in a data-parallel run, one rank speaks for all
    try:
        return args.handler(args)
    except Interrupted as error:
        if say:
            print(f"stopped: {error}", file=sys.stderr)
        return error.exit_code
    except ReweightError as error:
        if args.debug:
            traceback.print_exc()
        if say:
            print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if say:
            print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
