"""The fleet's live progress table and the final comparison table (rich)."""

from __future__ import annotations

import time

from cluster.term_table import Column, fit_table

# Left out by priority on a narrow terminal (cluster/term_table.py): who, whether simulated and
# how the run ended always stay; the figures go least telling first.
PROGRESS_COLUMNS = (Column("host"), Column("state"), Column("device"), Column("power W", 1, "right"),
                    Column("temp C", 1, "right"), Column("read", 2))
COMPARISON_COLUMNS = (Column("host"), Column("device"), Column("sim"), Column("idle W", 1, "right"),
                      Column("update ms", 4, "right"), Column("rise ms", 4, "right"), Column("VRAM cliff", 2, "right"),
                      Column("J/token", 2, "right"), Column("tau s", 3, "right"), Column("equilibrium", 3),
                      Column("state"))


class FleetProgress:
    """A live table, one row per host: state, elapsed, latest power and temperature."""

    def __init__(self, agents: dict, enabled: bool = True, status_timeout_s: float = 0.5) -> None:
        self.agents = agents
        self.enabled = enabled
        self.timeout = status_timeout_s
        self.start = time.monotonic()
        self.live = None
        self.console = None
        self._last = 0.0

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            self.console = Console(stderr=True)
            self.live = Live(self._table(None, {}), console=self.console, refresh_per_second=2)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)

    def refresh(self, status) -> None:
        """Poll the agents (with a timeout each) and redraw, at most every 2 s."""
        if self.live is None or time.monotonic() - self._last < 2.0:
            return
        self._last = time.monotonic()
        import ray

        latest = {}
        for host, (agent, _) in self.agents.items():
            state = next((h.state for h in status.hosts if h.host == host), "?")
            if state != "running":
                continue
            try:
                latest[host] = ray.get(agent.status.remote(), timeout=self.timeout)
            except Exception:  # noqa: BLE001 - a slow answer is shown as missing, never blocks the run
                latest[host] = {}
        self.live.update(self._table(status, latest))

    def _table(self, status, latest: dict):
        rows = []
        for host, (_, info) in self.agents.items():
            state = next((h.state for h in status.hosts if h.host == host), "starting") if status else "starting"
            latest_rows = (latest.get(host) or {}).get("latest") or {}
            if not latest_rows:
                rows.append((host, state, ", ".join(info.get("devices", [])), "-", "-", "-"))
            for uid, r in latest_rows.items():
                rows.append((host, state, uid, _f(r.get("power_w")), _f(r.get("temp_c"), "{:.0f}"),
                             "ok" if r.get("read_ok", True) else "fail"))
        return fit_table(self.console, f"fleetphysics run  {time.monotonic() - self.start:5.0f} s", PROGRESS_COLUMNS,
                         rows, hint="widen the terminal")


def _state(run_state, end_reason) -> str:
    """``completed``, or ``partial (timeout)`` when the reason says more than the state."""
    return str(run_state) if end_reason in (None, run_state) else f"{run_state} ({end_reason})"


def _f(v, fmt="{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def print_comparison(summary: dict) -> None:
    """The comparison table of a fleet run, simulated devices labelled, and next steps."""
    from rich.markup import escape

    c = report_console()
    rows = []
    for d in summary["devices"]:
        idle = "-" if d.get("idle_w") is None else f"{d['idle_w']:.1f}" + (
            f" ± {d['idle_sem_w']:.2f}" if d.get("idle_sem_w") is not None else "")
        eq = d.get("equilibrium")
        tau = d.get("tau_s")  # two significant digits below 10 s: a short soak's 0.17 s tau never reads 0
        tau_text = _f(tau, "{:.0f}" if (tau or 0) >= 10 else "{:.2g}")
        rows.append((str(d.get("host")), str(d.get("device_uid")), "[yellow]simulated[/]" if d.get("simulated") else "real",
                     idle, _f(d.get("update_period_ms"), "{:.0f}"), _f(d.get("rise_ms"), "{:.0f}"),
                     str(d.get("vram_cliff") if d.get("vram_cliff") is not None else "-"),
                     _f(d.get("j_per_token"), "{:.3g}"), tau_text,
                     "-" if eq is None else ("reached" if eq else "predicted"),
                     _state(d.get("run_state"), d.get("end_reason"))))
    c.print(fit_table(c, f"fleetphysics run {summary['run_id']}: {summary['run_state']}", COMPARISON_COLUMNS, rows,
                      hint="widen the terminal, or see them all with --json or on the dashboard"))
    for host, h in (summary.get("hosts") or {}).items():
        if h.get("state") != "done":  # why a run is partial: each host that did not finish, and the cause
            c.print(f"[red]{escape(host)}: {h.get('state')}[/] - {escape(h.get('reason') or 'no reason given')}",
                    highlight=False, soft_wrap=True)
    for d in summary["devices"]:
        if d.get("error"):
            c.print(f"[red]{escape(str(d.get('host')))} {escape(str(d.get('device_uid')))}: "
                    f"{d.get('note') or 'error'}[/] - {escape(d['error'])}", highlight=False, soft_wrap=True)
    c.print(f"warehouse: {summary['warehouse']}   dashboard: fleetphysics dashboard --warehouse {summary['warehouse']}",
            soft_wrap=True)
    if summary.get("out"):
        c.print(f"artifacts: {summary['out']}/{summary['run_id']}/<host>/<device_uid>", soft_wrap=True)
    if summary.get("run_state_error"):
        c.print(f"[red]run state not stored[/] - {escape(summary['run_state_error'])}", highlight=False, soft_wrap=True)


# A job log or a pipe is no terminal: rich would then lay tables out in 80 columns and cut
# every long host or device id to "…". Wide enough for the comparison table's natural width.
PIPE_WIDTH = 240


def report_console():
    """A console for the final report: the terminal's width (or $COLUMNS when set), else (a
    pipe, a Ray job's log) wide."""
    import os
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit() else Console(width=PIPE_WIDTH)
