"""`fleetphysics bench poller`: the poller under CPU load, against the naive design.

Two measurements in one run, same devices, same period, same duration:
1. our design: the poller in its own process while a CPU-saturating pure-Python workload
   runs in another process;
2. the naive design: a poller thread inside the workload's process (TR122's), sharing the
   workload's GIL.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from agents.cli_args import positive_float, positive_int
from agents.factory import DeviceSpec, open_device, parse_device_specs
from agents.poller import PollerConfig, PollerProcess, run_poller
from warehouse.progress import Report, no_report, progress_bars, ticking

BENCH_KEYS = ("period_ms", "seconds", "devices", "samples", "expected_samples", "dropped_ticks", "read_errors",
              "lateness_ms", "dt_ms", "max_gap_ms", "cpu_pct")

CPU_BURNER = "import time\nend = time.monotonic() + {seconds}\nx = 0\nwhile time.monotonic() < end:\n    x += 1\n"


def register(bench_sub) -> None:
    """Add `bench poller`."""
    p = bench_sub.add_parser("poller", help="poller lateness and drops under CPU load vs an in-process thread")
    p.add_argument("--device", default=None, help="device specs (default: N simulated h100-sxm)")
    p.add_argument("--devices", type=positive_int, default=4, help="number of simulated devices when --device is not given")
    p.add_argument("--period-ms", type=positive_float, default=10.0)
    p.add_argument("--seconds", type=positive_float, default=30.0)
    p.add_argument("--load", choices=("cpu", "none"), default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_poller)


def _pick(stats: dict) -> dict:
    return {k: stats.get(k) for k in BENCH_KEYS}


def bench_process(specs: list[DeviceSpec], period_ms: float, seconds: float, load: str, out: Path) -> dict:
    """Our design: the poller process, with a CPU burner in another process."""
    burner = None
    if load == "cpu":
        burner = subprocess.Popen([sys.executable, "-c", CPU_BURNER.format(seconds=seconds + 30)])
    try:
        poller = PollerProcess(specs, PollerConfig(out_dir=str(out), period_ms=period_ms, seconds=seconds))
        poller.start()
        stats = poller.wait(seconds + 60)
        if stats is None:
            stats = poller.stop()
        poller.close()
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    return stats


class _Flag:
    def __init__(self) -> None:
        self.event = threading.Event()

    def is_set(self) -> bool:
        return self.event.is_set()

    def wait(self, timeout: float) -> bool:
        return self.event.wait(timeout)


def inprocess_main(job: dict) -> dict:
    """The naive design, run inside a workload process: a poller thread + a busy main thread."""
    specs = [DeviceSpec(**s) for s in job["specs"]]
    devices = [open_device(s) for s in specs]
    for d in devices:
        d.read_sample()
    config = PollerConfig(out_dir=job["out"], period_ms=job["period_ms"], seconds=job["seconds"])
    config.validate()  # creates the out dir
    result: dict = {}
    flag = _Flag()
    thread = threading.Thread(
        target=lambda: result.update(run_poller(devices, config, Path(job["out"]) / "markers.jsonl", flag)), daemon=True
    )
    thread.start()
    x = 0
    if job["load"] == "cpu":
        while thread.is_alive():  # the workload: pure Python, holding the GIL
            x += 1
    thread.join()
    if not result:
        raise RuntimeError("the in-process poller thread failed; see its traceback above")
    return result


def bench_inprocess(specs: list[DeviceSpec], period_ms: float, seconds: float, load: str, out: Path) -> dict:
    """Run :func:`inprocess_main` in a fresh process and return its stats."""
    from dataclasses import asdict

    job = {"specs": [asdict(s) for s in specs], "period_ms": period_ms, "seconds": seconds, "load": load, "out": str(out)}
    code = "import json,sys\nfrom cluster.bench_poller import inprocess_main\nprint(json.dumps(inprocess_main(json.loads(sys.argv[1]))))"
    root = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(job)], capture_output=True, text=True, cwd=root,
                          timeout=seconds + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"in-process poller benchmark failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_bench(device: str | None, devices: int, period_ms: float, seconds: float, load: str,
              progress: Report = no_report) -> dict:
    """Both measurements; returns the benchmark's JSON document. ``progress`` hears of each
    design's run in seconds (from this process, which only waits meanwhile)."""
    text = device or ",".join(["sim:h100-sxm"] * devices)
    specs = parse_device_specs(text, host="bench")
    with tempfile.TemporaryDirectory(prefix="fleetphysics-bench-") as tmp:
        with ticking(progress, "poller process", seconds):
            ours = bench_process(specs, period_ms, seconds, load, Path(tmp) / "process")
        with ticking(progress, "in-process thread", seconds):
            naive = bench_inprocess(specs, period_ms, seconds, load, Path(tmp) / "thread")
    doc = _pick(ours)
    doc["in_process_thread"] = _pick(naive)
    return doc


def cmd_bench_poller(args) -> int:
    """Print the benchmark."""
    from agents.poller import PollerConfig as _C

    _C(out_dir=tempfile.gettempdir(), period_ms=args.period_ms, seconds=args.seconds).validate()
    with progress_bars() as report:
        doc = run_bench(args.device, args.devices, args.period_ms, args.seconds, args.load, progress=report)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        from rich.console import Console

        Console().print(doc)
    return 0
