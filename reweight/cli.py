"""``reweight`` command line: run experiments, list plugins.

User errors (bad config, missing data, unreachable tracking store) print one line and exit
with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from reweight.errors import ReweightError

EXIT_USER_ERROR = 2


def command_run(args: argparse.Namespace) -> int:
    from reweight import config as config_module
    from reweight import runner
    from reweight.plugins import registry

    console = Console(highlight=False)
    for problem in registry().problems:
        print(f"warning: {problem}", file=sys.stderr)
    config, options = config_module.load(args.config, args.overrides)
    runner.run(config, options, console)
    return 0


def command_plugins(args: argparse.Namespace) -> int:
    from reweight.plugins import KINDS, registry

    found = registry()
    table = Table("name", "kind", "package", "version", "plugin")
    for kind in KINDS:
        for name in found.names(kind):
            component = found.get(kind, name)
            table.add_row(name, kind, component.package, component.version, component.plugin)
    console = Console(highlight=False)
    console.print(table)
    for problem in found.problems:
        print(f"warning: {problem}", file=sys.stderr)
    return 0


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
    run.set_defaults(handler=command_run)

    plugins = commands.add_parser("plugins", help="list installed strategies, granularities, methods, data sets and models")
    plugins.set_defaults(handler=command_plugins)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except ReweightError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
