"""`fleetphysics bench poller`: the poller under CPU load, against the naive design.

Three measurements in one run, same devices, same period, same duration:
1. our design: the poller in its own process while a CPU-saturating pure-Python workload
   runs in another process;
2. the naive design: a poller thread inside the workload's process (TR122's), sharing the
   workload's GIL;
3. the same thread tuned as the poller process is: GIL switch interval 0.5 ms, gc.freeze()
   before the grid, 1 us timer slack and the same priority request (SCHED_FIFO, else
   nice -10) for the thread, so the comparison is with the best a thread can do, not a
   straw man.
``ratios`` divides each thread's p99 lateness and dropped ticks by the process's.
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
from agents.poller import PollerConfig, PollerProcess, _raise_priority, _tight_timer_slack, run_poller
from warehouse.progress import Report, no_report, progress_bars, ticking

BENCH_KEYS = ("period_ms", "seconds", "devices", "samples", "expected_samples", "dropped_ticks", "read_errors",
              "lateness_ms", "dt_ms", "max_gap_ms", "cpu_pct")

CPU_BURNER = "import time\nend = time.monotonic() + {seconds}\nx = 0\nwhile time.monotonic() < end:\n    x += 1\n"


def register(bench_sub) -> None:
    """Add `bench poller`."""
    p = bench_sub.add_parser("poller", help="poller lateness and drops under CPU load vs an in-process thread")
    p.add_argument("--device", default=None, metavar="SPEC",
                   help="device specs, comma-separated: sim:BOARD, nvml:N, nvml:all (default: --devices simulated h100-sxm)")
    p.add_argument("--devices", type=positive_int, default=4, metavar="N",
                   help="how many simulated h100-sxm boards when --device is not given (default 4)")
    p.add_argument("--period-ms", type=positive_float, default=10.0, help="poller period in ms (default 10)")
    p.add_argument("--seconds", type=positive_float, default=30.0, help="how long to poll (default 30)")
    p.add_argument("--load", choices=("cpu", "none"), default="cpu",
                   help="cpu: a busy-looping process beside the poller; none: no extra load (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object (else a readable dict)")
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
    """The thread design, run inside a workload process: a poller thread + a busy main thread
    (``job["tuned"]``: with the poller process's switch interval, gc.freeze, timer slack and
    priority request)."""
    import gc

    specs = [DeviceSpec(**s) for s in job["specs"]]
    devices = [open_device(s) for s in specs]
    for d in devices:
        d.read_sample()
    config = PollerConfig(out_dir=job["out"], period_ms=job["period_ms"], seconds=job["seconds"])
    config.validate()  # creates the out dir
    result: dict = {}
    flag = _Flag()
    tuned = bool(job.get("tuned"))
    if tuned:
        sys.setswitchinterval(0.0005)
        gc.collect()
        gc.freeze()

    def poll() -> None:
        policy = None
        if tuned:  # on Linux both act on the calling thread only, as the poller's act on its process
            policy = _raise_priority(True)
            _tight_timer_slack()
        result.update(run_poller(devices, config, Path(job["out"]) / "markers.jsonl", flag,
                                 scheduling_policy=policy))

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    x = 0
    if job["load"] == "cpu":
        while thread.is_alive():  # the workload: pure Python, holding the GIL
            x += 1
    thread.join()
    if not result:
        raise RuntimeError("the in-process poller thread failed; see its traceback above")
    return result


def bench_inprocess(specs: list[DeviceSpec], period_ms: float, seconds: float, load: str, out: Path,
                    tuned: bool = False) -> dict:
    """Run :func:`inprocess_main` in a fresh process and return its stats."""
    from dataclasses import asdict

    job = {"specs": [asdict(s) for s in specs], "period_ms": period_ms, "seconds": seconds, "load": load, "out": str(out),
           "tuned": tuned}
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
        with ticking(progress, "tuned in-process thread", seconds):
            tuned = bench_inprocess(specs, period_ms, seconds, load, Path(tmp) / "tuned", tuned=True)
    doc = _pick(ours)
    doc["in_process_thread"] = _pick(naive)
    doc["in_process_thread_tuned"] = {**_pick(tuned), "scheduling_policy": tuned.get("scheduling_policy")}
    doc["ratios"] = {"thread_p99_lateness": _ratio(naive, ours), "tuned_thread_p99_lateness": _ratio(tuned, ours),
                     "thread_dropped_ticks": _drop_ratio(naive, ours),
                     "tuned_thread_dropped_ticks": _drop_ratio(tuned, ours)}
    return doc


def _ratio(thread: dict, process: dict) -> float | None:
    """p99 lateness of a thread design over the process's (None when the process's is 0 or missing)."""
    a, b = (thread.get("lateness_ms") or {}).get("p99"), (process.get("lateness_ms") or {}).get("p99")
    return round(a / b, 2) if a is not None and b else None


def _drop_ratio(thread: dict, process: dict) -> float | None:
    """Dropped ticks of a thread design over the process's, the process's counted as at least 1."""
    a, b = thread.get("dropped_ticks"), process.get("dropped_ticks")
    return None if a is None or b is None else round(a / max(b, 1), 2)


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
