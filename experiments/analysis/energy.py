"""Energy per event (a prefill, a decode step...) and the joule curve.

Two measurements of each event's energy E_raw over [t_start, t_end]:

* ``energy_counter_j``: the device's energy counter (joules since driver load). From the
  trace when it carries the counter around the event, else from the reads the runner
  recorded at the event boundaries (``counter_start_j``/``counter_end_j``; a read returns
  the last refresh, so each is stale by up to one refresh period).
* ``energy_integrated_j``: the integral of the power field (trapezoids, interpolated at
  the window edges). TR122 integrated only the samples inside the window and subtracted
  the baseline over the whole window: the edge slivers were lost, so short events came
  out negative on average.

Edges. A sensor period (or counter refresh) that straddles an event boundary reports a
mix of both sides, and plain interpolation puts the step in its middle on average: every
event with a load step comes out low by about delta_P x period / 6 per edge. So each edge
gets a correction: the energy that the straddling values smeared outside the window, over
the zone M they can reach (M = (U + W) / 2 plus two polls for the power field; at least
one refresh plus two polls for the counter), above the steady level just beyond that zone
(the power field's mean over one period there; for the counter, that level mapped to
counter units by the affine fit of counter against power-field energy over the trace):
E = E[t_start, t_end] + (E[t_start - M, t_start] - M P_before) + (E[t_end, t_end + M] - M P_after).
It is exact when the power is steady just outside the event, isolated or back to back. An
edge gets no correction when the data do not reach that far or another event's boundary
lies in its zone (plain edge interpolation then).

Which power field: the instant field when the device has one, else the averaged field.
NVML's averaged field is a ~1 s mean: it smears a short event over its window. The instant
field averages over about one update period. A value reported at update u is the mean
power over (u - W, u], W the field's window, and stays on display for one update period
U; so the samples are shifted back by (U + W) / 2 (``lag_ms``), which centres each
displayed value on the time it measured. For W = U (RTX 40 class) the shifted field is the
exact per-period mean; for W < U (A100/H100: 25 ms of each 100 ms) it is unbiased on
average but noisier. W defaults to U for the instant field and 1000 ms for the averaged
one; pass ``window_ms`` measured by the instrument-response analysis when known.
Readings below ``floor_threshold_w`` (fake-low floor readings, TR122's laptop) are not
integrated: the previous reading is held over them.

``energy_net_j = E_raw - P_idle * T``: unbiased because E_raw covers exactly [t_start, t_end].
E_raw is the counter when available, else the integral.

Quality tiers, exactly TR122's (section 2.6; ``power_samples`` as its section 3.1 defines
it: good reads of the power field with t_start <= t_ns <= t_end; gaps are intervals between
good reads longer than twice the median poll interval, and window parts beyond the data):

* NO_DATA: fewer than 2 power samples.
* GAPPY: 2 samples, or 10 % or more of the window in gaps.
* GOOD: at least 3 samples and under 10 % of the window in gaps.
* BILLABLE: GOOD, longer than 1 s, more than 8 samples and under 5 % of the window in gaps.

Two flags beside the tier: ``counter_verified`` (the energy counter and the integral agree
within 5 %) and ``delta_p_ok`` (TR122's delta-P rule: the event's mean power is more than
10 W above idle, so it stands out of the idle noise). The energies are computed whatever
the tier (an event with no sample inside still has edge-interpolated values while reads
cover it within one period); the tier says how far to trust them.

``sigma_e_j``: for the integral, T x std(P) / sqrt(N_eff) over the window's samples; for
the counter, the placement of its refreshes (a poll interval of power at each of the four
points used) in quadrature; with ``p_idle_sem_w``, T x that added in quadrature for the net.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from experiments.analysis import tables
from experiments.analysis.sensor import effective_update_period_ms, estimate_update_period, update_points
from experiments.analysis.stats import linear_fit, rnd, rnd_sig

QUALITY_ORDER = ("NO_DATA", "GAPPY", "GOOD", "BILLABLE")
GAP_POLLS = 2.0
GAPPY_FRACTION = 0.10  # TR122: gap fraction under this for an estimate
GOOD_MIN_SAMPLES = 3  # TR122: at least 3 power samples for an estimate
BILLABLE_MIN_S = 1.0  # TR122 billing grade: longer than 1 s ...
BILLABLE_MIN_SAMPLES = 8  # ... more than 8 power samples ...
BILLABLE_GAP_FRACTION = 0.05  # ... and a gap fraction under 5 %
COUNTER_AGREEMENT_PCT = 5.0  # counter and integral within this: counter_verified
DELTA_P_MIN_W = 10.0  # TR122's delta-P: mean power this far above idle to stand out of its noise
DEFAULT_AVERAGE_WINDOW_MS = 1000.0  # NVML documents its power usage as a 1 s average
LEVEL_PERIODS = 1.0  # the steady level beside an edge: mean over this many sensor periods


class EnergySeries:
    """One device's power and counter series, prepared once for many events."""

    def __init__(self, trace: pd.DataFrame, field: str | None = None, update_period_ms: float | None = None,
                 window_ms: float | None = None, lag_ms: float | None = None, floor_threshold_w: float = 5.0) -> None:
        trace = tables.window(trace)
        if field is None:
            field = "power_instant_w" if np.isfinite(tables.column(trace, "power_instant_w")).any() else "power_w"
        self.field = field
        t, p = tables.good(trace, field)
        self.t = t.astype(np.float64)  # every good read: coverage and gaps
        self.poll_ns = float(np.median(np.diff(self.t))) if self.t.size > 1 else math.nan
        if update_period_ms is None:
            update_period_ms = effective_update_period_ms(estimate_update_period(t, p))
        self.update_period_ms = float(update_period_ms) if update_period_ms else math.nan
        if window_ms is None:
            window_ms = self.update_period_ms if field == "power_instant_w" else DEFAULT_AVERAGE_WINDOW_MS
        self.window_ms = float(window_ms)
        self.lag_ms = (self.update_period_ms + self.window_ms) / 2.0 if lag_ms is None else float(lag_ms)
        lag_ns = self.lag_ms * 1e6 if math.isfinite(self.lag_ms) else 0.0
        self.p = _hold_over(p, p < floor_threshold_w)
        self.ts = self.t - lag_ns  # each value centred on the time it measured
        poll = self.poll_ns if math.isfinite(self.poll_ns) else 0.0
        u_ns = self.update_period_ms * 1e6 if math.isfinite(self.update_period_ms) else poll
        self.margin_ns = (u_ns + self.window_ms * 1e6) / 2.0 + 2 * poll
        self.level_ns = max(LEVEL_PERIODS * u_ns, 4 * poll)
        # Cumulative trapezoid of the shifted power: F(x) gives any window's integral.
        seg = np.diff(self.ts) * (self.p[1:] + self.p[:-1]) / 2.0 / 1e9 if self.ts.size > 1 else np.empty(0)
        self._cum = np.concatenate(([0.0], np.cumsum(seg)))
        pc = self.p - (float(np.median(self.p)) if self.p.size else 0.0)  # centred: well-conditioned sums
        self._moments = (np.concatenate(([0.0], np.cumsum(pc))), np.concatenate(([0.0], np.cumsum(pc * pc))),
                         np.concatenate(([0.0], np.cumsum(np.append(pc[:-1] * pc[1:], 0.0)))))
        dt = np.diff(self.t)
        big = np.flatnonzero(dt > GAP_POLLS * self.poll_ns) if self.t.size > 1 else np.empty(0, int)
        self._gap_a, self._gap_b = self.t[big], self.t[big + 1]
        self._gap_cum = np.concatenate(([0.0], np.cumsum(self._gap_b - self._gap_a)))
        te, e = tables.good(trace, "energy_j")
        self.counter_t, self.counter_e = update_points(te, e)
        # The counter changes at every refresh while the board draws power: the median
        # interval between changes is its refresh period (enough for a margin).
        r_ns = float(np.median(np.diff(self.counter_t[1:]))) if self.counter_t.size > 3 else 0.0
        self.counter_margin_ns = max(r_ns + 2 * poll, self.margin_ns)
        self.counter_alpha_w, self.counter_beta = self._counter_vs_power()

    def _counter_vs_power(self, bin_s: float = 1.0) -> tuple[float, float]:
        """Affine map from power-field energy to counter energy, E_c = alpha T + beta E_p.

        A sensor's gain and offset differ from the counter's. Fitted over the trace's steady
        bins (1 s or four periods, whose quarters agree within 2 % in both series; bins with a
        load change would dilute the fit); a pure gain (median ratio) when those span too
        narrow a range of power; (0, 1) without a counter or steady bins."""
        tc, ts = self.counter_t, self.ts
        if tc.size < 4 or ts.size < 4:
            return 0.0, 1.0
        u_s = self.update_period_ms / 1e3 if math.isfinite(self.update_period_ms) else 0.0
        bin_s = max(bin_s, 4 * u_s)
        a, b = max(tc[0], ts[0]), min(tc[-1], ts[-1])
        n = int((b - a) / (bin_s * 1e9))
        if n < 3:
            return 0.0, 1.0
        edges = a + np.arange(4 * n + 1) * bin_s / 4 * 1e9  # four quarters per bin
        qp = np.diff(self._cumint(edges)).reshape(n, 4)
        qc = np.diff(np.interp(edges, tc, self.counter_e)).reshape(n, 4)
        ep, ec = qp.sum(axis=1), qc.sum(axis=1)
        # Steady in both: a field sampling part of each period can miss a short burst the
        # counter saw.
        steady = np.all((np.abs(4 * qp - ep[:, None]) <= 0.02 * np.abs(ep[:, None]) + 1e-3 * bin_s)
                        & (np.abs(4 * qc - ec[:, None]) <= 0.02 * np.abs(ec[:, None]) + 1e-3 * bin_s), axis=1)
        if steady.sum() < 3:
            return 0.0, 1.0
        x, y = ep[steady], ec[steady]
        if np.ptp(x) > 0.2 * np.max(np.abs(x)) and steady.sum() >= 5:
            coef, *_ = np.linalg.lstsq(np.column_stack([np.full(x.size, bin_s), x]), y, rcond=None)
            alpha, beta = float(coef[0]), float(coef[1])
        else:
            alpha, beta = 0.0, float(np.median(y / x)) if np.all(x > 0) else 1.0
        if not (math.isfinite(alpha) and math.isfinite(beta) and 0.5 < beta < 2.0):
            return 0.0, 1.0
        return alpha, beta

    # -- the power field -----------------------------------------------------------------
    def integral(self, x0, x1) -> np.ndarray:
        """Integral (J) of the shifted power between x0 and x1 (ns; arrays)."""
        return self._cumint(np.asarray(x1, dtype=np.float64)) - self._cumint(np.asarray(x0, dtype=np.float64))

    def _cumint(self, x: np.ndarray) -> np.ndarray:
        ts, p = self.ts, self.p
        if ts.size < 2:
            return np.zeros_like(x)
        xc = np.clip(x, ts[0], ts[-1])
        i = np.clip(np.searchsorted(ts, xc, side="right") - 1, 0, ts.size - 2)
        px = np.interp(xc, ts, p)
        inside = self._cum[i] + (xc - ts[i]) * (p[i] + px) / 2.0 / 1e9
        # Outside the data the power is held at the end values.
        return inside + (x - xc) * np.where(x < ts[0], p[0], p[-1]) / 1e9

    def level(self, x0, x1) -> np.ndarray:
        """Mean of the shifted power field over [x0, x1] (W)."""
        x0, x1 = np.asarray(x0, dtype=np.float64), np.asarray(x1, dtype=np.float64)
        return self.integral(x0, x1) / (x1 - x0) * 1e9

    def corrections(self, x0, x1, others: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Whether each edge of [x0, x1] can be corrected (module doc): the data reach past
        its zone and level window, and no other event boundary (``others``, sorted ns) lies
        in them (a neighbour ending or starting within two polls of the edge is fine)."""
        x0 = np.atleast_1d(np.asarray(x0, dtype=np.float64))
        x1 = np.atleast_1d(np.asarray(x1, dtype=np.float64))
        if self.ts.size < 2:
            return np.zeros(x0.shape, bool), np.zeros(x0.shape, bool)
        reach = max(self.margin_ns, self.counter_margin_ns) + self.level_ns
        tol = 2 * self.poll_ns
        left = x0 - reach >= self.ts[0]
        right = x1 + reach <= self.ts[-1]
        if others is not None and others.size:
            left &= ~_any_between(others, x0 - reach, x0 - tol)
            right &= ~_any_between(others, x1 + tol, x1 + reach)
        return left, right

    def power_energy(self, x0, x1, left, right) -> np.ndarray:
        """Energy (J) from the power field over [x0, x1], edges corrected where flagged."""
        x0, x1 = np.asarray(x0, dtype=np.float64), np.asarray(x1, dtype=np.float64)
        if self.ts.size < 2:
            return np.full(x0.shape, np.nan)
        m, lv = self.margin_ns, self.level_ns
        e = self.integral(x0, x1)
        e = e + np.where(left, self.integral(x0 - m, x0) - self.level(x0 - m - lv, x0 - m) * m / 1e9, 0.0)
        return e + np.where(right, self.integral(x1, x1 + m) - self.level(x1 + m, x1 + m + lv) * m / 1e9, 0.0)

    # -- the counter ---------------------------------------------------------------------
    def counter_energy(self, x0, x1, left, right) -> np.ndarray:
        """Energy (J) from the trace's counter over [x0, x1], edges corrected where flagged
        (NaN without a counter covering the window)."""
        x0, x1 = np.asarray(x0, dtype=np.float64), np.asarray(x1, dtype=np.float64)
        tc, ec = self.counter_t, self.counter_e
        if tc.size < 2:
            return np.full(x0.shape, np.nan)
        m, lv = self.counter_margin_ns, self.level_ns
        a, b = self.counter_alpha_w, self.counter_beta

        def c(x):
            return np.interp(x, tc, ec)

        e = c(x1) - c(x0)
        lft = left & (x0 - m >= tc[0])
        rgt = right & (x1 + m <= tc[-1])
        e = e + np.where(lft, c(x0) - c(x0 - m) - (a + b * self.level(x0 - m - lv, x0 - m)) * m / 1e9, 0.0)
        e = e + np.where(rgt, c(x1 + m) - c(x1) - (a + b * self.level(x1 + m, x1 + m + lv)) * m / 1e9, 0.0)
        return np.where((x0 >= tc[0]) & (x1 <= tc[-1]), e, np.nan)

    # -- coverage ------------------------------------------------------------------------
    def gaps(self, x0, x1) -> tuple[np.ndarray, np.ndarray]:
        """(time in gaps within [x0, x1], longest gap overlapping it), ns; window parts
        beyond the data count as gap. 0 when there is none."""
        x0, x1 = np.asarray(x0, dtype=np.float64), np.asarray(x1, dtype=np.float64)
        if self.t.size == 0:
            return x1 - x0, x1 - x0
        edge = np.maximum(self.t[0] - x0, 0.0) + np.maximum(x1 - self.t[-1], 0.0)
        ga, gb = self._gap_a, self._gap_b
        i0 = np.searchsorted(gb, x0, side="right")  # the first gap ending after x0
        i1 = np.searchsorted(ga, x1, side="left")  # the gaps starting before x1
        has = i1 > i0
        total = self._gap_cum[i1] - self._gap_cum[i0]
        longest = np.zeros(x0.shape)
        if ga.size:
            first, last = np.minimum(i0, ga.size - 1), np.maximum(i1 - 1, 0)
            total = total - np.where(has, np.maximum(x0 - ga[first], 0.0) + np.maximum(gb[last] - x1, 0.0), 0.0)
            for k in np.flatnonzero(has):  # only the windows that meet a gap (few)
                longest[k] = float(np.max(gb[i0[k]:i1[k]] - ga[i0[k]:i1[k]]))
        return total + edge, np.maximum(longest, edge)

    def power_samples(self, x0, x1) -> np.ndarray:
        """TR122's power_samples: good reads with x0 <= t_ns <= x1 (unshifted read times)."""
        return np.searchsorted(self.t, np.asarray(x1, dtype=np.float64), side="right") - \
            np.searchsorted(self.t, np.asarray(x0, dtype=np.float64), side="left")

    def window_stats(self, x0, x1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(good reads within the window +- one period, std of the shifted power in the
        window, its N_eff, the number of those samples), from prefix sums."""
        x0, x1 = np.asarray(x0, dtype=np.float64), np.asarray(x1, dtype=np.float64)
        u_ns = self.update_period_ms * 1e6 if math.isfinite(self.update_period_ms) else 0.0
        n_cover = np.searchsorted(self.t, x1 + u_ns, side="right") - np.searchsorted(self.t, x0 - u_ns, side="left")
        a = np.searchsorted(self.ts, x0, side="left")
        b = np.searchsorted(self.ts, x1, side="right")
        n = (b - a).astype(np.float64)
        c1, c2, cl = self._moments
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (c1[b] - c1[a]) / n
            ss = np.maximum(c2[b] - c2[a] - n * mean * mean, 0.0)
            std = np.sqrt(ss / (n - 1))
            bl = np.maximum(b - 1, a)  # pairs (i, i+1) inside the window: i in [a, b - 1)
            lag = (cl[bl] - cl[a]) - mean * ((c1[bl] - c1[a]) + (c1[b] - c1[np.minimum(a + 1, b)])) \
                + (n - 1) * mean * mean
            rho = np.clip(np.where(ss > 0, lag / ss, 0.0), -1.0, 1.0)
            ne = np.clip(n * (1 - rho) / (1 + rho), 1.0, np.maximum(n, 1.0))
        small = n < 2
        return n_cover, np.where(small, 0.0, std), np.where(small, 1.0, ne), (b - a)


def event_energy(trace: pd.DataFrame | EnergySeries, t_start_ns: int, t_end_ns: int, p_idle_w: float | None,
                 counter_start_j: float | None = None, counter_end_j: float | None = None,
                 update_period_ms: float | None = None, field: str | None = None, window_ms: float | None = None,
                 lag_ms: float | None = None, p_idle_sem_w: float | None = None,
                 other_boundaries_ns=None) -> dict:
    """Energy of one event over [t_start_ns, t_end_ns] (see the module doc for the method).

    ``trace`` is a trace DataFrame or an :class:`EnergySeries` prepared from one (for many
    events, :func:`events_energy` does a whole table at once); ``other_boundaries_ns``: the
    start and end times of the other events (an edge next to another event's boundary is
    not corrected). Returns: t_start_ns, t_end_ns, duration_s, field, update_period_ms,
    edges_corrected (0-2), energy_counter_j, counter_source (trace | reads | None),
    energy_integrated_j, energy_raw_j, source (counter | integrated), energy_net_j,
    mismatch_pct (integral vs counter), gap_fraction, max_gap_ms (longest gap overlapping
    the window, 0 when none), n_samples (lag-shifted samples in the window), power_samples
    (TR122's count), counter_verified, delta_p_w, delta_p_ok, sigma_e_j, sigma_integrated_j,
    quality (NO_DATA | GAPPY | GOOD | BILLABLE, TR122's tiers).
    """
    s = trace if isinstance(trace, EnergySeries) else EnergySeries(trace, field, update_period_ms, window_ms, lag_ms)
    others = None if other_boundaries_ns is None else np.sort(np.asarray(other_boundaries_ns, dtype=np.float64))
    table = _events(s, np.array([t_start_ns], dtype=np.int64), np.array([t_end_ns], dtype=np.int64), p_idle_w,
                    np.array([_nan(counter_start_j)]), np.array([_nan(counter_end_j)]), p_idle_sem_w, others)
    return _records(table)[0]


def events_energy(trace: pd.DataFrame, events: pd.DataFrame, p_idle_w: float | None, **kw) -> pd.DataFrame:
    """Per-event energy for an events table (as from :func:`tables.event_windows`): its
    columns plus :func:`event_energy`'s keys, one row per event, computed all at once.
    Keyword arguments: field, update_period_ms, window_ms, lag_ms, floor_threshold_w,
    p_idle_sem_w."""
    series = EnergySeries(trace, **{k: kw[k] for k in ("field", "update_period_ms", "window_ms", "lag_ms",
                                                         "floor_threshold_w") if k in kw})
    t0 = events["t_start_ns"].to_numpy(dtype=np.int64)
    t1 = events["t_end_ns"].to_numpy(dtype=np.int64)
    bounds = np.sort(np.concatenate([t0, t1]).astype(np.float64))
    table = _events(series, t0, t1, p_idle_w, tables.column(events, "counter_start_j"),
                    tables.column(events, "counter_end_j"), kw.get("p_idle_sem_w"), bounds)
    keep = [c for c in events.columns if c not in table.columns and c not in ("counter_start_j", "counter_end_j")]
    return pd.concat([events[keep].reset_index(drop=True), table], axis=1)


def _nan(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _events(s: EnergySeries, t0: np.ndarray, t1: np.ndarray, p_idle_w, c0: np.ndarray, c1: np.ndarray,
            p_idle_sem_w, others) -> pd.DataFrame:
    """The per-event table (vectorised over events)."""
    x0, x1 = t0.astype(np.float64), t1.astype(np.float64)
    dur_s = (x1 - x0) / 1e9
    u_ms = s.update_period_ms
    u_ns = u_ms * 1e6 if math.isfinite(u_ms) else math.inf
    left, right = s.corrections(x0, x1, others)
    n_cover, std_p, ne, n_in = s.window_stats(x0, x1)
    gap_ns, longest_ns = s.gaps(x0, x1)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap_fraction = np.where(x1 > x0, np.minimum(gap_ns / (x1 - x0), 1.0), 1.0)
        integrated = s.power_energy(x0, x1, left, right)
        counter = s.counter_energy(x0, x1, left, right)
        p_mid = np.interp((x0 + x1) / 2, s.ts, s.p) if s.ts.size else np.full(x0.shape, np.nan)
        counter_sigma = 2.0 * p_mid * s.poll_ns / 1e9 / math.sqrt(12)  # four refresh placements
        from_trace = np.isfinite(counter)
        reads = ~from_trace & np.isfinite(c0) & np.isfinite(c1)
        counter = np.where(reads, c1 - c0, counter)
        counter_sigma = np.where(reads, 0.001, counter_sigma)
        has_counter = np.isfinite(counter)
        sigma_int = np.where(n_in >= 2, dur_s * std_p / np.sqrt(ne), np.nan)
        raw = np.where(has_counter, counter, integrated)
        sigma = np.where(has_counter, counter_sigma, sigma_int)
        mismatch = np.where(has_counter & (counter > 0), 100.0 * (integrated - counter) / counter, np.nan)
        net = raw - (np.nan if p_idle_w is None else float(p_idle_w)) * dur_s
        sigma_net = np.hypot(sigma, dur_s * p_idle_sem_w) if p_idle_sem_w else sigma
        no_data = n_cover < 2  # nothing to compute from
        samples = s.power_samples(x0, x1)
        tier_no_data = samples < 2
        gappy = (samples < GOOD_MIN_SAMPLES) | (gap_fraction >= GAPPY_FRACTION)
        billable = (dur_s > BILLABLE_MIN_S) & (samples > BILLABLE_MIN_SAMPLES) & (gap_fraction < BILLABLE_GAP_FRACTION)
        counter_verified = np.abs(mismatch) <= COUNTER_AGREEMENT_PCT  # NaN (no counter) is False
        # TR122's delta-P is on the power field's mean (the counter's when there is no integral)
        mean_p = np.where(dur_s > 0, np.where(np.isfinite(integrated), integrated, raw) / dur_s, np.nan)
        delta_p = mean_p - (np.nan if p_idle_w is None else float(p_idle_w))
    quality = np.select([tier_no_data, gappy, billable], ["NO_DATA", "GAPPY", "BILLABLE"], "GOOD")
    integrated, sigma_int, mismatch = (np.where(no_data, np.nan, x) for x in (integrated, sigma_int, mismatch))
    raw, net = (np.where(no_data & ~has_counter, np.nan, x) for x in (raw, net))
    return pd.DataFrame({
        "t_start_ns": t0, "t_end_ns": t1, "duration_s": np.round(dur_s, 4), "field": s.field,
        "update_period_ms": round(u_ms, 2) if math.isfinite(u_ms) else np.nan,
        "edges_corrected": left.astype(int) + right.astype(int),
        "energy_counter_j": _round_sig(counter, counter_sigma),
        "counter_source": np.where(from_trace, "trace", np.where(reads, "reads", None)),
        "energy_integrated_j": _round_sig(integrated, sigma_int),
        "energy_raw_j": _round_sig(raw, sigma),
        "source": np.where(has_counter, "counter", "integrated"),
        "energy_net_j": _round_sig(net, sigma_net),
        "mismatch_pct": np.round(mismatch, 2),
        "gap_fraction": np.round(gap_fraction, 4),
        "max_gap_ms": np.round(longest_ns / 1e6, 1),
        "n_samples": np.asarray(n_in, dtype=int),
        "power_samples": np.asarray(samples, dtype=int),
        "counter_verified": counter_verified,
        "delta_p_w": np.round(delta_p, 2),
        "delta_p_ok": np.isfinite(delta_p) & (delta_p > DELTA_P_MIN_W),
        "sigma_e_j": _round_sig(sigma_net, sigma_net),
        "sigma_integrated_j": _round_sig(sigma_int, sigma_int),
        "quality": quality,
    })


def _round_sig(values: np.ndarray, sigma, sig: int = 2) -> np.ndarray:
    """Each value rounded to its sigma's ``sig`` significant digits (4 significant digits
    where sigma is unusable); NaN stays NaN."""
    v = np.asarray(values, dtype=np.float64)
    s = np.broadcast_to(np.asarray(sigma, dtype=np.float64), v.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        use = np.isfinite(s) & (s > 0)
        ref = np.where(use, s, np.abs(v))
        digits = np.where(use, sig - 1, 3) - np.floor(np.log10(np.where(ref > 0, ref, 1.0)))
        digits = np.clip(np.nan_to_num(digits, nan=6.0), -6, 6)
        scale = 10.0 ** digits
        return np.round(v * scale) / scale


def _hold_over(p: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """``p`` with the ``bad`` readings replaced by the previous good one (the first good one
    at the start): a staircase stays a staircase, where interpolating would smear a step."""
    if not bad.any() or bad.all():
        return p
    idx = np.maximum.accumulate(np.where(~bad, np.arange(p.size), -1))
    idx[idx < 0] = int(np.argmax(~bad))
    return p[idx]


def _any_between(sorted_values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Whether any value lies strictly between lo and hi (elementwise)."""
    return np.searchsorted(sorted_values, hi, side="left") > np.searchsorted(sorted_values, lo, side="right")


def macro_energy(trace: pd.DataFrame | EnergySeries, events: pd.DataFrame, p_idle_w: float | None,
                 p_idle_sem_w: float | None = None) -> dict:
    """TR122.B's fallback for events too short to measure one by one: the energy of the
    whole run (first event start to last event end) and of each batch size's macro window
    (its first event's start to its last event's end), with the tokens inside and J/token
    where the window's own tier is GOOD or BILLABLE. Each window carries the same tier
    rules, flags and errors as an event. Returns {"events_below_good", "whole_run",
    "windows": [...]} ({} when there are no events).
    """
    if events is None or len(events) == 0:
        return {}
    s = trace if isinstance(trace, EnergySeries) else EnergySeries(trace)
    ev = events.reset_index(drop=True)
    tokens = _tokens(ev)
    spans = [("all", ev.index.to_numpy())]
    if "batch_size" in ev.columns:
        for b, g in ev.groupby("batch_size", sort=True):
            spans.append((b, g.index.to_numpy()))
    t0 = np.array([int(ev.loc[i, "t_start_ns"].min()) for _, i in spans], dtype=np.int64)
    t1 = np.array([int(ev.loc[i, "t_end_ns"].max()) for _, i in spans], dtype=np.int64)
    nan = np.full(len(spans), np.nan)
    table = _events(s, t0, t1, p_idle_w, nan, nan, p_idle_sem_w, None)
    recs = _records(table)
    for rec, (b, idx) in zip(recs, spans):
        tok = float(np.nansum(tokens[idx]))
        ok = rec["quality"] in ("GOOD", "BILLABLE") and tok > 0 and rec["energy_net_j"] is not None
        rec.update(batch_size=None if b == "all" else _plain(b), n_events=int(len(idx)), tokens=tok,
                   j_per_token=_plain(rec["energy_net_j"] / tok) if ok else None)
    below = int((ev["quality"].map({q: i for i, q in enumerate(QUALITY_ORDER)}).fillna(-1) < 2).sum()) \
        if "quality" in ev.columns else None
    return {"events_below_good": below, "whole_run": recs[0], "windows": recs[1:]}


def _tokens(events: pd.DataFrame) -> np.ndarray:
    """Tokens an event processed: ``tokens`` if given, else input tokens for prefill,
    output tokens for decode, their sum otherwise."""
    if "tokens" in events.columns:
        return tables.column(events, "tokens")
    inp, outp = tables.column(events, "input_tokens"), tables.column(events, "output_tokens")
    phase = events["phase"].astype(str).to_numpy() if "phase" in events.columns else np.full(len(events), "")
    both = np.where(np.isfinite(inp), inp, 0) + np.where(np.isfinite(outp), outp, 0)
    return np.where(phase == "prefill", inp, np.where(phase == "decode", outp, both))


def joule_curve(events: pd.DataFrame, min_quality: str = "GOOD") -> dict:
    """J/token per (phase, batch size) and the per-phase, per-pass fit
    E_net/passes = E_fixed + E_token x tokens/passes.

    ``events`` needs phase, energy_net_j, quality, duration_s and tokens (or
    input_tokens/output_tokens, see :func:`_tokens`); batch_size and passes (default 1)
    optional. Events below
    ``min_quality`` are counted, not used. Returns {"points": [{phase, batch_size,
    j_per_token, j_per_token_sem, tokens_per_s, power_w, n_events, energy_quality}],
    "fits": [{phase, model, params {e_fixed_j, e_fixed_se_j, e_fixed_ci_low_j, e_fixed_ci_high_j,
    e_fixed_resolved, and the same for e_token},
    r2, n_events, quality}], "quality_counts": {tier: n}, "n_events", "n_used"}.
    """
    n_all = len(events)
    counts = {q: 0 for q in QUALITY_ORDER}
    if n_all:
        for q, n in events["quality"].value_counts().items():
            counts[str(q)] = int(n)
    out = {"points": [], "fits": [], "quality_counts": counts, "n_events": n_all, "n_used": 0}
    if not n_all:
        return out
    df = events.copy()
    df["tokens"] = _tokens(df)
    df["energy_net_j"] = tables.column(df, "energy_net_j")
    df["energy_raw_j"] = tables.column(df, "energy_raw_j")
    df["duration_s"] = tables.column(df, "duration_s")
    rank = {q: i for i, q in enumerate(QUALITY_ORDER)}
    ok = (df["quality"].map(rank).fillna(-1) >= rank[min_quality]) & np.isfinite(df["energy_net_j"])
    ok &= df["tokens"] > 0
    df = df[ok]
    out["n_used"] = int(len(df))
    if "batch_size" not in df.columns:
        df["batch_size"] = np.nan
    df["phase"] = df["phase"].fillna("unknown").astype(str) if "phase" in df.columns else "unknown"
    df["j_per_token"] = df["energy_net_j"] / df["tokens"]
    # The fit is per pass (TR122's E_fixed is the cost of one pass): an event repeats its pass
    # until it lasts min_event_s, so its totals are passes x (E_fixed + E_token x tokens/pass).
    passes = tables.column(df, "passes") if "passes" in df.columns else np.ones(len(df))
    passes = np.where(np.isfinite(passes) & (passes >= 1), passes, 1.0)
    df["passes_n"] = passes
    df["tokens_per_pass"] = df["tokens"].to_numpy(dtype=np.float64) / passes
    df["energy_net_per_pass_j"] = df["energy_net_j"].to_numpy(dtype=np.float64) / passes
    for (phase, batch), g in df.groupby(["phase", "batch_size"], dropna=False, sort=True):
        jpt = g["j_per_token"].to_numpy(dtype=np.float64)
        sem = float(jpt.std(ddof=1) / math.sqrt(jpt.size)) if jpt.size > 1 else math.nan
        worst = min(g["quality"], key=lambda q: rank.get(q, -1))
        out["points"].append({
            "phase": phase, "batch_size": None if pd.isna(batch) else int(batch),
            "j_per_token": rnd_sig(float(jpt.mean()), sem if math.isfinite(sem) else None),
            "j_per_token_sem": rnd_sig(sem, sem) if math.isfinite(sem) else None,
            "tokens_per_s": rnd(float((g["tokens"] / g["duration_s"]).mean()), 2),
            "power_w": rnd(float((g["energy_raw_j"] / g["duration_s"]).mean()), 2),
            "n_events": int(jpt.size), "energy_quality": worst,
            "passes_median": float(np.median(g["passes_n"])),
        })
    for phase, g in df.groupby("phase", sort=True):
        fit = linear_fit(g["tokens_per_pass"], g["energy_net_per_pass_j"])
        enough = fit["n"] >= 3 and math.isfinite(fit["b_se"])
        out["fits"].append({
            "phase": phase, "model": "E_net/pass = E_fixed + E_token * tokens/pass",
            "params": _fit_params(fit),
            "r2": rnd(fit["r2"], 4), "n_events": fit["n"], "quality": "good" if enough else "insufficient",
        })
    return out


def _fit_params(fit: dict) -> dict:
    """E_fixed and E_token with their standard errors and 95 % intervals (Student's t on the
    fit's n - 2 degrees of freedom); ``<name>_resolved`` is false when the interval is not
    finite or reaches zero. J/token is ~1e-3 J with a standard error ~1e-7 J: 12 decimals
    keep the interval."""
    from scipy.stats import t as student_t

    dof = fit["n"] - 2
    t95 = float(student_t.ppf(0.975, dof)) if dof >= 1 else math.nan
    out = {}
    for name, value, se in (("e_fixed", fit["a"], fit["a_se"]), ("e_token", fit["b"], fit["b_se"])):
        finite = all(isinstance(x, (int, float)) and math.isfinite(x) for x in (value, se, t95))
        lo, hi = (value - t95 * se, value + t95 * se) if finite else (None, None)
        out.update({f"{name}_j": rnd_sig(value, se, max_digits=12), f"{name}_se_j": rnd_sig(se, se, max_digits=12),
                    f"{name}_ci_low_j": rnd_sig(lo, se, max_digits=12) if finite else None,
                    f"{name}_ci_high_j": rnd_sig(hi, se, max_digits=12) if finite else None,
                    f"{name}_resolved": bool(finite and (lo > 0 or hi < 0))})
    return out


def analyze(trace_df: pd.DataFrame, markers_df: pd.DataFrame | None, p_idle_w: float | None = None, **kw) -> dict:
    """Per-event energy for the ``event_start``/``event_end`` markers and the joule curve.

    P_idle: ``p_idle_w`` if given, else :func:`experiments.analysis.idle.idle_reference`
    (the ``baseline`` phase, the Joule curve runner's ``joule_curve.idle`` window, the idle
    finder before the first load edge; none: net figures NaN). Returns {"p_idle_w",
    "p_idle_sem_w", "p_idle_source", "idle" (the reference, its window and reason), "field",
    "update_period_ms", "events": [per event], "quality"} plus
    :func:`joule_curve`'s keys (points, fits, quality_counts, n_events, n_used) and "macro"
    (:func:`macro_energy`: TR122.B's whole-run and per-batch windows), per device
    when the trace holds several ({"devices": {uuid: ...}}). Keyword arguments go to
    :func:`events_energy`.
    """
    from experiments.analysis.idle import idle_reference

    def one(trace: pd.DataFrame, markers: pd.DataFrame | None) -> dict:
        events = tables.event_windows(markers)
        p_idle, p_sem, source = p_idle_w, kw.get("p_idle_sem_w"), "given"
        idle = None
        if p_idle is None:
            base = tables.phase_windows(markers, "baseline")
            quiet = [w for w in tables.phase_windows(markers, "joule_curve.idle") if w[1] is not None]
            end = int(trace["t_ns"].max()) if len(trace) else None
            idle = idle_reference(trace, int(events["t_start_ns"].min()) if len(events) else None,
                                  baseline_window=(base[0][0], base[0][1] if base[0][1] is not None else end)
                                  if base else None,
                                  idle_window=quiet[0] if quiet else None, markers=markers,
                                  field=kw.get("field") or "power_w")
            p_idle, p_sem, source = idle["power_w"], idle["sem_w"], idle["source"]
        opts = {k: v for k, v in kw.items() if k != "p_idle_sem_w"}
        per = events_energy(trace, events, p_idle, p_idle_sem_w=p_sem, **opts) if len(events) else pd.DataFrame()
        curve = joule_curve(per) if len(per) else joule_curve(pd.DataFrame(columns=["quality"]))
        macro = macro_energy(trace, per, p_idle, p_sem) if len(per) else {}
        usable = curve["quality_counts"]["GOOD"] + curve["quality_counts"]["BILLABLE"]
        return {
            "p_idle_w": p_idle, "p_idle_sem_w": p_sem, "p_idle_source": source, "idle": idle,
            "field": str(per["field"].iloc[0]) if len(per) else None,
            "update_period_ms": _plain(per["update_period_ms"].iloc[0]) if len(per) else None,
            "events": _records(per),
            **curve,
            "macro": macro,
            "quality": "no_data" if not usable else ("good" if usable == len(per) else "partial"),
        }

    return tables.per_device(trace_df, markers_df, one)


def _records(df: pd.DataFrame) -> list[dict]:
    out = []
    for rec in df.to_dict("records"):
        out.append({k: _plain(v) for k, v in rec.items()})
    return out


def _plain(v):
    if isinstance(v, str):
        return str(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v
