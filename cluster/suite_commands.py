"""`fleetphysics suite` and `fleetphysics plot`."""

from __future__ import annotations

import json
import sys

from agents.cli_args import add_deprecated_alias, non_negative_int, positive_float
from agents.errors import ConfigError
from experiments.presets import PRESETS
from experiments.registry import help_text

DEVICE_SPEC_HELP = "device spec: sim:BOARD (a built-in simulated board, e.g. sim:h100-sxm), sim:FILE.yaml, nvml:N or nvml:UUID"


def register(sub) -> None:
    """Add the suite commands."""
    p = sub.add_parser("suite", help="run the TR122 experiment suite on one device")
    p.add_argument("--device", required=True, metavar="SPEC", help=DEVICE_SPEC_HELP)
    add_preset_argument(p)
    p.add_argument("--experiments", default=None, help=help_text())
    p.add_argument("--out", default="runs", help="artifact root: OUT/<run_id>/<host>/<device_uid>/")
    p.add_argument("--period-ms", type=positive_float, default=None, help="poller period in ms (default: the preset's)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the simulated boards and workloads (default 0)")
    add_model_arguments(p)
    p.add_argument("--json", action="store_true", help="print the JSON summary")
    p.set_defaults(func=cmd_suite)

    p = sub.add_parser("plot", help="PNG figures of a run's artifact dir")
    p.add_argument("dir", help="a device artifact dir, or a run dir holding them")
    p.set_defaults(func=cmd_plot)


def add_preset_argument(p, default: str = "smoke") -> None:
    """--preset smoke|quick|full (how long a run measures), with the old --profile accepted."""
    new = p.add_argument("--preset", default=default, choices=PRESETS,
                         help=f"run preset: smoke (under a minute), quick (a few minutes) or full (TR122 "
                              f"durations, up to 90 min) (default {default}; formerly --profile)")
    add_deprecated_alias(p, "--profile", new)


def add_model_arguments(p) -> None:
    """--model and --dtype (suite and run): the model of the VRAM cliff and the Joule curve."""
    from experiments.model_shapes import BUILTIN_CONFIGS

    p.add_argument("--model", default=None, metavar="NAME|PATH",
                   help=f"VRAM cliff and Joule curve model: {', '.join(BUILTIN_CONFIGS)}, or a local config.json "
                        "or model directory (built with random weights; default: each experiment's own)")
    p.add_argument("--dtype", default=None, choices=("float16", "bfloat16", "float32"),
                   help="the model's dtype (default: each experiment's own)")


class _ProgressBar:
    """A rich progress bar (phase, elapsed, ETA) fed by the runners' progress callback."""

    def __init__(self, phases: list[str]) -> None:
        from warehouse.progress import new_progress

        self.phases = phases
        self.progress = new_progress()
        self.tasks = {}

    def __enter__(self):
        self.progress.__enter__()
        self.tasks = {p: self.progress.add_task(p, total=1.0) for p in self.phases}
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def __call__(self, phase: str, fraction: float) -> None:
        task = self.tasks.get(phase)
        if task is not None:
            self.progress.update(task, completed=max(0.0, min(1.0, fraction)))


def cmd_suite(args) -> int:
    """Run the suite and print a summary."""
    from experiments.suite import SuiteOptions, parse_experiments, run_suite

    experiments = parse_experiments(args.experiments)
    if args.model is not None:
        from experiments.model_shapes import resolve

        resolve(args.model)  # bad input: one line, exit 2, before the progress bar draws
    with _ProgressBar(list(experiments)) as bar:
        summary = run_suite(SuiteOptions(device=args.device, profile=args.preset, experiments=experiments, out=args.out,
                                         period_ms=args.period_ms, seed=args.seed, progress=bar,
                                         model=args.model, dtype=args.dtype))
        for phase in experiments:
            bar(phase, 1.0)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)
    return 0 if summary["run_state"] in ("completed", "timeout") else 1


def _print_summary(summary: dict) -> None:
    from rich.console import Console

    c = Console()
    sim = " [yellow](simulated)[/]" if summary["simulated"] else ""
    c.print(f"run {summary['run_id']}  device {summary['device_uid']}{sim}  "
            f"state {summary['run_state']} ({summary['end_reason']})")
    for name, figs in summary["experiments"].items():
        brief = {k: v for k, v in figs.items() if not isinstance(v, (dict, list))}
        c.print(f"  [bold]{name}[/]: {brief}")
    c.print(f"artifacts: {summary['artifact_dir']}")


def cmd_plot(args) -> int:
    """Write PNG figures next to each device's artifacts."""
    from pathlib import Path

    from experiments.plots import plot_dir

    fix = "pass a device's artifact dir (the `artifacts:` line of `fleetphysics suite`) or a run dir OUT/<run_id>"
    target = Path(args.dir)
    if not target.is_dir():
        raise ConfigError(f"plot: {args.dir} {'is not a directory' if target.exists() else 'does not exist'}; {fix}")
    paths = plot_dir(target)
    if not paths:
        raise ConfigError(f"plot: {args.dir} holds no device artifacts (no run_metadata.json under it); {fix}")
    for path in paths:
        print(path, file=sys.stdout)
    return 0
