"""`fleetphysics devices` and `fleetphysics poll`."""

from __future__ import annotations

import json
import time
from pathlib import Path

from agents.cli_args import positive_float
from agents.factory import open_device, parse_device_specs
from agents.fingerprint import fingerprint_device
from agents.poller import PollerConfig, PollerProcess

STATS_KEYS = ("samples", "expected_samples", "dropped_ticks", "read_errors", "max_gap_ms", "gap_count",
              "scheduling_quality", "continuity_quality", "cpu_pct")


def register(sub) -> None:
    """Add the device commands."""
    p = sub.add_parser("devices", help="list devices, their capabilities and fingerprints")
    p.add_argument("--device", default="auto", help="device specs (default auto: NVIDIA GPUs, else simulated)")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("poll", help="run the strict-grid poller and show a live table")
    p.add_argument("--device", default="auto", help="sim:PROFILE|sim:FILE.yaml|nvml:N|nvml:all|all|auto, comma-separated")
    p.add_argument("--period-ms", type=positive_float, default=100.0)
    p.add_argument("--seconds", type=positive_float, default=10.0)
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
    from rich.table import Table

    table = Table(title="fleetphysics devices")
    for col in ("device_uid", "name", "VRAM MiB", "limit W", "slowdown C", "instant", "energy", "fingerprint"):
        table.add_column(col)
    for d in devices:
        i, c = d["info"], d["capabilities"]
        name = i["name"] + (" [yellow](simulated)[/]" if i["simulated"] and "simulated" not in i["name"] else "")
        table.add_row(i["uuid"], name, f"{i['vram_total_mib']:.0f}", f"{i['power_limit_w'] or float('nan'):.0f}",
                      f"{i['slowdown_temp_c'] or float('nan'):.0f}", "yes" if c["power_instant_w"] else "no",
                      "yes" if c["energy_j"] else "no", d["fingerprint"]["fingerprint"][:12])
    Console().print(table)
    return 0


def _live_table(rows: dict, info: dict, elapsed: float, seconds: float):
    from rich.table import Table

    t = Table(title=f"fleetphysics poll  {elapsed:5.1f} s / {seconds:g} s")
    for col in ("device", "power W", "instant W", "temp C", "SM MHz", "util %", "VRAM MiB", "read"):
        t.add_column(col, justify="right")
    for uuid in info:
        r = rows.get(uuid, {})
        sim = info[uuid]["info"]["simulated"]

        def f(key, fmt="{:.1f}"):
            v = r.get(key)
            return "-" if v is None else fmt.format(v)

        t.add_row(uuid + (" (sim)" if sim else ""), f("power_w"), f("power_instant_w"), f("temp_c", "{:.0f}"),
                  f("sm_clock_mhz", "{:.0f}"), f("util_gpu", "{:.0f}"), f("vram_used_mib", "{:.0f}"),
                  "ok" if r.get("read_ok", True) else "[red]fail[/]")
    return t


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
            with Live(_live_table({}, info, 0, args.seconds), refresh_per_second=4, console=Console(stderr=True)) as live:
                while poller.alive:
                    time.sleep(0.25)
                    live.update(_live_table(poller.latest(), info, time.monotonic() - start, args.seconds))
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
