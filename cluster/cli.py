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


DESCRIPTION = ("Measure the physics of every GPU host (idle power, sensor response, VRAM cliff,\n"
               "energy per token, thermal equilibrium) before trusting a benchmark on it, and\n"
               "compare the hosts.")
START_HERE = """\
start here:
  make run                (or: fleetphysics run) measures every GPU host of the
                          embedded local Ray with the smoke preset (a simulated
                          fleet of three boards when this machine has no GPU)
                          into ./fleet.duckdb and prints a comparison table
  fleetphysics dashboard  then compare the hosts in the browser
                          (http://127.0.0.1:8501)
  fleetphysics verdict    or ask which devices are ready to measure on

words: a *preset* (--preset smoke|quick|full) is how long a run measures; a
*board* (sim:<board>, --simulate-boards, $FLEETPHYSICS_SIMULATE) is a simulated
GPU model; --device takes a device spec (sim:h100-sxm, nvml:0, all),
--device-uid a device's identity in the warehouse, --run a run id.
`fleetphysics COMMAND --help` explains each command."""


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every available module's subcommands."""
    parser = _Parser(prog="fleetphysics", description=DESCRIPTION, epilog=START_HERE,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
