"""`fleetphysics reanalyze`: run an experiment's analysis of artifact dirs again and write
its report and tables (an artifact dir from before experiments wrote their tables)."""

from __future__ import annotations

import json


def register(sub) -> None:
    """Add the reanalyze command."""
    p = sub.add_parser("reanalyze", help="run training_coupling's analysis of artifact dirs again from their trace "
                                         "and report, and write its report and tables (for dirs that lack them)")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="device dir, run dir or a root holding run dirs")
    p.add_argument("--json", action="store_true", help="print the files written as JSON")
    p.set_defaults(func=cmd_reanalyze)


def cmd_reanalyze(args) -> int:
    """Reanalyse every device dir under the given dirs (all are found before any is written)."""
    from agents.errors import ConfigError
    from experiments.reanalyze import REANALYSABLE, reanalyze_device_dir
    from warehouse.artifacts import find_device_dirs

    device_dirs = [d for path in args.dirs for d in find_device_dirs(path)]
    written = {str(d): [str(p) for p in reanalyze_device_dir(d)] for d in device_dirs}
    written = {d: files for d, files in written.items() if files}
    if not written:
        raise ConfigError(f"{', '.join(args.dirs)}: no device dir with a report of {', '.join(REANALYSABLE)}; "
                          "the other experiments' tables are written by the suite: run it again")
    if args.json:
        print(json.dumps(written, indent=2))
    else:
        for d, files in written.items():
            print(f"{d}: wrote {', '.join(p.rsplit('/', 1)[-1] for p in files)}")
    return 0
