"""Physics of a simulated GPU: a pure function of (profile, load timeline, seed, t).

The live poller evaluates it tick by tick; a test renders a whole trace for any load
timeline in milliseconds, with the exact truth beside it.

Model (all closed form, piecewise per load segment):

* True power follows the load: ``P = idle + level * (max - idle)``, capped at the power
  limit (``sw_power_cap`` bit). Load edges are steps.
* Temperature follows a thermal RC model ``dT/dt = (P - (T - T_amb)/R) / C``: within a
  segment of constant power ``T(t) = T_ss + (T_0 - T_ss) exp(-(t - t_0)/tau)`` with
  ``T_ss = T_amb + P R`` and ``tau = R C``. The device starts at its idle equilibrium.
* Thermal throttling: when ``T`` reaches ``slowdown_temp_c`` the device sheds power to
  hold it there (``P_hold = (T_slow - T_amb)/R``), scales its SM clock by ``P_hold / P``
  and sets the ``sw_thermal_slowdown`` bit.
* Sensors update every ``sensor_update_period_ms`` (phase drawn from the seed). The
  instant field is the mean of true power over ``instant_window_ms`` ending at the last
  update; the averaged field the mean over ``average_window_ms``. Both come from the exact
  energy integral, so they are exact boxcar means.
* At idle (no load anywhere in the averaging window) a ``floor_fraction`` of sensor
  updates read ``floor_power_w`` (both power fields), as TR122's laptop board did.
* Gaussian noise ``noise_w`` per sensor update; temperature is reported in whole degrees
  like NVML; the energy counter integrates true power exactly and refreshes every
  ``energy_counter_update_ms``.
* A read fails with probability ``read_error_rate`` (drawn per millisecond of time).

Random draws are counter-based (a hash of seed, stream and index), so the same
(profile, timeline, seed, t) always gives the same reading, in any process.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from agents.profiles import Profile

NS = 1_000_000_000
MS = 1_000_000
BIT_IDLE = 0x1
BIT_POWER_CAP = 0x4
BIT_THERMAL = 0x20
# Memory clock when idle, as a fraction of the loaded one. Readings are whole MHz, whole
# percent, whole degrees and whole milliwatts, as NVML reports them.
IDLE_MEM_CLOCK_FRACTION = 0.2

_STREAM_PHASE, _STREAM_FLOOR, _STREAM_NOISE, _STREAM_ERROR = 1, 2, 3, 4


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    z = x
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform(seed: int, stream: int, index: np.ndarray) -> np.ndarray:
    """Counter-based uniform draws in [0, 1): the same (seed, stream, index), the same value."""
    idx = np.asarray(index, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        key = _splitmix64(np.uint64(seed & 0xFFFFFFFF) * np.uint64(1 << 32) + np.uint64(stream))
        h = _splitmix64(idx ^ key)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


_M64 = 0xFFFFFFFFFFFFFFFF


def _splitmix64_int(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def uniform_one(seed: int, stream: int, index: int) -> float:
    """Scalar twin of :func:`uniform` (pure Python, for the live read path)."""
    key = _splitmix64_int(((seed & 0xFFFFFFFF) << 32) + stream)
    return (_splitmix64_int((index & _M64) ^ key) >> 11) / float(1 << 53)


def normal_one(seed: int, stream: int, index: int) -> float:
    """Scalar twin of :func:`normal`."""
    u1 = max(uniform_one(seed, stream, index), 1e-300)
    u2 = uniform_one(seed, stream + 100, index)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def normal(seed: int, stream: int, index: np.ndarray) -> np.ndarray:
    """Counter-based standard normal draws (Box-Muller over two uniform streams)."""
    u1 = np.maximum(uniform(seed, stream, index), 1e-300)
    u2 = uniform(seed, stream + 100, index)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


@dataclass(frozen=True)
class LoadEdge:
    """The workload sets its load level (0..1) and VRAM in use at host monotonic t_ns."""

    t_ns: int
    level: float
    vram_mib: float | None = None  # workload's VRAM on top of the driver's base; None = unchanged


class Timeline:
    """Exact thermal and energy state at every load edge; append-only, cheap to extend.

    Between two edges the power is constant except for one possible switch, the moment the
    die reaches the slowdown temperature, after which power is held at ``P_hold``.
    """

    def __init__(self, profile: Profile, t_start_ns: int, seed: int = 0) -> None:
        self.profile = profile
        self.seed = seed
        self.t_start_ns = int(t_start_ns)
        self._tau_ns = profile.tau_s * NS
        self._p_hold = (profile.slowdown_temp_c - profile.ambient_c) / profile.thermal_resistance_c_per_w
        # Per segment i (starting at edge i): start time, level, demanded-and-capped power,
        # temperature and energy at the start, time the clamp begins (inf if never).
        self.t = [self.t_start_ns]
        self.level = [0.0]
        self.vram_mib = [0.0]
        self.power = [self._capped(0.0)]
        self.temp0 = [profile.idle_temp_c]
        self.energy0 = [0.0]
        self.t_clamp = [math.inf]
        self._update_clamp(0)
        self._arrays = None

    # -- building -------------------------------------------------------------------
    def _capped(self, level: float) -> float:
        return min(self.profile.demand_w(level), self.profile.power_limit_w)

    def _update_clamp(self, i: int) -> None:
        """When (if ever) segment i reaches the slowdown temperature."""
        t_ss = self.profile.ambient_c + self.power[i] * self.profile.thermal_resistance_c_per_w
        t_slow, temp0 = self.profile.slowdown_temp_c, self.temp0[i]
        if t_ss <= t_slow:
            self.t_clamp[i] = math.inf
        elif temp0 >= t_slow:
            self.t_clamp[i] = float(self.t[i])
        else:
            self.t_clamp[i] = self.t[i] + self._tau_ns * math.log((t_ss - temp0) / (t_ss - t_slow))

    def _end_state(self, i: int, t_end: float) -> tuple[float, float]:
        """Temperature and energy at t_end within segment i."""
        temp, energy = self._segment_eval(i, np.array([t_end], dtype=np.float64))
        return float(temp[0]), float(energy[0])

    def add_edge(self, edge: LoadEdge) -> None:
        """Append a load edge. Edges at or before the last one replace from there on."""
        t = max(int(edge.t_ns), self.t_start_ns)
        while len(self.t) > 1 and self.t[-1] >= t:
            for seq in (self.t, self.level, self.vram_mib, self.power, self.temp0, self.energy0, self.t_clamp):
                seq.pop()
        i = len(self.t) - 1
        if self.t[i] >= t:  # edge at the very start: change the first segment in place
            self.level[0] = float(edge.level)
            self.power[0] = self._capped(float(edge.level))
            if edge.vram_mib is not None:
                self.vram_mib[0] = float(edge.vram_mib)
            self._update_clamp(0)
            self._arrays = None
            return
        temp_end, energy_end = self._end_state(i, float(t))
        self.t.append(t)
        self.level.append(float(edge.level))
        self.vram_mib.append(self.vram_mib[i] if edge.vram_mib is None else float(edge.vram_mib))
        self.power.append(self._capped(float(edge.level)))
        self.temp0.append(temp_end)
        self.energy0.append(energy_end)
        self.t_clamp.append(math.inf)
        self._update_clamp(len(self.t) - 1)
        self._arrays = None

    # -- evaluating -----------------------------------------------------------------
    def _segment_eval(self, i: int, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact temperature and cumulative energy (J) at times t (ns, float) in segment i."""
        prof = self.profile
        r, tau = prof.thermal_resistance_c_per_w, self._tau_ns
        p, t0, temp0, e0, tc = self.power[i], self.t[i], self.temp0[i], self.energy0[i], self.t_clamp[i]
        t_ss = prof.ambient_c + p * r
        before = np.minimum(t, tc)
        temp = t_ss + (temp0 - t_ss) * np.exp(-(before - t0) / tau)
        energy = e0 + p * (before - t0) / NS
        clamped = t > tc
        if np.any(clamped):
            temp = np.where(clamped, prof.slowdown_temp_c, temp)
            energy = energy + np.where(clamped, self._p_hold * (t - tc) / NS, 0.0)
        return temp, energy

    def _segment_one(self, i: int, t: float) -> tuple[float, float]:
        """Scalar twin of :meth:`_segment_eval`: temperature and energy at t in segment i."""
        prof = self.profile
        p, t0, temp0, e0, tc = self.power[i], self.t[i], self.temp0[i], self.energy0[i], self.t_clamp[i]
        t_ss = prof.ambient_c + p * prof.thermal_resistance_c_per_w
        before = min(t, tc)
        temp = t_ss + (temp0 - t_ss) * math.exp(-(before - t0) / self._tau_ns)
        energy = e0 + p * (before - t0) / NS
        if t > tc:
            return prof.slowdown_temp_c, energy + self._p_hold * (t - tc) / NS
        return temp, energy

    def index_one(self, t_ns: int) -> int:
        """Segment index of one time (scalar)."""
        return max(0, bisect.bisect_right(self.t, t_ns) - 1)

    def energy_one(self, t_ns: int) -> float:
        """Exact cumulative energy at one time (J), extrapolating idle before the start."""
        if t_ns < self.t_start_ns:
            return -(self.t_start_ns - t_ns) / NS * self.power[0]
        return self._segment_one(self.index_one(t_ns), float(t_ns))[1]

    def state_one(self, t_ns: int) -> tuple[float, float, float, bool, bool]:
        """(power_w, temp_c, level, throttled, capped) at one time."""
        i = self.index_one(t_ns)
        t = float(max(t_ns, self.t_start_ns))
        temp, _ = self._segment_one(i, t)
        throttled = t > self.t_clamp[i]
        level = self.level[i]
        capped = (not throttled) and self.profile.demand_w(level) > self.profile.power_limit_w
        return (self._p_hold if throttled else self.power[i]), temp, level, throttled, capped

    def busy_in_one(self, t_begin_ns: int, t_end_ns: int) -> bool:
        """Scalar twin of :meth:`busy_in`."""
        i0, i1 = self.index_one(t_begin_ns), self.index_one(t_end_ns)
        return any(self.level[j] > 0 for j in range(i0, i1 + 1))

    def segment_index(self, t_ns: np.ndarray) -> np.ndarray:
        """Index of the segment each time falls in (times before the start: segment 0)."""
        idx = np.searchsorted(np.asarray(self.t, dtype=np.int64), np.asarray(t_ns, dtype=np.int64), side="right") - 1
        return np.clip(idx, 0, len(self.t) - 1)

    def state(self, t_ns: np.ndarray) -> dict[str, np.ndarray]:
        """Exact truth at times t_ns: power_w, temp_c, energy_j, level, vram_mib, throttled, capped."""
        t_ns = np.asarray(t_ns, dtype=np.int64)
        tf = np.maximum(t_ns, self.t_start_ns).astype(np.float64)
        seg = self.segment_index(t_ns)
        temp = np.empty(tf.shape)
        energy = np.empty(tf.shape)
        for i in np.unique(seg):
            m = seg == i
            temp[m], energy[m] = self._segment_eval(int(i), tf[m])
        tc = np.asarray(self.t_clamp)[seg]
        power_demand = np.asarray(self.power)[seg]
        throttled = tf > tc
        power = np.where(throttled, self._p_hold, power_demand)
        level = np.asarray(self.level)[seg]
        prof = self.profile
        capped = prof.idle_power_w + level * (prof.max_power_w - prof.idle_power_w) > prof.power_limit_w
        return {
            "power_w": power,
            "temp_c": temp,
            "energy_j": energy,
            "level": level,
            "vram_mib": np.asarray(self.vram_mib)[seg],
            "throttled": throttled,
            "capped": capped & ~throttled,
        }

    def energy_at(self, t_ns: np.ndarray) -> np.ndarray:
        """Exact cumulative energy since the start (J) at times t_ns (idle extrapolated before it)."""
        t_ns = np.asarray(t_ns, dtype=np.int64)
        pre = np.clip(self.t_start_ns - t_ns, 0, None) / NS
        return self.state(t_ns)["energy_j"] - pre * self.power[0]

    def mean_power(self, t_end_ns: np.ndarray, window_ns: float) -> np.ndarray:
        """Exact boxcar mean of true power over (t_end - window, t_end]."""
        t_end_ns = np.asarray(t_end_ns, dtype=np.int64)
        t_begin = t_end_ns - int(window_ns)
        e1 = self.energy_at(t_end_ns)
        e0 = self.energy_at(t_begin)
        return (e1 - e0) / (window_ns / NS)

    def busy_in(self, t_begin_ns: np.ndarray, t_end_ns: np.ndarray) -> np.ndarray:
        """True where any load (level > 0) occurs in (t_begin, t_end] (for the idle-only floor)."""
        lv = np.asarray(self.level)
        starts = np.asarray(self.t, dtype=np.int64)
        # End of the latest busy segment strictly before segment i (or -inf).
        ends = np.append(starts[1:], np.iinfo(np.int64).max).astype(np.float64)
        busy_end = np.where(lv > 0, ends, -np.inf)
        latest_before = np.concatenate(([-np.inf], np.maximum.accumulate(busy_end)[:-1]))
        i1 = self.segment_index(t_end_ns)
        return (lv[i1] > 0) | (latest_before[i1] > np.asarray(t_begin_ns, dtype=np.float64))


class SensorModel:
    """What NVML would report for a simulated board, given its exact timeline."""

    def __init__(self, timeline: Timeline) -> None:
        self.tl = timeline
        p = timeline.profile
        self.update_ns = int(p.sensor_update_period_ms * MS)
        self.energy_update_ns = int(p.energy_counter_update_ms * MS)
        self.phase_ns = int(uniform(timeline.seed, _STREAM_PHASE, np.array([0]))[0] * self.update_ns)
        self._cache: dict = {}

    def last_update(self, t_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index and time of the sensor update in force at t_ns."""
        k = np.floor_divide(np.asarray(t_ns, dtype=np.int64) - self.phase_ns, self.update_ns)
        return k, k * self.update_ns + self.phase_ns

    def read_one(self, t_ns: int) -> dict:
        """One reading at t_ns, in pure Python; equal to ``read([t_ns])`` element for element.

        Power fields change only at sensor updates and the energy counter at its own
        refresh, so both are computed once per update and cached: the live poller can read
        several devices every few milliseconds for a few percent of one core.
        """
        prof, tl, seed = self.tl.profile, self.tl, self.tl.seed
        k = (t_ns - self.phase_ns) // self.update_ns
        n_edges = len(tl.t)
        cached = self._cache.get("power")
        if cached is None or cached[0] != (k, n_edges, tl.t[-1]):
            t_upd = k * self.update_ns + self.phase_ns
            inst = self._mean_one(t_upd, prof.instant_window_ms * MS)
            avg = self._mean_one(t_upd, prof.average_window_ms * MS)
            noise = prof.noise_w * normal_one(seed, _STREAM_NOISE, k)
            inst += noise
            avg += noise / math.sqrt(max(1.0, prof.average_window_ms / prof.sensor_update_period_ms))
            window = int(max(prof.average_window_ms, prof.instant_window_ms) * MS)
            floor = (not tl.busy_in_one(t_upd - window, t_upd)) and uniform_one(seed, _STREAM_FLOOR, k) < prof.floor_fraction
            if floor:
                inst = avg = prof.floor_power_w
            cached = ((k, n_edges, tl.t[-1]), round(avg, 3), round(inst, 3), floor)
            self._cache["power"] = cached
        ke = t_ns // self.energy_update_ns
        ecached = self._cache.get("energy")
        if ecached is None or ecached[0] != (ke, n_edges, tl.t[-1]):
            ecached = ((ke, n_edges, tl.t[-1]), round(tl.energy_one(ke * self.energy_update_ns), 3))
            self._cache["energy"] = ecached
        power, temp, level, throttled, capped = tl.state_one(t_ns)
        busy = level > 0
        demand = min(prof.demand_w(level), prof.power_limit_w)
        scale = tl._p_hold / demand if throttled else 1.0
        reasons = (0 if busy else BIT_IDLE) | (BIT_POWER_CAP if capped else 0) | (BIT_THERMAL if throttled else 0)
        i = tl.index_one(t_ns)
        return {
            "power_w": cached[1],
            "power_instant_w": cached[2],
            "energy_j": ecached[1],
            "temp_c": float(round(temp)),
            "sm_clock_mhz": float(round(prof.sm_clock_max_mhz * scale)) if busy else float(round(prof.sm_clock_idle_mhz)),
            "mem_clock_mhz": prof.mem_clock_mhz if busy else float(round(prof.mem_clock_mhz * IDLE_MEM_CLOCK_FRACTION)),
            "util_gpu": float(round(100 * level)) if busy else float(round(prof.idle_util_pct)),
            "util_mem": float(round(60 * level)) if busy else 0.0,
            "vram_used_mib": prof.vram_base_mib + tl.vram_mib[i],
            "clocks_event_reasons": reasons,
            "pstate": 0 if busy else 8,
            "read_ok": uniform_one(seed, _STREAM_ERROR, t_ns // MS) >= prof.read_error_rate,
            "floor": cached[3],
        }

    def _mean_one(self, t_end_ns: int, window_ns: float) -> float:
        tl = self.tl
        return (tl.energy_one(t_end_ns) - tl.energy_one(t_end_ns - int(window_ns))) / (window_ns / NS)

    def read(self, t_ns: np.ndarray) -> dict[str, np.ndarray]:
        """Sensor readings at t_ns (vectorized). Failed reads have read_ok False."""
        prof, tl, seed = self.tl.profile, self.tl, self.tl.seed
        t_ns = np.atleast_1d(np.asarray(t_ns, dtype=np.int64))
        truth = tl.state(t_ns)
        k, t_upd = self.last_update(t_ns)
        inst = tl.mean_power(t_upd, prof.instant_window_ms * MS)
        avg = tl.mean_power(t_upd, prof.average_window_ms * MS)
        noise = prof.noise_w * normal(seed, _STREAM_NOISE, k)
        inst = inst + noise
        avg = avg + noise / math.sqrt(max(1.0, prof.average_window_ms / prof.sensor_update_period_ms))
        window = max(prof.average_window_ms, prof.instant_window_ms) * MS
        idle = ~tl.busy_in(t_upd - int(window), t_upd)
        floor = idle & (uniform(seed, _STREAM_FLOOR, k) < prof.floor_fraction)
        inst = np.where(floor, prof.floor_power_w, inst)
        avg = np.where(floor, prof.floor_power_w, avg)
        t_energy = np.floor_divide(t_ns, self.energy_update_ns) * self.energy_update_ns
        energy = tl.energy_at(t_energy)
        level = truth["level"]
        busy = level > 0
        demand = np.minimum(prof.idle_power_w + level * (prof.max_power_w - prof.idle_power_w), prof.power_limit_w)
        throttle_scale = np.where(truth["throttled"], tl._p_hold / demand, 1.0)
        sm_clock = np.where(busy, prof.sm_clock_max_mhz * throttle_scale, prof.sm_clock_idle_mhz)
        reasons = (
            np.where(busy, 0, BIT_IDLE)
            | np.where(truth["capped"], BIT_POWER_CAP, 0)
            | np.where(truth["throttled"], BIT_THERMAL, 0)
        )
        read_ok = uniform(seed, _STREAM_ERROR, t_ns // MS) >= prof.read_error_rate
        return {
            "power_w": np.round(avg, 3),
            "power_instant_w": np.round(inst, 3),
            "energy_j": np.round(energy, 3),  # NVML reports whole millijoules
            "temp_c": np.round(truth["temp_c"]),
            "sm_clock_mhz": np.round(sm_clock),
            "mem_clock_mhz": np.where(busy, prof.mem_clock_mhz, np.round(prof.mem_clock_mhz * IDLE_MEM_CLOCK_FRACTION)),
            "util_gpu": np.where(busy, np.round(100 * level), np.round(prof.idle_util_pct)),
            "util_mem": np.where(busy, np.round(60 * level), 0.0),
            "vram_used_mib": prof.vram_base_mib + truth["vram_mib"],
            "clocks_event_reasons": reasons.astype(np.int64),
            "pstate": np.where(busy, 0, 8).astype(np.int32),
            "read_ok": read_ok,
            "true_power_w": truth["power_w"],
            "true_temp_c": truth["temp_c"],
            "true_energy_j": truth["energy_j"],
            "floor": floor,
        }


def render_trace(
    profile: Profile,
    edges: list[LoadEdge],
    t_ns: np.ndarray,
    seed: int = 0,
    t_start_ns: int | None = None,
) -> dict[str, np.ndarray]:
    """Render a whole sensor trace (and its exact truth) for a load timeline.

    ``t_ns`` are the read times (e.g. a poller grid). Returns arrays keyed like the
    trace columns plus ``true_power_w``, ``true_temp_c``, ``true_energy_j`` and ``floor``.
    """
    t_ns = np.asarray(t_ns, dtype=np.int64)
    start = int(t_ns.min()) if t_start_ns is None else int(t_start_ns)
    tl = Timeline(profile, start, seed=seed)
    for edge in sorted(edges, key=lambda e: e.t_ns):
        tl.add_edge(edge)
    return SensorModel(tl).read(t_ns)
