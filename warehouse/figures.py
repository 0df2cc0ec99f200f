"""Typed table rows from an experiment's report, read through its contract.

The report (``experiments.contracts``) was validated strictly when it was read, so every
key read here exists with its type: nothing is guessed, no alias is tried. The raw
document always goes to ``experiment_results``; these rows are a typed copy for the views.
One rule stays: a value outside its column's physical range (the tables' CHECKs, e.g. a
fitted T_inf of 900 C from a soak far too short) becomes null in the typed row, and the
report keeps it.

Columns per experiment (the report's figure in parentheses where it is named otherwise):

* ``baseline`` -> ``baselines``, one row for the report's ``field``: idle_robust_w
  (mean_robust_w), idle_sem_w (sem_eff_w), idle_mean_w (mean_all_w), idle_median_w
  (median_w), idle_std_w (std_w), floor_w, floor_fraction, fake_idle, n_samples (n),
  window_s, quality.
* ``instrument_response`` -> ``instrument_response``, one row per power field the device
  reports: update_period_ms, rise_ms, delay_ms, window_ms, idle_w, load_w, n_steps, quality.
* ``vram_cliff`` -> ``vram_cliff`` (capacity_mib, weights_mib, the fragmentation figures;
  quality: ``good`` when every check that ran passed, else ``checks_failed``),
  ``vram_cliff_points`` (one per batch size; n_probes (probes)) and ``vram_cliff_probes``.
* ``joule_curve`` -> ``joule_curve`` (one per phase x batch size) and ``joule_fit`` (one
  per phase, its params as JSON, the fit's own quality).
* ``heat_soak`` -> ``heat_soak`` and ``heat_soak_series`` (the report's series).

``training_coupling`` fills its tables in ``warehouse/training.py``.
"""

from __future__ import annotations

import json
import math

from experiments.contracts import Report

# canonical experiment name -> the typed tables its report fills here
TABLES = {
    "baseline": ("baselines",),
    "instrument_response": ("instrument_response",),
    "vram_cliff": ("vram_cliff", "vram_cliff_points", "vram_cliff_probes"),
    "joule_curve": ("joule_curve", "joule_fit"),
    "heat_soak": ("heat_soak", "heat_soak_series"),
}

Spec = dict[str, tuple]  # column -> (figure key, low, high): the physical range, None for open

BASELINE: Spec = {
    "idle_robust_w": ("mean_robust_w", 0, 5000), "idle_sem_w": ("sem_eff_w", 0, None),
    "idle_mean_w": ("mean_all_w", 0, 5000), "idle_median_w": ("median_w", 0, 5000),
    "idle_std_w": ("std_w", 0, None), "floor_w": ("floor_w", 0, 5000), "floor_fraction": ("floor_fraction", 0, 1),
    "fake_idle": ("fake_idle", None, None), "n_samples": ("n", 0, None), "window_s": ("window_s", 0, None),
}
RESPONSE: Spec = {
    "update_period_ms": ("update_period_ms", 1e-9, None), "rise_ms": ("rise_ms", 0, None),
    "delay_ms": ("delay_ms", None, None), "window_ms": ("window_ms", 0, None), "idle_w": ("idle_w", 0, 5000),
    "load_w": ("load_w", 0, 5000), "n_steps": ("n_steps", 0, None),
}
VRAM: Spec = {"capacity_mib": ("capacity_mib", 1e-9, None), "weights_mib": ("weights_mib", 0, None)}
FRAGMENTATION: Spec = {
    "fragmentation": ("fragmentation", 0, 1), "fragmentation_at_oom": ("fragmentation_at_oom", 0, 1),
    "largest_allocatable_mib": ("largest_allocatable_mib", 0, None),
}
VRAM_POINT: Spec = {
    "max_context": ("max_context", 0, None), "first_failing_context": ("first_failing_context", 0, None),
    "cause": ("cause", None, None), "model_max_context": ("model_max_context", None, None),
    "delta_tokens": ("delta_tokens", None, None), "n_probes": ("probes", 0, None),
    "peak_allocated_mib": ("peak_allocated_mib", 0, None), "reserved_mib": ("reserved_mib", 0, None),
    "nvml_used_mib": ("nvml_used_mib", 0, None), "peak_component": ("peak_component", None, None),
}
PROBE: Spec = {name: (name, low, high) for name, low, high in (
    ("batch_size", 1, None), ("context", 0, None), ("ok", None, None), ("oom", None, None),
    ("peak_allocated_mib", 0, None), ("reserved_mib", 0, None), ("peak_reserved_mib", 0, None),
    ("nvml_used_mib", 0, None), ("model_peak_mib", 0, None), ("elapsed_s", 0, None), ("error", None, None))}
JOULE_POINT: Spec = {
    "j_per_token": ("j_per_token", 0, None), "j_per_token_sem": ("j_per_token_sem", 0, None),
    "tokens_per_s": ("tokens_per_s", 0, None), "power_w": ("power_w", 0, 5000), "n_events": ("n_events", 0, None),
    "energy_quality": ("energy_quality", None, None),
}
HEAT: Spec = {name: (name, low, high) for name, low, high in (
    ("tau_s", 1e-9, None), ("t_inf_c", -40, 200), ("t_start_c", -40, 150), ("t_end_c", -40, 150),
    ("equilibrium", None, None), ("equilibrium_kind", None, None), ("time_to_equilibrium_s", 0, None),
    ("throttled", None, None), ("throttle_s", 0, None), ("power_mean_w", 0, 5000), ("fit_r2", None, 1),
    ("duration_s", 0, None))}
SERIES_RANGES = {"t_s": (None, None), "temp_c": (-40, 150), "power_w": (0, 5000), "sm_clock_mhz": (0, None)}


def in_range(value, low, high):
    """``value``, or None when it is a number outside [low, high] (or not finite)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        return None
    return value


def model_row(figures, spec: Spec) -> dict:
    """The spec's columns from a contract model's figures (every key exists: the model says so)."""
    return {column: in_range(getattr(figures, key), low, high) for column, (key, low, high) in spec.items()}


def checks_quality(checks) -> str | None:
    """``good`` when every check that ran passed, ``checks_failed`` when one did not, else None."""
    ran = [v for k, v in checks if k != "error" and isinstance(v, bool)]
    if not ran:
        return None
    return "good" if all(ran) else "checks_failed"


def typed_rows(name: str, report: Report) -> dict[str, list[dict]]:
    """Rows for the typed tables of one experiment's report, keyed by table name.

    Every row lacks run_id and device_uid (ingest adds them). A failed experiment (figures
    null) and an experiment with no typed tables here give {}.
    """
    figures = report.figures
    if figures is None or name not in TABLES:
        return {}
    if name == "baseline":
        return {"baselines": [{"field": figures.field} | model_row(figures, BASELINE) | {"quality": figures.quality}]}
    if name == "instrument_response":
        return {"instrument_response": [{"field": field} | model_row(f, RESPONSE) | {"quality": f.quality}
                                        for field, f in figures.fields().items()]}
    if name == "vram_cliff":
        summary = model_row(figures, VRAM) | model_row(figures.fragmentation, FRAGMENTATION)
        summary["quality"] = checks_quality(report.checks)
        points = _unique([{"batch_size": p.batch_size} | model_row(p, VRAM_POINT) for p in figures.cliff],
                         ("batch_size",))
        probes = [{"probe_idx": i} | model_row(p, PROBE) for i, p in enumerate(report.probes or [])]
        return {"vram_cliff": [summary], "vram_cliff_points": points, "vram_cliff_probes": probes}
    if name == "joule_curve":
        points = [{"phase": p.phase, "batch_size": p.batch_size} | model_row(p, JOULE_POINT)
                  for p in figures.points or [] if p.batch_size is not None]
        fits = [{"phase": f.phase, "model": f.model,
                 "params_json": json.dumps(f.params.model_dump(mode="json"), sort_keys=True),
                 "r2": in_range(f.r2, None, 1), "quality": f.quality} for f in figures.fits or []]
        return {"joule_curve": _unique(points, ("phase", "batch_size")), "joule_fit": _unique(fits, ("phase",))}
    if name == "heat_soak":
        summary = model_row(figures, HEAT) | {"quality": figures.quality}
        return {"heat_soak": [summary], "heat_soak_series": _series(figures.series)}
    return {}


def _series(series) -> list[dict]:
    """The soak's series as rows (t_s unique: the last row wins)."""
    if series is None:
        return []
    columns = {name: getattr(series, name) for name in SERIES_RANGES}
    n = min(len(values) for values in columns.values())
    rows = [{name: in_range(values[i], *SERIES_RANGES[name]) for name, values in columns.items()} for i in range(n)]
    return _unique([r for r in rows if r["t_s"] is not None], ("t_s",))


def _unique(rows: list[dict], key: tuple) -> list[dict]:
    """Rows with the last one winning per key (a primary key must not repeat)."""
    seen = {}
    for row in rows:
        seen[tuple(row[k] for k in key)] = row
    return list(seen.values())


# ---------------------------------------------------------------- warehouse/training.py's readers
# warehouse/training.py reads the training-coupling report (already validated by its contract,
# then dumped) with these two; they go when its per-step tables become artifacts (issue 25).


def quality_of(value) -> str | None:
    """One quality word from a ``quality`` value: a string, or a dict's ``quality`` key."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("quality"), str):
        return value["quality"]
    return None


def typed_row(source, spec: dict[str, tuple]) -> dict:
    """Columns of ``source`` (a dict) by spec {column: (kind, low, high[, other keys])}; a
    value of the wrong kind or outside [low, high] is None."""
    source = source if isinstance(source, dict) else {}
    row = {}
    for column, rule in spec.items():
        keys = (column, *rule[3]) if len(rule) > 3 else (column,)
        value = next((source[k] for k in keys if source.get(k) is not None), None)
        row[column] = _convert(value, rule)
    return row


def _convert(value, rule: tuple):
    kind = rule[0]
    if value is None:
        return None
    if kind in ("bool", "str"):
        return value if isinstance(value, bool if kind == "bool" else str) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = in_range(float(value), rule[1], rule[2])
    if kind == "int":
        return int(number) if number is not None and number == int(number) else None
    return number
