"""Progress bars on stderr for long work (ingest of many dirs, the benchmarks, the suite).

The library only reports ``(phase, done, total)``; the commands decide whether to draw. A bar
is drawn only when stderr is a terminal: stdout carries the JSON, and a log or a pipe gets
no bar at all.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

Report = Callable[[str, int, int], None]


def new_progress(counts: bool = False):
    """A rich Progress on stderr: phase, bar, percent (or ``done/total``), elapsed and ETA."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    amount = TextColumn("{task.completed:,.0f}/{task.total:,.0f}") if counts else TextColumn("{task.percentage:>3.0f}%")
    return Progress(TextColumn("[bold]{task.description:<20}"), BarColumn(), amount, TimeElapsedColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True))


def no_report(phase: str, done: int, total: int) -> None:
    """The report of work nobody watches."""
    return None


@contextmanager
def progress_bars(enabled: bool | None = None) -> Iterator[Report]:
    """Yield ``report(phase, done, total)``, drawing one bar per phase in order of first report.

    ``enabled`` defaults to whether stderr is a terminal; when off, ``report`` does nothing.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield no_report
        return
    tasks: dict[str, int] = {}
    with new_progress(counts=True) as progress:
        def report(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total)
            progress.update(tasks[phase], completed=done, total=total)

        yield report


@contextmanager
def ticking(report: Report, phase: str, seconds: float, every_s: float = 0.5) -> Iterator[None]:
    """Report ``phase``, a wait of about ``seconds``, in whole seconds as they pass (a thread
    ticks every ``every_s``) and as done when the block ends; nothing when nobody watches."""
    if report is no_report:
        yield
        return
    total = max(1, round(seconds))
    start = time.monotonic()
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(every_s):
            report(phase, min(total, int(time.monotonic() - start)), total)

    report(phase, 0, total)
    ticker = threading.Thread(target=tick, name=f"progress-{phase}", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()
        report(phase, total, total)
