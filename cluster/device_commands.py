"""`fleetphysics devices` and `fleetphysics poll`."""

from __future__ import annotations

import json
import time
from pathlib import Path

from agents.cli_args import positive_float
from agents.factory import open_device, parse_device_specs
from agents.fingerprint import fingerprint_device
from agents.poller import PollerConfig, PollerProcess
from cluster.term_table import Column, fit_table

DEVICE_SPECS = "device specs, comma-separated: sim:BOARD, sim:FILE.yaml, nvml:N, nvml:UUID, nvml:all, all or auto"
STATS_KEYS = ("samples", "expected_samples", "dropped_ticks", "read_errors", "max_gap_ms", "gap_count",
              "scheduling_quality", "continuity_quality", "cpu_pct")


def register(sub) -> None:
    """Add the device commands."""
    p = sub.add_parser("devices", help="list devices, their capabilities and fingerprints")
    p.add_argument("--device", default="auto", metavar="SPEC", help=f"{DEVICE_SPECS} (default auto: NVIDIA GPUs, "
                   "else $FLEETPHYSICS_SIMULATE's boards, else every built-in board)")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("poll", help="run the strict-grid poller and show a live table")
    p.add_argument("--device", default="auto", metavar="SPEC", help=f"{DEVICE_SPECS} (default auto)")
    p.add_argument("--period-ms", type=positive_float, default=100.0, help="poller period in ms (default 100)")
    p.add_argument("--seconds", type=positive_float, default=10.0, help="how long to poll (default 10)")
    p.add_argument("--out", default="runs/poll", help="artifact dir (one sub-dir per device)")
    p.add_argument("--json", action="store_true", help="print the poller stats as JSON, no table")
    p.set_defaults(func=cmd_poll)


def describe_devices(spec_text: str) -> list[dict]:
    """Open each device once: info, capabilities, fingerprint."""
    out = []
    for spec in parse_device_specs(spec_text):
        dev = open_device(spec)
        try:
            fp = fingerprint_device(dev)
            out.append({"spec": spec.label, "backend": dev.backend, "simulated": dev.simulated, "info": dev.info.to_dict(), "capabilities": dev.capabilities.to_dict(),
                        "fingerprint": fp.to_dict()})
        finally:
            dev.close()
    return out


def cmd_devices(args) -> int:
    """List devices."""
    devices = describe_devices(args.device)
    if args.json:
        print(json.dumps(devices, indent=2, default=str))
        return 0
    from rich.console import Console

    console = Console()
    console.print(devices_table(console, devices))
    return 0


# Left out by priority when the terminal is narrow (cluster/term_table.py): the identity and
# the simulated label stay.
DEVICE_COLUMNS = (Column("device_uid"), Column("name"), Column("VRAM MiB", 1, "right"), Column("limit W", 1, "right"),
                  Column("slowdown C", 3, "right"), Column("instant", 3), Column("energy", 3), Column("fingerprint", 2))
POLL_COLUMNS = (Column("device"), Column("power W", 0, "right"), Column("instant W", 2, "right"),
                Column("temp C", 1, "right"), Column("SM MHz", 3, "right"), Column("util %", 3, "right"),
                Column("VRAM MiB", 3, "right"), Column("read", 1, "right"))


def devices_table(console, devices: list[dict]):
    """The `devices` table, fitted to ``console``'s width."""
    rows = []
    for d in devices:
        i, c = d["info"], d["capabilities"]
        name = i["name"] + (" [yellow](simulated)[/]" if i["simulated"] and "simulated" not in i["name"] else "")
        rows.append((i["uuid"], name, f"{i['vram_total_mib']:.0f}", f"{i['power_limit_w'] or float('nan'):.0f}",
                     f"{i['slowdown_temp_c'] or float('nan'):.0f}", "yes" if c["power_instant_w"] else "no",
                     "yes" if c["energy_j"] else "no", d["fingerprint"]["fingerprint"][:12]))
    return fit_table(console, "fleetphysics devices", DEVICE_COLUMNS, rows)


def _live_table(console, rows: dict, info: dict, elapsed: float, seconds: float):
    table_rows = []
    for uuid in info:
        r = rows.get(uuid, {})
        sim = info[uuid]["info"]["simulated"]

        def f(key, fmt="{:.1f}"):
            v = r.get(key)
            return "-" if v is None else fmt.format(v)

        table_rows.append((uuid + (" (sim)" if sim else ""), f("power_w"), f("power_instant_w"), f("temp_c", "{:.0f}"),
                           f("sm_clock_mhz", "{:.0f}"), f("util_gpu", "{:.0f}"), f("vram_used_mib", "{:.0f}"),
                           "ok" if r.get("read_ok", True) else "[red]fail[/]"))
    return fit_table(console, f"fleetphysics poll  {elapsed:5.1f} s / {seconds:g} s", POLL_COLUMNS, table_rows,
                     hint="widen the terminal")


def cmd_poll(args) -> int:
    """Poll devices for a while, show a live table, print the poller stats."""
    specs = parse_device_specs(args.device)
    config = PollerConfig(out_dir=str(Path(args.out)), period_ms=args.period_ms, seconds=args.seconds)
    poller = PollerProcess(specs, config)
    info = poller.start()["devices"]
    try:
        if args.json:
            stats = poller.wait(args.seconds + 30)
        else:
            from rich.console import Console
            from rich.live import Live

            start = time.monotonic()
            console = Console(stderr=True)
            with Live(_live_table(console, {}, info, 0, args.seconds), refresh_per_second=4, console=console) as live:
                while poller.alive:
                    time.sleep(0.25)
                    live.update(_live_table(console, poller.latest(), info, time.monotonic() - start, args.seconds))
            stats = poller.wait(30)
    except KeyboardInterrupt:
        stats = poller.stop()
    finally:
        poller.close()
    if stats is None:
        stats = poller.stop()
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        from rich.console import Console

        brief = {k: stats.get(k) for k in STATS_KEYS}
        brief.update(lateness_ms=stats["lateness_ms"], dt_ms=stats["dt_ms"])
        Console().print(f"poller stats ({args.out}):", brief)
    return 0
