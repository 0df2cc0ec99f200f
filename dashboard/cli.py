"""`fleetphysics dashboard`: run the Streamlit app on 127.0.0.1."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from agents.cli_args import number

APP = Path(__file__).resolve().parent / "app.py"
DEFAULT_PORT = 8501
PORT = number(int, 1, 65535, low_open=False)
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def register(subparsers) -> None:
    """Add `dashboard [--warehouse PATH] [--port 8501]`."""
    from warehouse.connection import default_warehouse

    p = subparsers.add_parser("dashboard", help="compare the fleet in the browser (Streamlit, read-only)")
    p.add_argument("--warehouse", default=default_warehouse(), metavar="PATH",
                   help="warehouse file (default: $FLEETPHYSICS_WAREHOUSE, else ./fleet.duckdb)")
    p.add_argument("--port", type=PORT, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    p.set_defaults(func=cmd_dashboard)


def streamlit_command(warehouse: str, port: int) -> list[str]:
    """The `streamlit run` command line the dashboard runs."""
    return [sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
            "--", "--warehouse", warehouse]


class _Stopped(Exception):
    """A stop signal (SIGTERM, SIGHUP) reached the CLI."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum, _frame) -> None:
    raise _Stopped(signum)


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the CLI dies, even by kill -9."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the signal handlers below still stop it
        pass


def stop_server(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Terminate the Streamlit server and wait for it; kill it after ``grace_s``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cmd_dashboard(args) -> int:
    """Run Streamlit in the foreground until it exits, Ctrl+C, SIGTERM or SIGHUP; stopping
    the CLI always stops the server it started."""
    warehouse = os.path.abspath(args.warehouse)
    if not os.path.isfile(warehouse):
        print(f"fleetphysics: {warehouse} does not exist yet; the dashboard will say how to fill it "
              "(`make run` or `fleetphysics run`)", file=sys.stderr)
    print(f"fleetphysics dashboard on http://127.0.0.1:{args.port} (warehouse {warehouse}); Ctrl+C stops it",
          file=sys.stderr)
    previous = {s: signal.signal(s, _raise_stopped) for s in _STOP_SIGNALS}
    proc = None
    try:
        proc = subprocess.Popen(streamlit_command(warehouse, args.port),
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        return proc.wait()
    except _Stopped as stop:
        print(f"fleetphysics: {signal.Signals(stop.signum).name}: stopping the dashboard", file=sys.stderr)
        return 128 + stop.signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if proc is not None:
            stop_server(proc)
