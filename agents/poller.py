"""The continuous poller: one process per host, a strict grid, Parquet parts.

Started once per run, before any experiment, it samples every device of the host at
``t0 + k * period`` on ``time.monotonic_ns`` and never restarts between phases (phases are
markers). It lives in a process of its own, so no workload's GIL can delay it. A tick more
than one period late is counted as dropped and skipped (no catch-up burst). Rows go to
columnar buffers flushed to ``<out>/<device_uid>/power_trace/part-NNNNN.parquet`` at least
every ``flush_interval_s`` (write, then rename), so a killed poller loses at most that much.
A failed read is a row with ``read_ok = false``.
"""

from __future__ import annotations

import gc
import json
import operator
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from agents.device import SAMPLE_FIELDS, Device, Sample
from agents.errors import ConfigError, FleetPhysicsError, PollerError
from agents.factory import DeviceSpec, open_device
from agents.markers import LOAD, MarkerTail, MarkerWriter, markers_table, read_markers
from agents.physics import LoadEdge
from agents.poller_stats import poller_stats
from agents.trace_schema import TRACE_SCHEMA

MIN_PERIOD_MS, MAX_PERIOD_MS = 1.0, 60_000.0
MAX_FLUSH_INTERVAL_S = 2.0
MARKERS_FILE = "markers.jsonl"


@dataclass(frozen=True)
class PollerConfig:
    """How the poller samples and where it writes."""

    out_dir: str
    period_ms: float = 100.0
    flush_interval_s: float = 1.5  # <= 2 s: a killed poller loses at most this much
    seconds: float | None = None  # stop by itself after this long (None: until stopped)
    realtime_priority: bool = True  # ask for SCHED_FIFO, else a lower nice value
    live_interval_s: float = 0.25  # how often the latest samples go to the parent

    def validate(self) -> None:
        """Raise ConfigError (one line) for out-of-range settings or an unwritable out dir."""
        if not MIN_PERIOD_MS <= float(self.period_ms) <= MAX_PERIOD_MS:
            raise ConfigError(
                f"--period-ms {self.period_ms}: the poller period must be within {MIN_PERIOD_MS:g}..{MAX_PERIOD_MS:g} ms"
            )
        if not 0 < float(self.flush_interval_s) <= MAX_FLUSH_INTERVAL_S:
            raise ConfigError(f"flush_interval_s {self.flush_interval_s}: must be within (0, {MAX_FLUSH_INTERVAL_S}] s")
        if self.seconds is not None and float(self.seconds) <= 0:
            raise ConfigError(f"--seconds {self.seconds}: must be positive")
        out = Path(self.out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / f".write-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"--out {out}: cannot write there ({exc.strerror}); choose a writable directory") from None


class _Buffer:
    """Rows of one device, handed to the writer as numbered Parquet parts.

    A tick appends one tuple (cheap); the columns are built in the writer thread.
    """

    def __init__(self, device_dir: Path, writer: "_Writer") -> None:
        self.dir = device_dir / "power_trace"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.writer = writer
        self.rows: list[tuple] = []
        self.part = 0
        self.last_flush_ns = time.monotonic_ns()
        # Kept for the stats: every row's time and read flag.
        self.all_t_ns = array("q")
        self.all_ok = array("b")

    def append(self, t_ns: int, wall_ns: int, device_uuid: str, sample, ok: bool, dt_s, lateness_ms: float) -> None:
        """One row; ``sample`` is a Sample, or None for a read that raised."""
        self.rows.append((t_ns, wall_ns, device_uuid, sample, ok, dt_s, lateness_ms))
        self.all_t_ns.append(t_ns)
        self.all_ok.append(1 if ok else 0)

    def flush(self) -> None:
        """Hand the rows so far to the writer as the next part."""
        self.last_flush_ns = time.monotonic_ns()
        if not self.rows:
            return
        self.writer.put(_write_part, self.dir, self.part, self.rows)
        self.part += 1
        self.rows = []


_NO_SAMPLE = Sample()
_sample_fields = operator.attrgetter(*SAMPLE_FIELDS)


def _write_part(directory: Path, part: int, rows: list[tuple]) -> None:
    """Rows as one Parquet part: written to a temp name, then renamed (readers never see half a part)."""
    t_ns, wall_ns, uuids, samples, oks, dts, lates = zip(*rows)
    cols = {"t_ns": t_ns, "wall_ns": wall_ns, "device_uuid": uuids}
    fields = zip(*(_sample_fields(_NO_SAMPLE if s is None else s) for s in samples))
    cols.update(zip(SAMPLE_FIELDS, fields))
    cols.update(read_ok=oks, dt_s=dts, lateness_ms=lates)
    table = pa.table({name: list(cols[name]) for name in TRACE_SCHEMA.names}, schema=TRACE_SCHEMA)
    final = directory / f"part-{part:05d}.parquet"
    tmp = directory / f".part-{part:05d}.parquet.tmp"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, final)


class _Writer:
    """The poller's file I/O (Parquet parts, the live view) in a thread of its own.

    Measured on a VM disk: a rename or write in the tick loop stalled it for up to 424 ms
    now and then (41 ticks dropped in 30 s; none with the out dir on tmpfs). Here a slow
    disk delays only the writes. Jobs run in order; the first error is kept and raised by
    :meth:`check` in the tick loop (a poller that cannot write stops, never drops rows silently).
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.cpu_s = 0.0  # the thread's CPU time, set when it ends
        self._thread = threading.Thread(target=self._run, name="poller-writer", daemon=True)
        self._thread.start()

    def put(self, fn, *args) -> None:
        """Queue ``fn(*args)``."""
        self._jobs.put((fn, args))

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                self.cpu_s = time.thread_time()
                return
            fn, args = job
            if self.error is not None:
                continue
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the tick loop
                self.error = exc

    def check(self) -> None:
        """Raise the first write error, if any."""
        if self.error is not None:
            raise PollerError(f"poller cannot write its trace: {type(self.error).__name__}: {self.error}")

    def close(self, timeout_s: float = 60.0) -> None:
        """Finish the queued writes; raise the first error."""
        self._jobs.put(None)
        self._thread.join(timeout_s)
        self.check()


class _LoadRouter:
    """Tails the host's marker file and hands each simulated device its load edges."""

    def __init__(self, marker_path: Path) -> None:
        self.tail = MarkerTail(marker_path)
        self.pending: dict[str, list[LoadEdge]] = {}

    def poll(self) -> None:
        for m in self.tail.read_new():
            if m.get("name") == LOAD and m.get("device_uuid"):
                attrs = m.get("attrs") or {}
                edge = LoadEdge(int(m["t_ns"]), float(attrs.get("level", 0.0)), attrs.get("vram_mib"))
                self.pending.setdefault(m["device_uuid"], []).append(edge)

    def source_for(self, uuid: str):
        """A load source (callable) for the simulated device with this uuid."""

        def pop() -> list[LoadEdge]:
            return self.pending.pop(uuid, [])

        return pop

    def source_for_spec(self, spec: DeviceSpec):
        """The load source of the simulated device a spec opens."""
        from agents.factory import device_uid_of

        return self.source_for(device_uid_of(spec))


def _warm_up(out: Path) -> None:
    """Pay Arrow's and Parquet's first-use costs (~0.4 s) before the grid starts."""
    cols = {name: [None] for name in TRACE_SCHEMA.names}
    cols.update(t_ns=[0], read_ok=[True])
    tmp = out / ".warm-up.parquet.tmp"
    pq.write_table(pa.table(cols, schema=TRACE_SCHEMA), tmp, compression="zstd")
    tmp.unlink()


def _tight_timer_slack() -> None:
    """Ask Linux for 1 us timer slack (default 50 us) so sleeps end on time."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK, in ns
    except (OSError, AttributeError):
        pass


def _raise_priority(enabled: bool) -> str:
    """Best effort: SCHED_FIFO, else nice -10, else nothing. Returns what was obtained."""
    if not enabled:
        return "default"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        return "SCHED_FIFO"
    except (AttributeError, OSError):
        pass
    try:
        os.nice(-10)
        return "nice-10"
    except OSError:
        return "default"


@dataclass
class _RunState:
    dropped: int = 0
    ticks: int = 0
    lateness: array = field(default_factory=lambda: array("d"))


def run_poller(devices: list[Device], config: PollerConfig, marker_path: Path, stop, router=None, live=None,
               scheduling_policy: str | None = None) -> dict:
    """The grid loop (runs in the poller process; callable in-process for tests).

    ``stop`` is anything with ``is_set()`` and ``wait(timeout)``; ``scheduling_policy`` is
    what the process obtained (recorded in the host's and every device's stats). Returns
    the host stats.
    """
    out = Path(config.out_dir)
    _warm_up(out)
    period_ns = int(round(config.period_ms * 1e6))
    writer = _Writer()
    if live is not None and hasattr(live, "use_writer"):
        live.use_writer(writer)
    buffers = {d.uuid: _Buffer(out / d.uuid, writer) for d in devices}
    prev_t = {d.uuid: None for d in devices}
    state = _RunState()
    flush_ns = int(config.flush_interval_s * 1e9)
    live_ns = int(config.live_interval_s * 1e9)
    last_live = 0
    cpu0 = time.thread_time()
    t0 = time.monotonic_ns() + period_ns
    end_ns = None if config.seconds is None else t0 + int(config.seconds * 1e9)
    k = 0
    flush_turn = 0
    while not stop.is_set():
        target = t0 + k * period_ns
        if end_ns is not None and target >= end_ns:
            break
        now = time.monotonic_ns()
        remaining = target - now
        if remaining > 30_000_000:  # long waits wake for a stop request
            if stop.wait((remaining - 20_000_000) / 1e9):
                break
            now = time.monotonic_ns()
            remaining = target - now
        if remaining > 0:
            time.sleep(remaining / 1e9)
            now = time.monotonic_ns()
        late = now - target
        if late > period_ns:  # skip the missed slots: no catch-up burst
            skip = late // period_ns
            state.dropped += int(skip)
            k += int(skip)
            target = t0 + k * period_ns
        if router is not None:
            router.poll()
        send_live = live is not None and now - last_live >= live_ns
        if send_live:
            last_live = now
        first = True
        for dev in devices:
            t_ns = time.monotonic_ns()
            wall_ns = time.time_ns()
            if first:
                state.lateness.append((t_ns - target) / 1e6)
                first = False
            try:
                sample = dev.read_sample(t_ns)
                ok = sample.read_ok
            except FleetPhysicsError:
                sample, ok = None, False
            uuid = dev.uuid
            prev = prev_t[uuid]
            prev_t[uuid] = t_ns
            buffers[uuid].append(t_ns, wall_ns, uuid, sample, ok, None if prev is None else (t_ns - prev) / 1e9,
                                 (t_ns - target) / 1e6)
            if send_live:
                values = {f: None if sample is None else getattr(sample, f) for f in SAMPLE_FIELDS}
                try:
                    live.put_nowait({"device_uuid": uuid, "t_ns": t_ns, "read_ok": ok, **values})
                except Exception:  # noqa: BLE001 - a full live view never slows the grid
                    pass
        state.ticks += 1
        k += 1
        # At most one device flushes per tick, right after its reads: the write fits in
        # the slack before the next slot instead of delaying it.
        buf = list(buffers.values())[flush_turn % len(buffers)]
        flush_turn += 1
        if time.monotonic_ns() - buf.last_flush_ns >= flush_ns:
            writer.check()
            buf.flush()
    for buf in buffers.values():
        buf.flush()
    writer.close()
    seconds = (time.monotonic_ns() - t0) / 1e9
    cpu_s = time.thread_time() - cpu0 + writer.cpu_s  # the tick thread and the writer thread
    stats = poller_stats(
        config.period_ms,
        {u: np.frombuffer(b.all_t_ns, dtype=np.int64) if len(b.all_t_ns) else np.array([], dtype=np.int64) for u, b in buffers.items()},
        np.frombuffer(state.lateness, dtype=np.float64) if len(state.lateness) else np.array([]),
        {u: np.frombuffer(b.all_ok, dtype=np.int8).astype(bool) if len(b.all_ok) else np.array([], dtype=bool) for u, b in buffers.items()},
        state.dropped,
        state.ticks,
        max(seconds, 0.0),
    )
    stats["cpu_s"] = round(cpu_s, 4)
    stats["cpu_pct"] = round(100.0 * cpu_s / seconds, 3) if seconds > 0 else None
    stats["scheduling_policy"] = scheduling_policy
    _write_outputs(out, devices, stats, buffers, marker_path, state)
    return stats


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _write_outputs(out: Path, devices: list[Device], stats: dict, buffers: dict, marker_path: Path, state: _RunState) -> None:
    """Per-device stats and markers, and the host's stats."""
    markers = read_markers(marker_path)
    for dev in devices:
        ddir = out / dev.uuid
        t = np.frombuffer(buffers[dev.uuid].all_t_ns, dtype=np.int64) if len(buffers[dev.uuid].all_t_ns) else np.array([], dtype=np.int64)
        ok = np.frombuffer(buffers[dev.uuid].all_ok, dtype=np.int8).astype(bool) if len(buffers[dev.uuid].all_ok) else np.array([], dtype=bool)
        lat = np.frombuffer(state.lateness, dtype=np.float64) if len(state.lateness) else np.array([])
        dstats = poller_stats(stats["period_ms"], {dev.uuid: t}, lat, {dev.uuid: ok}, stats["dropped_ticks"], stats["ticks"], stats["seconds"])
        dstats["scheduling_policy"] = stats.get("scheduling_policy")
        _write_json(ddir / "poller_stats.json", dstats)
        table = markers_table(markers, device_uuid=dev.uuid)
        tmp = ddir / ".markers.parquet.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, ddir / "markers.parquet")
    _write_json(out / "poller_stats.json", stats)


def _live_writer(path: Path):
    """Writes the latest samples to live.json (write, then rename); the parent reads it."""

    def write(rows: dict) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, default=str))
        os.replace(tmp, path)

    return write


class _LiveRows:
    """Collects one tick's samples and hands them to the writer (the poller's live view)."""

    def __init__(self, path: Path, n_devices: int) -> None:
        self._write = _live_writer(path)
        self._rows: dict = {}
        self.n_devices = n_devices
        self._writer: _Writer | None = None

    def use_writer(self, writer: "_Writer") -> None:
        """Write through the poller's writer thread (off the tick loop)."""
        self._writer = writer

    def put_nowait(self, row: dict) -> None:
        self._rows[row["device_uuid"]] = row
        if len(self._rows) >= self.n_devices:  # one write per live tick, not one per device
            if self._writer is not None:
                self._writer.put(self._write_best_effort, self._rows)
            else:
                self._write_best_effort(self._rows)
            self._rows = {}

    def _write_best_effort(self, rows: dict) -> None:
        # The live view is a convenience: failing to write it never stops the poller.
        try:
            self._write(rows)
        except (OSError, TypeError, ValueError):
            pass


class _StopFlag:
    """Set by SIGTERM or by the parent's death; ``wait`` sleeps but wakes on a stop.

    ``set`` runs inside the SIGTERM handler, which Python runs in the main thread between
    two bytecodes, possibly in the middle of ``wait``. So it takes no lock: with a
    ``threading.Event`` a SIGTERM landing while ``Event.wait`` held the Event's lock made
    the handler's ``set`` wait for that lock forever, and the poller never stopped. A bool
    and a self-pipe need no lock: a byte in the pipe ends a ``select`` in progress, and a
    select retried after the handler (PEP 475) sees the byte at once.
    """

    def __init__(self) -> None:
        self._set = False
        self._parent = os.getppid()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    def set(self) -> None:
        self._set = True
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:  # the pipe is full of earlier wake-ups: already awake
            pass

    def is_set(self) -> bool:
        if not self._set and os.getppid() != self._parent:  # orphaned: the parent died, stop and flush
            self.set()
        return self._set

    def wait(self, timeout: float) -> bool:
        if not self.is_set():
            select.select([self._wake_r], [], [], max(0.0, timeout))
        return self.is_set()


def _emit(kind: str, payload) -> None:
    sys.stdout.write(json.dumps({"kind": kind, "payload": payload}, default=str) + "\n")
    sys.stdout.flush()


def child_main(job: dict) -> int:
    """Entry point of the poller process (``python -m agents.poller JOB_JSON``)."""
    config = PollerConfig(**job["config"])
    specs = [DeviceSpec(**s) for s in job["specs"]]
    marker_path = Path(job["marker_path"])
    stop = _StopFlag()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    devices: list[Device] = []
    try:
        policy = _raise_priority(config.realtime_priority)
        _tight_timer_slack()
        # The writer thread must hand the GIL back fast when a tick wakes (default 5 ms).
        sys.setswitchinterval(0.0005)
        router = _LoadRouter(marker_path)
        for spec in specs:
            kwargs = {"load_source": router.source_for_spec(spec)} if spec.kind == "sim" else {}
            devices.append(open_device(spec, **kwargs))
        out = Path(config.out_dir)
        for d in devices:  # first reads pay their own first-use costs off the grid
            d.read_sample()
        info = {d.uuid: {"info": d.info.to_dict(), "capabilities": d.capabilities.to_dict()} for d in devices}
        _write_json(out / "devices.json", info)
        _emit("ready", {"pid": os.getpid(), "scheduling_policy": policy, "devices": info})
        # Everything allocated so far (modules, profiles, Arrow) lives as long as the process:
        # out of the collector's reach, a full collection scans only the rows in flight
        # instead of ~10^5 objects while holding the GIL in the middle of a tick.
        gc.collect()
        gc.freeze()
        stats = run_poller(devices, config, marker_path, stop, router=router,
                           live=_LiveRows(out / "live.json", len(devices)), scheduling_policy=policy)
        _emit("stopped", stats)
        return 0
    except FleetPhysicsError as exc:
        _emit("error", [type(exc).__name__, str(exc)])
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - reported to the parent as a PollerError
        _emit("error", ["PollerError", f"poller process failed: {type(exc).__name__}: {exc}"])
        return 1
    finally:
        for d in devices:
            d.close()


class PollerProcess:
    """Handle, in the parent, on the host's poller process.

    >>> p = PollerProcess(specs, PollerConfig(out_dir="run/host", period_ms=100)); p.start()
    >>> p.mark("phase_start", phase="baseline"); ...; stats = p.stop()

    The poller is a plain subprocess (``python -m agents.poller``), not a multiprocessing
    child: it never re-imports the caller's ``__main__`` and never shares a GIL with it.
    """

    def __init__(self, specs: list[DeviceSpec], config: PollerConfig, marker_path: str | os.PathLike | None = None) -> None:
        config.validate()
        self.specs = list(specs)
        self.config = config
        self.marker_path = Path(marker_path) if marker_path else Path(config.out_dir) / MARKERS_FILE
        self.markers = MarkerWriter(self.marker_path)
        self._proc = None
        self._messages: queue.Queue = queue.Queue()
        self.ready_info: dict | None = None
        self.stats: dict | None = None

    @property
    def pid(self) -> int | None:
        """PID of the poller process."""
        return None if self._proc is None else self._proc.pid

    def start(self, timeout_s: float = 60.0) -> dict:
        """Start the process and wait until its devices are open; raise a typed error."""
        job = {"config": asdict(self.config), "specs": [asdict(s) for s in self.specs], "marker_path": str(self.marker_path)}
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "agents.poller", json.dumps(job)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        threading.Thread(target=self._read_messages, daemon=True).start()
        try:
            kind, payload = self._messages.get(timeout=timeout_s)
        except queue.Empty:
            self.kill()
            raise PollerError(f"poller did not start within {timeout_s:g} s (devices {[s.label for s in self.specs]})") from None
        if kind == "error":
            self._proc.wait(5)
            raise _error_from(payload)
        if kind == "exited":
            raise PollerError(f"poller process exited at startup with code {payload}; see its stderr above")
        self.ready_info = payload
        return payload

    def _read_messages(self) -> None:
        for line in self._proc.stdout:
            try:
                msg = json.loads(line)
                self._messages.put((msg["kind"], msg["payload"]))
            except (json.JSONDecodeError, KeyError):
                continue
        self._messages.put(("exited", self._proc.wait()))

    def mark(self, name: str, device_uuid: str | None = None, **attrs) -> int:
        """Put a marker on the host's clock (any process may also use a MarkerWriter)."""
        return self.markers.mark(name, device_uuid=device_uuid, **attrs)

    @property
    def alive(self) -> bool:
        """True while the poller process runs."""
        return self._proc is not None and self._proc.poll() is None

    def latest(self) -> dict:
        """The latest sample of each device (refreshed every ``live_interval_s``)."""
        try:
            return json.loads((Path(self.config.out_dir) / "live.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def wait(self, timeout_s: float | None = None) -> dict | None:
        """Wait for a poller with ``seconds`` set to finish; returns its stats."""
        return self._collect(timeout_s if timeout_s is not None else 1e9)

    def stop(self, timeout_s: float = 30.0) -> dict:
        """Stop gracefully (final flush, stats written); returns the host's poller stats."""
        if self.alive:
            self._proc.terminate()  # SIGTERM: the child finishes its tick, flushes, writes stats
        stats = self._collect(timeout_s)
        if stats is None:
            self.kill()
            raise PollerError(f"poller did not stop within {timeout_s:g} s; its flushed parts are in {self.config.out_dir}")
        self._proc.wait(5)
        return stats

    def _collect(self, timeout_s: float) -> dict | None:
        if self.stats is not None:
            return self.stats
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                kind, payload = self._messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if kind == "stopped":
                self.stats = payload
                return payload
            if kind == "error":
                raise _error_from(payload)
            if kind == "exited":
                return None
        return None

    def kill(self) -> None:
        """SIGKILL the poller (what a crash looks like); flushed parts stay readable."""
        if self.alive:
            self._proc.kill()
            self._proc.wait(5)

    def close(self) -> None:
        """Release the marker file."""
        self.markers.close()


def _error_from(payload) -> FleetPhysicsError:
    from agents import errors

    name, message = payload
    cls = getattr(errors, name, PollerError)
    if not (isinstance(cls, type) and issubclass(cls, FleetPhysicsError)):
        cls = PollerError
    return cls(message)


if __name__ == "__main__":
    sys.exit(child_main(json.loads(sys.argv[1])))
