"""The `fleetphysics` command line.

Each package contributes its subcommands through a ``register(subparsers)`` function that
adds argparse parsers and sets ``func=handler`` with ``handler(args) -> int``. Handlers raise
:class:`agents.errors.FleetPhysicsError` subclasses for expected failures; this module
prints them as one line on stderr and exits with their ``exit_code`` (2 bad input, 1 failed
run). ``bench`` subcommands register under the shared ``bench`` parser.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from agents.errors import FleetPhysicsError
from agents.safe_text import terminal_safe

# Modules that contribute commands; a module that fails to import for a missing optional
# dependency is reported when its command is used, never at startup of other commands.
COMMAND_MODULES = (
    "cluster.device_commands",
    "cluster.suite_commands",
    "cluster.fleet_commands",
    "warehouse.cli",
    "cluster.analyze_commands",
    "cluster.reanalyze_commands",
    "warehouse.verdict_cli",
    "dashboard.cli",
)
BENCH_MODULES = (
    "cluster.bench_poller",
    "cluster.bench_analysis",
    "cluster.bench_fleet",
    "warehouse.bench",
    "dashboard.bench",
)


# argparse takes a value starting with "-" for an option unless it looks like a negative
# number; UTC offsets (-05:00) and negative times are values too, so `--tz -05:00` parses
# like `--tz=-05:00`. No fleetphysics option is named like a number, so none is shadowed.
_NEGATIVE_VALUE = re.compile(r"^-\d+$|^-\d*\.\d+$|^-\d+(:\d+)+$|^-\d+(\.\d*)?[eE][-+]?\d+$")


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line (argparse's own usage errors are bad input)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_VALUE

    def error(self, message: str) -> None:  # noqa: D102
        self.exit(2, f"fleetphysics: error: {terminal_safe(message)} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every available module's subcommands."""
    parser = _Parser(prog="fleetphysics", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    bench = sub.add_parser("bench", help="benchmarks (JSON output, ratios against a baseline run alongside)")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH", parser_class=_Parser)
    for group, modules in ((sub, COMMAND_MODULES), (bench_sub, BENCH_MODULES)):
        for name in modules:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name and (exc.name == name or name.startswith(exc.name + ".")):
                    continue  # that part of the product is not built yet
                raise
            module.register(group)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FleetPhysicsError as exc:
        print(f"fleetphysics: {terminal_safe(str(exc), keep_newlines=True)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fleetphysics: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
