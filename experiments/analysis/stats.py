"""Small statistics shared by the analyses: autocorrelation-aware errors, robust location
and scale, least-squares slopes, and JSON-safe rounding.

Samples from a poller are strongly autocorrelated (it reads faster than the sensor
updates), so a plain SEM = std/sqrt(N) is far too optimistic. Every uncertainty here uses
the AR(1) effective sample size N_eff = N (1 - rho) / (1 + rho), rho the lag-1
autocorrelation, clipped to [1, N].
"""

from __future__ import annotations

import math

import numpy as np

MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its sigma


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # einsum, not np.dot: BLAS dot on strided slices is slow and threads needlessly.
    return float(np.einsum("i,i->", a, b))


def _finite(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def lag1_autocorr(x) -> float:
    """Lag-1 autocorrelation of a series (0.0 when it is constant or shorter than 3)."""
    a = _finite(x)
    if a.size < 3:
        return 0.0
    d = a - a.mean()
    den = _dot(d, d)
    if den <= 0.0:
        return 0.0
    return float(np.clip(_dot(d[:-1], d[1:]) / den, -1.0, 1.0))


def n_eff(n: int, rho: float) -> float:
    """Effective number of independent samples of an AR(1) series, clipped to [1, n]."""
    if n <= 0:
        return 0.0
    if rho >= 1.0:
        return 1.0
    return float(min(max(n * (1.0 - rho) / (1.0 + rho), 1.0), n))


def sem_eff(x) -> dict:
    """Mean with its autocorrelation-aware standard error.

    Returns ``{"mean", "std", "n", "rho", "n_eff", "sem"}`` (floats; NaN when empty).
    """
    a = _finite(x)
    n = int(a.size)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0, "rho": math.nan, "n_eff": 0.0, "sem": math.nan}
    rho = lag1_autocorr(a)
    ne = n_eff(n, rho)
    std = float(a.std(ddof=1)) if n > 1 else 0.0
    return {"mean": float(a.mean()), "std": std, "n": n, "rho": rho, "n_eff": ne, "sem": std / math.sqrt(ne)}


def median(x) -> float:
    """Median of the finite values (NaN when none)."""
    a = _finite(x)
    return float(np.median(a)) if a.size else math.nan


def mad(x, scaled: bool = False) -> float:
    """Median absolute deviation; ``scaled`` multiplies by 1.4826 (a sigma estimate)."""
    a = _finite(x)
    if a.size == 0:
        return math.nan
    m = float(np.median(np.abs(a - np.median(a))))
    return m * MAD_TO_SIGMA if scaled else m


def ls_slope(x, y, autocorr: bool = True) -> dict:
    """Least-squares line y = intercept + slope * x with the slope's standard error.

    With ``autocorr`` the residuals' lag-1 autocorrelation shrinks the degrees of freedom
    (N_eff), which widens the error for smooth, oversampled signals.
    Returns ``{"slope", "slope_se", "intercept", "n", "n_eff", "r2"}``; NaN when n < 2.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    nan = {"slope": math.nan, "slope_se": math.nan, "intercept": math.nan, "n": n, "n_eff": float(n), "r2": math.nan}
    if n < 2:
        return nan
    xm, ym = x.mean(), y.mean()
    dx = x - xm
    sxx = _dot(dx, dx)
    if sxx <= 0.0:
        return nan
    slope = _dot(dx, y - ym) / sxx
    intercept = float(ym - slope * xm)
    resid = y - (intercept + slope * x)
    ss_res = _dot(resid, resid)
    ss_tot = _dot(y - ym, y - ym)
    ne = n_eff(n, lag1_autocorr(resid)) if autocorr else float(n)
    # Scale the variance by n/N_eff: the fit used n points but they carry N_eff's information.
    var = ss_res / max(n - 2, 1) * (n / ne) if n > 2 else 0.0
    se = math.sqrt(var / sxx) if n > 2 else math.nan
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
    return {"slope": slope, "slope_se": se, "intercept": intercept, "n": n, "n_eff": ne, "r2": r2}


def linear_fit(x, y) -> dict:
    """Ordinary least squares y = a + b x (independent points) with standard errors.

    Returns ``{"a", "a_se", "b", "b_se", "r2", "n"}``; NaN where undetermined.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    out = {"a": math.nan, "a_se": math.nan, "b": math.nan, "b_se": math.nan, "r2": math.nan, "n": n}
    if n < 2:
        return out
    xm = x.mean()
    sxx = _dot(x - xm, x - xm)
    if sxx <= 0:
        return out
    b = _dot(x - xm, y - y.mean()) / sxx
    a = float(y.mean() - b * xm)
    resid = y - a - b * x
    ss_res = _dot(resid, resid)
    ss_tot = _dot(y - y.mean(), y - y.mean())
    out.update(a=a, b=b, r2=1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan)
    if n > 2:
        s2 = ss_res / (n - 2)
        out["b_se"] = math.sqrt(s2 / sxx)
        out["a_se"] = math.sqrt(s2 * (1.0 / n + xm * xm / sxx))
    return out


def rnd(value, digits: int = 3):
    """A JSON-safe python number rounded to ``digits`` decimals (None for NaN/inf/None)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    v = float(value)
    if not math.isfinite(v):
        return None
    return round(v, digits)


def rnd_sig(value, sigma=None, sig: int = 2, max_digits: int = 6):
    """Round ``value`` to the decimal of ``sigma``'s ``sig`` significant digits.

    No false precision: a mean of 24.10341 W with a 0.031 W error reads 24.103. Without a
    usable sigma, keeps 4 significant digits (never more than ``max_digits`` decimals).
    """
    if value is None:
        return None
    v = float(value)
    if not math.isfinite(v):
        return None
    s = None if sigma is None else float(sigma)
    if s is not None and math.isfinite(s) and s > 0:
        digits = sig - 1 - int(math.floor(math.log10(s)))
    elif v != 0:
        digits = 3 - int(math.floor(math.log10(abs(v))))
    else:
        return 0.0
    digits = max(min(digits, max_digits), -6)
    out = round(v, digits)
    return float(out) if digits > 0 else float(int(out))


Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def with_interval(name: str, unit: str, value, se, resolved: bool | None = None, reason: str | None = None,
                  sig: int = 2, dof: float | None = None) -> dict:
    """A figure with its standard error, 95 % interval and resolved flag, in the project's names.

    ``with_interval("tau", "s", 120.3, 4.1)`` gives ``tau_s``, ``tau_se_s``, ``tau_ci_low_s``,
    ``tau_ci_high_s`` and ``tau_resolved`` (unit last, as everywhere). The interval is
    value +- 1.96 se (normal approximation), or +- Student's t quantile with ``dof`` degrees of
    freedom when the se comes from the spread of a few values. ``resolved`` defaults to: value and se finite and
    the interval excluding zero (a figure whose interval reaches zero is not resolved); an
    unresolved figure keeps its value and interval, never a bare 0. ``reason`` (when given)
    says why it is not resolved, as ``<name>_unresolved_reason``.
    """
    suffix = f"_{unit}" if unit else ""
    v = None if value is None else float(value)
    s = None if se is None else float(se)
    finite = v is not None and math.isfinite(v) and s is not None and math.isfinite(s)
    z = Z95
    if dof is not None and dof >= 1:
        from scipy.stats import t as student_t

        z = float(student_t.ppf(0.975, dof))
    lo = v - z * s if finite else None
    hi = v + z * s if finite else None
    if resolved is None:
        resolved = bool(finite and (lo > 0 or hi < 0))
    out = {f"{name}{suffix}": rnd_sig(v, s, sig), f"{name}_se{suffix}": rnd_sig(s, s, sig),
           f"{name}_ci_low{suffix}": rnd_sig(lo, s, sig), f"{name}_ci_high{suffix}": rnd_sig(hi, s, sig),
           f"{name}_resolved": bool(resolved)}
    if reason is not None and not resolved:
        out[f"{name}_unresolved_reason"] = reason
    return out
