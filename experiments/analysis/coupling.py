"""Does optimisation instability (gradient-norm spikes) couple with thermal instability?

The two source studies joined a training log and a thermal log with a 1 s nearest match on
naive wall-clock stamps from two programs, counted a left join as "aligned", took Pearson
on a 0/1 column, tried no lag and no significance test. This analysis does instead:

* **One clock.** Steps and trace are both on the host monotonic clock (``t_ns``; the runner
  stamps steps with ``time.monotonic_ns``, the poller's clock). A step is *aligned* when at
  least one good trace read falls inside ``[t_start_ns, t_end_ns]``; a step without one is
  unaligned (its per-step figures are NaN), never matched to a neighbouring sample. The
  aligned fraction is reported. ``clock_offset_ns`` moves step times onto the trace clock
  when they were stamped on another one.
* **Per-step figures**: mean power of the reads inside the step (``power_instant_w`` when
  the device has it, else ``power_w``; either lags the true power by its sensor window, the
  lags below absorb that), the least-squares temperature slope over a window of
  ``max(step duration, temp_slope_window_s)`` centred on the step (whole-degree sensors
  need seconds for a slope), energy from the device counter at the step boundaries (and
  from the trace: mean power x duration), RLE and the collapse flag of the RLE bins that
  overlap the step (see :mod:`experiments.analysis.rle`).
* **Spikes**: ``grad_norm > rolling median + k * MAD`` of the residual (global median when
  detrending is off).
* **Lagged rank correlation**: Spearman's rho between grad_norm at step i and each target
  at step i + lag, lag -5..+5 (positive lag: the target follows the gradient). Targets:
  per-step power, temperature slope, collapse indicator. Slow drifts (loss curve, heating)
  are removed first by subtracting a centred rolling median over ``detrend_window_steps``
  (not from the 0/1 collapse indicator).
* **Significance by circular block bootstrap**: the targets are resampled in blocks of
  consecutive steps (wrapping at the end) from random starts, the same blocks for all
  targets, while grad_norm stays in place; blocks are 3x the longest AR(1) integrated
  autocorrelation time of the series (at least one lag window, at most a third of the
  run), so each surrogate keeps the targets' autocorrelation, unlike a shuffle. The
  statistic is max over lags of |rho| (choosing the best lag is paid for); the targets are
  combined by the max of their null-standardised statistics (single-step max-T), so
  testing three targets is paid for too. ``p = (1 + #null >= observed) / (1 + n_boot)``.
  Why not a circular shift of the target: with a max-over-lags statistic, shifts near zero
  re-find the observed lags, so they must either be kept (then a real coupling ties with
  ~11 shifts and p cannot fall below ~11 / n_steps) or excluded (then the null windows
  overlap one another but not the observed one, and independent AR(1) series come out
  "significant" at p <= 0.01 several times too often: measured 5-10 % instead of 1 %).
* **Verdict**: ``coupled`` (p <= alpha), ``not coupled``, or ``insufficient data`` with
  the reason: too few aligned steps (fewer than ``min_steps``, and never fewer than three
  lag windows), grad_norm missing, nothing testable, or (with ``require_collapses``) no
  collapse in the run. Targets that cannot be tested (e.g. no collapse) are named in the
  reason of a ``coupled`` / ``not coupled`` verdict.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from experiments.analysis import tables
from experiments.analysis.rle import DEFAULT_PARAMS, RLEParams, collapse_events, collapse_rate, rle_series
from experiments.analysis.stats import rnd

NS_PER_S = 1_000_000_000
TARGETS = ("power", "temp_slope", "collapse")
STEP_COLUMNS = ["step", "loss", "grad_norm", "lr", "t_start_ns", "t_end_ns", "duration_s", "n_samples", "aligned",
                "power_w", "temp_c", "temp_slope_c_per_s", "energy_j", "energy_trace_j", "rle", "collapse"]
LAG_CONVENTION = "lag L pairs grad_norm at step i with the target at step i + L (L > 0: the target follows)"


# -- alignment ------------------------------------------------------------------------------
def steps_frame(steps) -> pd.DataFrame:
    """The runner's per-step list (or a DataFrame) as a DataFrame sorted by t_start_ns.

    Needs ``t_start_ns`` and ``t_end_ns``; ``step, loss, grad_norm, lr, energy_j`` are
    optional (NaN when absent).
    """
    df = steps.copy() if isinstance(steps, pd.DataFrame) else pd.DataFrame(list(steps))
    if len(df) == 0:
        df = pd.DataFrame({c: pd.Series(dtype="int64") for c in ("step", "t_start_ns", "t_end_ns")})
    for col in ("t_start_ns", "t_end_ns"):
        if col not in df.columns:
            raise ValueError(f"steps need a {col!r} column (host monotonic ns)")
    if "step" not in df.columns:
        df["step"] = np.arange(len(df))
    for col in ("loss", "grad_norm", "lr", "energy_j"):
        df[col] = tables.column(df, col) if len(df) else pd.Series(dtype=float)
    return df.sort_values("t_start_ns", kind="stable").reset_index(drop=True)


def _window_sums(t: np.ndarray, v: np.ndarray, lo_ns: np.ndarray, hi_ns: np.ndarray):
    """Count and sum of v over reads with lo <= t <= hi (t sorted)."""
    lo = np.searchsorted(t, lo_ns, side="left")
    hi = np.searchsorted(t, hi_ns, side="right")
    c = np.concatenate(([0.0], np.cumsum(v)))
    return (hi - lo), (c[hi] - c[lo])


def _window_slopes(t_ns: np.ndarray, y: np.ndarray, lo_ns: np.ndarray, hi_ns: np.ndarray) -> np.ndarray:
    """Least-squares slope (per second) of y over reads in each [lo, hi] (NaN with < 3)."""
    if t_ns.size == 0:
        return np.full(lo_ns.size, np.nan)
    ts = (t_ns - t_ns[0]) / NS_PER_S
    yc = y - y.mean()
    lo = np.searchsorted(t_ns, lo_ns, side="left")
    hi = np.searchsorted(t_ns, hi_ns, side="right")

    def win(a):
        c = np.concatenate(([0.0], np.cumsum(a)))
        return c[hi] - c[lo]

    n = (hi - lo).astype(np.float64)
    st, sy, stt, sty = win(ts), win(yc), win(ts * ts), win(ts * yc)
    with np.errstate(invalid="ignore", divide="ignore"):
        sxx = stt - st * st / n
        slope = (sty - st * sy / n) / sxx
    return np.where((n >= 3) & (sxx > 1e-12), slope, np.nan)


def pick_power_field(trace: pd.DataFrame, power_field: str = "auto") -> str:
    """``power_instant_w`` when the trace has good values in it, else ``power_w`` (for "auto")."""
    if power_field != "auto":
        return power_field
    if "power_instant_w" in trace.columns and tables.good(trace, "power_instant_w")[0].size > 0:
        return "power_instant_w"
    return "power_w"


def align_steps(
    trace: pd.DataFrame,
    steps,
    clock_offset_ns: int = 0,
    power_field: str = "auto",
    temp_slope_window_s: float = 5.0,
    rle: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per-step figures from the trace reads inside each step (columns :data:`STEP_COLUMNS`).

    ``clock_offset_ns`` is added to the step times to put them on the trace clock. ``rle`` is
    an :func:`~experiments.analysis.rle.rle_series` of the same trace (rle and collapse
    columns are NaN without it). Unaligned steps (no good read inside) have NaN figures.
    """
    df = steps_frame(steps)
    t_start = df["t_start_ns"].to_numpy(dtype=np.int64) + int(clock_offset_ns)
    t_end = df["t_end_ns"].to_numpy(dtype=np.int64) + int(clock_offset_ns)
    field = pick_power_field(trace, power_field)
    tp, vp = tables.good(trace, field)
    n, s = _window_sums(tp, vp, t_start, t_end)
    aligned = n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        power = np.where(aligned, s / np.maximum(n, 1), np.nan)
    duration_s = (t_end - t_start) / NS_PER_S

    temp_t = trace["t_ns"].to_numpy(dtype=np.int64)
    temp_v = tables.column(trace, "temp_c")
    ok = np.isfinite(temp_v)
    temp_t, temp_v = temp_t[ok], temp_v[ok]
    if temp_t.size > 1 and np.any(np.diff(temp_t) < 0):
        order = np.argsort(temp_t, kind="stable")
        temp_t, temp_v = temp_t[order], temp_v[order]
    nt, st = _window_sums(temp_t, temp_v, t_start, t_end)
    with np.errstate(invalid="ignore", divide="ignore"):
        temp_mean = np.where(nt > 0, st / np.maximum(nt, 1), np.nan)
    half = (np.maximum(t_end - t_start, int(temp_slope_window_s * NS_PER_S)) // 2).astype(np.int64)
    mid = t_start + (t_end - t_start) // 2
    slope = _window_slopes(temp_t, temp_v, mid - half, mid + half)

    rle_step = np.full(len(df), np.nan)
    collapse = np.full(len(df), np.nan)
    if rle is not None and len(rle):
        b0 = rle["t_ns"].to_numpy(dtype=np.int64)
        b1 = rle["t_end_ns"].to_numpy(dtype=np.int64)
        lo = np.searchsorted(b1, t_start, side="right")  # first bin ending after the step start
        hi = np.searchsorted(b0, t_end, side="right")  # bins starting at or before the step end
        r = rle["rle"].to_numpy(dtype=np.float64)
        rf = np.isfinite(r)
        cr = np.concatenate(([0.0], np.cumsum(np.where(rf, r, 0.0))))
        cn = np.concatenate(([0], np.cumsum(rf)))
        cc = np.concatenate(([0], np.cumsum(rle["collapse"].to_numpy(dtype=bool))))
        nb = cn[hi] - cn[np.minimum(lo, hi)]
        with np.errstate(invalid="ignore", divide="ignore"):
            rle_step = np.where(nb > 0, (cr[hi] - cr[np.minimum(lo, hi)]) / np.maximum(nb, 1), np.nan)
        collapse = ((cc[hi] - cc[np.minimum(lo, hi)]) > 0).astype(np.float64)

    out = pd.DataFrame({
        "step": df["step"].to_numpy(), "loss": df["loss"].to_numpy(float), "grad_norm": df["grad_norm"].to_numpy(float),
        "lr": df["lr"].to_numpy(float), "t_start_ns": t_start, "t_end_ns": t_end, "duration_s": duration_s,
        "n_samples": n.astype(np.int64), "aligned": aligned, "power_w": power,
        "temp_c": np.where(aligned, temp_mean, np.nan), "temp_slope_c_per_s": np.where(aligned, slope, np.nan),
        "energy_j": df["energy_j"].to_numpy(float), "energy_trace_j": power * duration_s,
        "rle": np.where(aligned, rle_step, np.nan), "collapse": np.where(aligned, collapse, np.nan),
    })
    return out[STEP_COLUMNS]


# -- spikes, detrending, correlation --------------------------------------------------------
def detrend(x, window_steps: int) -> np.ndarray:
    """x minus its centred rolling median over ``window_steps`` (x unchanged when < 2)."""
    x = np.asarray(x, dtype=np.float64)
    if window_steps is None or window_steps < 2 or x.size == 0:
        return x.copy()
    base = pd.Series(x).rolling(int(window_steps), center=True, min_periods=1).median().to_numpy()
    return x - base


def grad_spikes(grad_norm, k: float = 6.0, detrend_window_steps: int = 21) -> dict:
    """Spikes: grad_norm above its rolling median by more than ``k`` MADs of the residual.

    With ``detrend_window_steps`` < 2 the rule is the global ``median + k * MAD``.
    Returns ``{"mask" (bool array), "threshold_mad", "k", "n_spikes", "steps" (indices)}``.
    """
    g = np.asarray(grad_norm, dtype=np.float64)
    resid = detrend(g, detrend_window_steps) if detrend_window_steps and detrend_window_steps >= 2 else g
    fin = resid[np.isfinite(resid)]
    if fin.size < 3:
        return {"mask": np.zeros(g.size, dtype=bool), "threshold_mad": None, "k": k, "n_spikes": 0, "steps": []}
    med = float(np.median(fin))
    mad = float(np.median(np.abs(fin - med)))
    with np.errstate(invalid="ignore"):
        mask = resid > med + k * mad
    return {"mask": mask, "threshold_mad": mad, "k": k, "n_spikes": int(mask.sum()),
            "steps": [int(i) for i in np.flatnonzero(mask)]}


def rank_transform(v) -> np.ndarray:
    """Average ranks (1..n) of the finite values; NaN stays NaN."""
    v = np.asarray(v, dtype=np.float64)
    out = np.full(v.shape, np.nan)
    ok = np.isfinite(v)
    if ok.any():
        out[ok] = rankdata(v[ok])
    return out


def _lag_shift(v: np.ndarray, max_lag: int) -> np.ndarray:
    """(n, 2 max_lag + 1): column j holds v moved by lag = j - max_lag, ``S[p, j] = v[p - lag]``
    (0 where p - lag falls outside the series)."""
    n = v.size
    out = np.zeros((n, 2 * max_lag + 1))
    for j, lag in enumerate(range(-max_lag, max_lag + 1)):
        if abs(lag) >= n:
            continue
        if lag >= 0:
            out[lag:, j] = v[: n - lag]
        else:
            out[: n + lag, j] = v[-lag:]
    return out


def _lag_matrix(rx: np.ndarray, RY: np.ndarray, max_lag: int, min_pairs: int) -> np.ndarray:
    """r[k, j]: Pearson r of rx[i] against RY[k, i + lag], lag = j - max_lag, over the pairs
    finite in both (NaN with fewer than ``min_pairs`` pairs or no variance).

    Every lag's six pair sums (count, sum x, sum y, sum x^2, sum y^2, sum xy) of every row are
    matrix products of the row's values and finite-mask with the lag-shifted x: three BLAS
    calls over the (rows x n) matrix instead of eleven masked passes. Same estimator as
    :func:`lag_matrix_reference` (equal to rounding; tests/test_coupling.py checks it).
    """
    n, m = rx.size, 2 * max_lag + 1
    xm = np.isfinite(rx)
    x0 = np.where(xm, rx, 0.0)
    S = np.hstack([_lag_shift(xm.astype(np.float64), max_lag), _lag_shift(x0, max_lag),
                   _lag_shift(x0 * x0, max_lag)])  # [mask | x | x^2], each (n, m)
    finite = np.isfinite(RY)
    if finite.all():  # the usual case: the pair counts and x sums are the same for every row
        Y0 = RY
        A = np.broadcast_to(S.sum(axis=0), (RY.shape[0], 3 * m))
    else:
        Y0 = np.where(finite, RY, 0.0)
        A = finite.astype(np.float64) @ S
    npairs, sx, sxx = A[:, :m], A[:, m:2 * m], A[:, 2 * m:]
    B = Y0 @ S[:, :2 * m]
    sy, sxy = B[:, :m], B[:, m:]
    syy = (Y0 * Y0) @ S[:, :m]
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = sxy - sx * sy / npairs
        vx = sxx - sx * sx / npairs
        vy = syy - sy * sy / npairs
        r = cov / np.sqrt(vx * vy)
    ok = (npairs >= min_pairs) & (vx > 1e-12) & (vy > 1e-12)
    lags = np.arange(-max_lag, max_lag + 1)
    ok &= (np.abs(lags) < n)[None, :]
    return np.where(ok, np.clip(r, -1.0, 1.0), np.nan)


def _pearson_rows(x: np.ndarray, Y: np.ndarray, min_pairs: int) -> np.ndarray:
    """Pearson r of x (m,) against each row of Y (k, m) over the pairs finite in both."""
    valid = np.isfinite(x)[None, :] & np.isfinite(Y)
    n = valid.sum(axis=1).astype(np.float64)
    X = np.where(valid, x[None, :], 0.0)
    Yv = np.where(valid, Y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sx, sy = X.sum(axis=1), Yv.sum(axis=1)
        cov = (X * Yv).sum(axis=1) - sx * sy / n
        vx = (X * X).sum(axis=1) - sx * sx / n
        vy = (Yv * Yv).sum(axis=1) - sy * sy / n
        r = cov / np.sqrt(vx * vy)
    return np.where((n >= min_pairs) & (vx > 1e-12) & (vy > 1e-12), np.clip(r, -1.0, 1.0), np.nan)


def lag_matrix_reference(rx: np.ndarray, RY: np.ndarray, max_lag: int, min_pairs: int) -> np.ndarray:
    """The direct form of :func:`_lag_matrix`: one masked Pearson pass over the rows per lag.

    Not on the product path: the reference the tests hold the fast form to, and the
    same-run baseline ``bench analysis`` times it against.
    """
    n = rx.size
    out = np.full((RY.shape[0], 2 * max_lag + 1), np.nan)
    for j, lag in enumerate(range(-max_lag, max_lag + 1)):
        if abs(lag) >= n:
            continue
        if lag >= 0:
            out[:, j] = _pearson_rows(rx[: n - lag], RY[:, lag:], min_pairs)
        else:
            out[:, j] = _pearson_rows(rx[-lag:], RY[:, : n + lag], min_pairs)
    return out


def lagged_spearman(x, y, max_lag: int = 5, min_pairs: int = 10) -> dict[int, float | None]:
    """Spearman's rho of x[i] against y[i + lag] for lag in -max_lag..max_lag (None: too few pairs).

    Ranks are taken once over each whole series, then the pairs of each lag are correlated
    (the statistic the bootstrap test uses).
    """
    rx, ry = rank_transform(x), rank_transform(y)
    row = _lag_matrix(rx, ry[None, :], max_lag, min_pairs)[0]
    return {lag: (None if not np.isfinite(r) else float(r)) for lag, r in zip(range(-max_lag, max_lag + 1), row)}


def integrated_time(v) -> float:
    """AR(1) integrated autocorrelation time (1 + r1) / (1 - r1) of the finite values (>= 1)."""
    a = np.asarray(v, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size < 3 or np.std(a) == 0:
        return 1.0
    d = a - a.mean()
    r1 = float(np.clip(np.dot(d[:-1], d[1:]) / np.dot(d, d), 0.0, 0.98))
    return (1.0 + r1) / (1.0 - r1)


def block_length(series: list, n: int, max_lag: int) -> int:
    """Block length of the bootstrap: 3x the longest integrated autocorrelation time among
    ``series``, at least one lag window (2 max_lag + 1), at most a third of the series."""
    tau = max([integrated_time(s) for s in series] + [1.0])
    return int(max(min(math.ceil(3.0 * tau), n // 3), 2 * max_lag + 1))


def block_bootstrap_indices(n: int, block: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """Circular block bootstrap: ``n_boot`` index rows of length n made of blocks of ``block``
    consecutive steps (wrapping at the end) from random starts."""
    rng = np.random.default_rng(seed)
    k = -(-n // block)
    starts = rng.integers(0, n, size=(n_boot, k, 1))
    idx = (starts + np.arange(block)[None, None, :]) % n
    return idx.reshape(n_boot, k * block)[:, :n]


def bootstrap_test(x, targets: dict[str, np.ndarray], max_lag: int = 5, n_boot: int = 999, seed: int = 0,
                   min_pairs: int = 10, block: int | None = None) -> dict:
    """Lagged rank correlation of x against each target, with a circular block-bootstrap null.

    The targets are resampled together (the same blocks, so their mutual dependence is
    kept) in blocks long enough to keep their autocorrelation (:func:`block_length`); x
    stays in place. Per target the statistic is max over lags of |rho|; the combined
    statistic is the max over targets of (stat - null mean) / null sd (single-step max-T).
    Returns ``{"n_boot", "block", "p_floor", "p_value" (combined), "best_target", "targets":
    {name: {"lags": [{"lag", "rho"}], "best_lag", "correlation", "stat", "z", "p_value"}}}``.

    Seed: one ``numpy.random.default_rng(seed)`` draws all block starts at once
    (:func:`block_bootstrap_indices`), so a seed gives the same surrogates whatever the
    targets; all draws' correlations at every lag come from one set of matrix products
    (:func:`_lag_matrix`), no loop over draws.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    out: dict = {"n_boot": int(n_boot), "block": None, "p_floor": 1.0 / (n_boot + 1), "p_value": None,
                 "best_target": None, "targets": {}}
    if not targets or n < 3:
        return out
    ys = {name: np.asarray(y, dtype=np.float64) for name, y in targets.items()}
    if block is None:
        block = block_length([x, *ys.values()], n, max_lag)
    out["block"] = int(block)
    idx = block_bootstrap_indices(n, block, n_boot, seed)
    rx = rank_transform(x)
    zs, names = [], []
    for name, y in ys.items():
        ry = rank_transform(y)
        RY = np.empty((n_boot + 1, n))  # row 0 observed, then one row per draw
        RY[0] = ry
        np.take(ry, idx, out=RY[1:])
        rho = _lag_matrix(rx, RY, max_lag, min_pairs)
        absr = np.where(np.isfinite(rho), np.abs(rho), -1.0)
        stat = absr.max(axis=1)
        stat = np.where(stat >= 0, stat, np.nan)
        obs, null = stat[0], stat[1:]
        null_f = null[np.isfinite(null)]
        if not np.isfinite(obs) or null_f.size == 0:
            out["targets"][name] = {"lags": [], "best_lag": None, "correlation": None, "stat": None, "z": None,
                                    "p_value": None}
            continue
        mu, sd = float(null_f.mean()), float(null_f.std())
        z = (np.where(np.isfinite(stat), stat, -np.inf) - mu) / max(sd, 1e-12)
        zs.append(z)
        names.append(name)
        j = int(np.argmax(absr[0]))
        out["targets"][name] = {
            "lags": [{"lag": lag, "rho": rnd(r, 4)} for lag, r in zip(range(-max_lag, max_lag + 1), rho[0])],
            "best_lag": j - max_lag,
            "correlation": float(rho[0, j]),
            "stat": float(obs),
            "z": float(z[0]),
            "p_value": (1.0 + float(np.sum(null_f >= obs - 1e-12))) / (1.0 + null_f.size),
        }
    if zs:
        comb = np.vstack(zs).max(axis=0)
        out["p_value"] = (1.0 + float(np.sum(comb[1:] >= comb[0] - 1e-12))) / (1.0 + comb.size - 1)
        out["best_target"] = names[int(np.argmax(np.vstack(zs)[:, 0]))]
    return out


# -- the analysis ---------------------------------------------------------------------------
def analyze_training_coupling(
    trace_df: pd.DataFrame,
    steps_df,
    power_limit_w: float,
    slowdown_temp_c: float,
    *,
    clock_offset_ns: int = 0,
    max_lag: int = 5,
    n_boot: int = 999,
    alpha: float = 0.01,
    spike_k: float = 6.0,
    detrend_window_steps: int = 21,
    min_steps: int = 40,
    require_collapses: bool = False,
    power_field: str = "auto",
    temp_slope_window_s: float = 5.0,
    rle_params: RLEParams = DEFAULT_PARAMS,
    seed: int = 0,
    return_frames: bool = False,
    per_step: bool = True,
) -> dict:
    """Coupling of gradient norm with power, temperature slope and RLE collapses.

    ``trace_df``: one device's trace (agents.trace_schema columns; give the whole run so the
    RLE warm-up is spent before training). ``steps_df``: the runner's ``steps`` (list of
    dicts or DataFrame). ``power_limit_w`` / ``slowdown_temp_c``: the device's limits (RLE's
    rated power and T_limit).

    Returns JSON-safe ``{"steps", "n_aligned", "aligned_fraction", "collapse_rate",
    "n_collapses", "verdict", "verdict_reason", "p_value", "best_lag", "correlation",
    "target", "figures", "quality", "per_step"}``; ``figures`` repeats the headline keys and
    adds ``targets`` (per-target lag tables and p-values), ``spikes``, ``rle`` (collapse
    rate and events); ``per_step`` is one dict per step (:data:`STEP_COLUMNS`, ``spike``),
    left out with ``per_step=False``.
    ``figures["signature"]`` is the workload's :func:`signature` over the training window.
    With ``return_frames`` the result also holds ``frames``: the unrounded per-step
    DataFrame and the RLE series (None without a trace), the tables the report comes with.
    """
    trace = trace_df.sort_values("t_ns", kind="stable") if len(trace_df) else trace_df
    series = rle_series(trace, power_limit_w, slowdown_temp_c, rle_params) if len(trace) else None
    per = align_steps(trace, steps_df, clock_offset_ns, power_field, temp_slope_window_s, series)
    n_steps = int(len(per))
    aligned = per["aligned"].to_numpy(dtype=bool)
    n_aligned = int(aligned.sum())
    aligned_fraction = n_aligned / n_steps if n_steps else 0.0

    rate = collapse_rate(series, rle_params) if series is not None else collapse_rate(None, rle_params)
    events = collapse_events(series) if series is not None else []
    gn = per["grad_norm"].to_numpy(float)
    g_use = np.where(aligned, gn, np.nan)
    spikes = grad_spikes(gn, spike_k, detrend_window_steps)
    per["spike"] = spikes["mask"]

    min_steps = max(min_steps, 3 * (2 * max_lag + 1))  # at least three blocks of one lag window
    x = detrend(g_use, detrend_window_steps)
    candidates = {
        "power": detrend(per["power_w"].to_numpy(float), detrend_window_steps),
        "temp_slope": detrend(per["temp_slope_c_per_s"].to_numpy(float), detrend_window_steps),
        "collapse": per["collapse"].to_numpy(float),
    }
    untested: dict[str, str] = {}
    targets = {}
    for name, y in candidates.items():
        ok = np.isfinite(y) & np.isfinite(x)
        if ok.sum() < min_steps:
            untested[name] = f"only {int(ok.sum())} steps with both grad_norm and {name} (< {min_steps})"
        elif np.nanstd(y[ok]) == 0:
            untested[name] = ("no RLE collapse during the aligned steps" if name == "collapse"
                              else f"{name} is constant over the aligned steps")
        else:
            targets[name] = y

    reasons = []
    p_floor = 1.0 / (n_boot + 1)
    n_grad = int(np.isfinite(g_use).sum())
    if len(trace) == 0:
        reasons.append("the trace is empty")
    elif n_aligned < min_steps:
        reasons.append(f"only {n_aligned} of {n_steps} steps are aligned with the trace (< {min_steps})"
                       + ("; are the step times on the trace's monotonic clock?" if n_aligned == 0 and n_steps else ""))
    elif n_grad < min_steps or np.nanstd(g_use) == 0:
        reasons.append(f"grad_norm is missing or constant ({n_grad} finite aligned values)")
    if p_floor > alpha + 1e-12:
        reasons.append(f"{n_boot} bootstrap draws cannot give p below {p_floor:.3g} (alpha {alpha}); raise n_boot")
    if not targets and not reasons:
        reasons.append("no target could be tested: " + "; ".join(f"{k}: {v}" for k, v in untested.items()))
    if require_collapses and rate["n_collapses"] == 0:
        reasons.append("no RLE collapse in the run (require_collapses)")

    test = bootstrap_test(x, targets, max_lag, n_boot, seed) if targets and not reasons else None
    p = best_lag = corr = target = None
    if reasons:
        verdict = "insufficient data"
        reason = "; ".join(reasons)
    else:
        p = test["p_value"]
        target = test["best_target"]
        t = test["targets"][target]
        best_lag, corr = t["best_lag"], t["correlation"]
        if p is not None and p <= alpha + 1e-12:
            verdict = "coupled"
            reason = (f"grad_norm and {target} rank-correlate at lag {best_lag} (rho {corr:+.2f}), "
                      f"block-bootstrap p = {p:.3g} <= {alpha}")
        else:
            verdict = "not coupled"
            reason = f"no target beats its block-bootstrap null (p = {p:.3g} > {alpha})"
        if untested:
            reason += "; untested: " + "; ".join(f"{k} ({v})" for k, v in untested.items())

    target_figs = {}
    for name in TARGETS:
        if test is not None and name in test["targets"]:
            t = test["targets"][name]
            target_figs[name] = {"tested": True, "reason": None, "lags": t["lags"], "best_lag": t["best_lag"],
                                 "correlation": rnd(t["correlation"], 4), "z": rnd(t["z"], 3),
                                 "p_value": rnd(t["p_value"], 5)}
        else:
            why = untested.get(name) or ("not tested: " + "; ".join(reasons) if reasons else "not tested")
            target_figs[name] = {"tested": False, "reason": why, "lags": [], "best_lag": None, "correlation": None,
                                 "z": None, "p_value": None}

    headline = {
        "steps": n_steps,
        "n_aligned": n_aligned,
        "aligned_fraction": rnd(aligned_fraction, 4),
        "collapse_rate": rate["collapse_rate_per_gated_h"],
        "collapse_rate_basis": rate["basis"],
        "n_collapses": rate["n_collapses"],
        "verdict": verdict,
        "verdict_reason": reason,
        "p_value": rnd(p, 5),
        "best_lag": best_lag,
        "correlation": rnd(corr, 4),
        "target": target,
    }
    dur = per["duration_s"].to_numpy(float)
    t_good = tables.good(trace, pick_power_field(trace, power_field))[0] if len(trace) else np.array([])
    tick_s = float(np.median(np.diff(t_good))) / NS_PER_S if t_good.size > 1 else math.nan
    outside = 0
    if len(trace):
        t_lo, t_hi = int(trace["t_ns"].iloc[0]), int(trace["t_ns"].iloc[-1])
        outside = int(np.sum((per["t_end_ns"].to_numpy() < t_lo) | (per["t_start_ns"].to_numpy() > t_hi)))
    quality = {
        "quality": "insufficient" if verdict == "insufficient data" else ("ok" if aligned_fraction >= 0.9 else "degraded"),
        "aligned_fraction": rnd(aligned_fraction, 4),
        "n_steps": n_steps,
        "n_aligned": n_aligned,
        "steps_outside_trace": outside,
        "median_step_s": rnd(np.median(dur), 4) if n_steps else None,
        "median_tick_s": rnd(tick_s, 4),
        "steps_shorter_than_tick": int(np.sum(dur < tick_s)) if math.isfinite(tick_s) else None,
        "power_field": pick_power_field(trace, power_field) if len(trace) else None,
        "clock": "host monotonic ns (steps + clock_offset_ns)",
        "clock_offset_ns": int(clock_offset_ns),
        "n_boot": n_boot,
        "block_steps": test["block"] if test else None,
        "p_floor": rnd(p_floor, 5),
        "alpha": alpha,
        "method": ("Spearman rho, lags -{0}..+{0}, circular block-bootstrap null of the targets, max |rho| over "
                   "lags, max-T over targets; rolling-median detrend {1} steps").format(max_lag, detrend_window_steps),
        "untested": untested,
    }
    figures = {
        **headline,
        "lag_convention": LAG_CONVENTION,
        "targets": target_figs,
        "spikes": {"n_spikes": spikes["n_spikes"], "k": spike_k, "mad": rnd(spikes["threshold_mad"], 6),
                   "steps": [int(v) for v in per["step"].to_numpy()[spikes["mask"]][:200]]},
        "rle": {"rate": rate, "events": events[:200],
                "rle_median": rnd(np.nanmedian(series["rle"]), 4) if series is not None and series["rle"].notna().any()
                else None},
        "energy_per_step_j_median": rnd(np.nanmedian(per["energy_j"]), 4) if per["energy_j"].notna().any() else None,
        "signature": signature(trace, per, quality["power_field"]),
        "quality": quality,
    }
    out = {**headline, "figures": figures, "quality": quality}
    if per_step:
        out["per_step"] = _records(per)
    if return_frames:
        out["frames"] = {"per_step": per, "rle_series": series}
    return out


SIGNATURE_FIELDS = (("power", "power_{}_w"), ("temp_c", "temp_{}_c"), ("util_gpu", "util_{}_pct"))


def signature(trace: pd.DataFrame, per: pd.DataFrame, power_field: str | None) -> dict:
    """The workload's signature over the training window (first step start to last step end,
    on the trace's clock): 5th and 95th percentiles of the good reads of power (the per-step
    power field), temperature and utilization; None where there is no read."""
    out = {name.format(q): None for _, name in SIGNATURE_FIELDS for q in ("p05", "p95")}
    if not len(per) or not len(trace):
        return out
    t0, t1 = int(per["t_start_ns"].min()), int(per["t_end_ns"].max())
    for field, name in SIGNATURE_FIELDS:
        field = (power_field or "power_w") if field == "power" else field
        if field not in trace.columns:
            continue
        t, v = tables.good(trace, field)
        v = v[(t >= t0) & (t <= t1)]
        if v.size:
            lo, hi = np.percentile(v, [5, 95])
            out[name.format("p05")], out[name.format("p95")] = float(lo), float(hi)
    return out


def _records(per: pd.DataFrame) -> list[dict]:
    """Per-step rows as JSON-safe dicts."""
    out = []
    for rec in per.to_dict("records"):
        row = {}
        for k, v in rec.items():
            if k in ("t_start_ns", "t_end_ns", "n_samples", "step"):
                row[k] = int(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else None
            elif k in ("aligned", "spike"):
                row[k] = bool(v)
            else:
                row[k] = rnd(v, 6)
        out.append(row)
    return out
