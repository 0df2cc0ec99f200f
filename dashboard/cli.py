"""`fleetphysics dashboard`: run the Streamlit app on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from agents.errors import ConfigError

APP = Path(__file__).resolve().parent / "app.py"
DEFAULT_PORT = 8501


def register(subparsers) -> None:
    """Add `dashboard [--warehouse PATH] [--port 8501]`."""
    from warehouse.connection import default_warehouse

    p = subparsers.add_parser("dashboard", help="compare the fleet in the browser (Streamlit, read-only)")
    p.add_argument("--warehouse", default=default_warehouse(), metavar="PATH",
                   help="warehouse file (default: $FLEETPHYSICS_WAREHOUSE, else ./fleet.duckdb)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    p.set_defaults(func=cmd_dashboard)


def streamlit_command(warehouse: str, port: int) -> list[str]:
    """The `streamlit run` command line the dashboard runs."""
    return [sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
            "--", "--warehouse", warehouse]


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM when the command dies, even by
    SIGKILL (elsewhere the SIGTERM handler below is what stops it)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the server the way Ctrl+C does


def cmd_dashboard(args) -> int:
    """Run Streamlit in the foreground until it exits, Ctrl+C or SIGTERM (both stop it)."""
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: pass a TCP port between 1 and 65535 (default {DEFAULT_PORT})")
    warehouse = os.path.abspath(args.warehouse)
    if not os.path.isfile(warehouse):
        print(f"fleetphysics: {warehouse} does not exist yet; the dashboard will say how to fill it "
              "(`make run` or `fleetphysics run`)", file=sys.stderr)
    print(f"fleetphysics dashboard on http://127.0.0.1:{args.port} (warehouse {warehouse}); Ctrl+C stops it",
          file=sys.stderr)
    proc = subprocess.Popen(streamlit_command(warehouse, args.port), preexec_fn=_die_with_parent)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
