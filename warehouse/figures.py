"""Typed table rows from an experiment's JSON ``figures``.

The raw JSON always goes to ``experiment_results``; these rows are a typed copy for the
views. Extraction is lenient: a missing key, a value of the wrong type or a value outside
its physical range becomes null, never an error (the raw JSON keeps the original).

Figure keys read, per experiment (aliases in EXPERIMENT_KINDS; a key's alternatives in
parentheses, as experiments/analysis writes them):

* ``baseline``: per power field (``fields: {power_w: {...}}``, or top-level keys named
  after power fields, or flat for one field named by ``field``, default power_w):
  idle_robust_w (mean_robust_w), idle_sem_w (sem_eff_w), idle_mean_w (mean_all_w),
  idle_median_w (median_w), idle_std_w (std_w), floor_w, floor_fraction, fake_idle,
  n_samples (n), window_s, quality.
* ``instrument_response``: per power field, same layouts: update_period_ms, rise_ms,
  delay_ms, window_ms, idle_w, load_w, n_steps, quality.
* ``vram_cliff``: capacity_mib, weights_mib, ``fragmentation`` {fragmentation,
  fragmentation_at_oom, largest_allocatable_mib}; ``cliff``: a list per batch size of
  {batch_size, max_context, first_failing_context, cause, model_max_context, delta_tokens,
  probes, peak_allocated_mib, reserved_mib, nvml_used_mib, peak_component}; ``probes`` (in
  the figures or at the top level of the document): a list of {batch_size, context, ok,
  oom, peak_allocated_mib, reserved_mib, peak_reserved_mib, nvml_used_mib, model_peak_mib,
  elapsed_s, error}.
* ``joule_curve``: ``points``: a list of {phase, batch_size, j_per_token, j_per_token_sem,
  tokens_per_s, power_w, n_events, energy_quality}; ``fits``: a list of {phase, model,
  params, r2, quality} (or a dict keyed by phase).
* ``heat_soak``: tau_s, t_inf_c, t_start_c, t_end_c, equilibrium, equilibrium_kind,
  time_to_equilibrium_s, throttled, throttle_s, power_mean_w, fit_r2, duration_s, and
  ``series``: {t_s: [...], temp_c: [...], power_w: [...], sm_clock_mhz: [...]} or a list
  of such rows.

A row's ``quality`` is its own ``quality`` key when present, else the experiment's
quality word (``quality`` as a string, or its ``overall``/``quality`` key), else, when the
document has ``checks``, ``good`` if every check that ran passed and ``checks_failed`` if not.
"""

from __future__ import annotations

import json
import math

from .validate import clean_json

# experiment name -> kind of typed tables it fills
EXPERIMENT_KINDS = {
    "baseline": "baseline",
    "idle_baseline": "baseline",
    "instrument_response": "instrument_response",
    "sensor_response": "instrument_response",
    "vram_cliff": "vram_cliff",
    "joule_curve": "joule_curve",
    "energy_per_token": "joule_curve",
    "heat_soak": "heat_soak",
    "thermal_equilibrium": "heat_soak",
}

Spec = dict[str, tuple]  # column -> (kind, low, high[, alternative keys])

BASELINE: Spec = {
    "idle_robust_w": ("float", 0, 5000, ("mean_robust_w",)), "idle_sem_w": ("float", 0, None, ("sem_eff_w",)),
    "idle_mean_w": ("float", 0, 5000, ("mean_all_w",)), "idle_median_w": ("float", 0, 5000, ("median_w",)),
    "idle_std_w": ("float", 0, None, ("std_w",)), "floor_w": ("float", 0, 5000),
    "floor_fraction": ("float", 0, 1), "fake_idle": ("bool",), "n_samples": ("int", 0, None, ("n",)),
    "window_s": ("float", 0, None),
}
RESPONSE: Spec = {
    "update_period_ms": ("float", 1e-9, None), "rise_ms": ("float", 0, None), "delay_ms": ("float", None, None),
    "window_ms": ("float", 0, None), "idle_w": ("float", 0, 5000), "load_w": ("float", 0, 5000),
    "n_steps": ("int", 0, None),
}
VRAM: Spec = {
    "capacity_mib": ("float", 1e-9, None), "weights_mib": ("float", 0, None),
}
FRAGMENTATION: Spec = {
    "fragmentation": ("float", 0, 1), "fragmentation_at_oom": ("float", 0, 1),
    "largest_allocatable_mib": ("float", 0, None),
}
VRAM_POINT: Spec = {
    "max_context": ("int", 0, None), "first_failing_context": ("int", 0, None), "cause": ("str",),
    "model_max_context": ("int", None, None), "delta_tokens": ("int", None, None),
    "n_probes": ("int", 0, None, ("probes",)), "peak_allocated_mib": ("float", 0, None),
    "reserved_mib": ("float", 0, None), "nvml_used_mib": ("float", 0, None), "peak_component": ("str",),
}
PROBE: Spec = {
    "batch_size": ("int", 1, None), "context": ("int", 0, None), "ok": ("bool",), "oom": ("bool",),
    "peak_allocated_mib": ("float", 0, None), "reserved_mib": ("float", 0, None),
    "peak_reserved_mib": ("float", 0, None), "nvml_used_mib": ("float", 0, None),
    "model_peak_mib": ("float", 0, None), "elapsed_s": ("float", 0, None), "error": ("str",),
}
JOULE_POINT: Spec = {
    "j_per_token": ("float", 0, None), "j_per_token_sem": ("float", 0, None), "tokens_per_s": ("float", 0, None),
    "power_w": ("float", 0, 5000), "n_events": ("int", 0, None), "energy_quality": ("str",),
}
HEAT: Spec = {
    "tau_s": ("float", 1e-9, None), "t_inf_c": ("float", -40, 200), "t_start_c": ("float", -40, 150),
    "t_end_c": ("float", -40, 150), "equilibrium": ("bool",), "equilibrium_kind": ("str",),
    "time_to_equilibrium_s": ("float", 0, None), "throttled": ("bool",), "throttle_s": ("float", 0, None),
    "power_mean_w": ("float", 0, 5000), "fit_r2": ("float", None, 1), "duration_s": ("float", 0, None),
}
SERIES: Spec = {
    "t_s": ("float", None, None), "temp_c": ("float", -40, 150), "power_w": ("float", 0, 5000),
    "sm_clock_mhz": ("float", 0, None),
}
POWER_FIELD_NAMES = ("power_w", "power_instant_w", "power_avg_1s_w")


def quality_of(value) -> str | None:
    """One quality word from a ``quality`` value: a string, or a dict's overall flag."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("overall", "quality", "status", "flag", "run_quality"):
            if isinstance(value.get(key), str):
                return value[key]
    return None


def _convert(value, spec: tuple):
    kind = spec[0]
    if value is None:
        return None
    if kind == "bool":
        return value if isinstance(value, bool) else None
    if kind == "str":
        return value if isinstance(value, str) else None
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    low, high = spec[1], spec[2]
    if (low is not None and number < low) or (high is not None and number > high):
        return None
    if kind == "int":
        return int(number) if number == int(number) else None
    return number


def typed_row(source, spec: Spec) -> dict:
    """The spec's columns read from ``source`` (a dict; anything else gives all nulls)."""
    source = source if isinstance(source, dict) else {}
    row = {}
    for column, rule in spec.items():
        keys = (column, *rule[3]) if len(rule) > 3 else (column,)
        value = next((source[k] for k in keys if source.get(k) is not None), None)
        row[column] = _convert(value, rule)
    return row


def checks_quality(checks) -> str | None:
    """``good`` when every check that ran passed, ``checks_failed`` when one did not, else None."""
    if not isinstance(checks, dict):
        return None
    ran = [v for v in checks.values() if isinstance(v, bool)]
    if not ran:
        return None
    return "good" if all(ran) else "checks_failed"


def _per_field(figures: dict) -> list[tuple[str, dict]]:
    """(field, figures) pairs: ``fields`` as a dict or list, else the flat figures."""
    fields = figures.get("fields", figures.get("per_field"))
    if isinstance(fields, dict):
        return [(str(k), v) for k, v in fields.items() if isinstance(v, dict)]
    if isinstance(fields, list):
        return [(str(v["field"]), v) for v in fields if isinstance(v, dict) and isinstance(v.get("field"), str)]
    named = [(k, v) for k, v in figures.items() if k in POWER_FIELD_NAMES and isinstance(v, dict)]
    if named:
        return named
    return [(str(figures.get("field") or "power_w"), figures)]


def _rows_list(value) -> list[dict]:
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    if isinstance(value, dict):  # columns of equal-length lists
        lists = {k: v for k, v in value.items() if isinstance(v, list)}
        if not lists:
            return []
        n = min(len(v) for v in lists.values())
        return [{k: v[i] for k, v in lists.items()} for i in range(n)]
    return []


def typed_rows(experiment: str, doc: dict) -> dict[str, list[dict]]:
    """Rows for the typed tables of one experiment JSON, keyed by table name.

    Every row lacks run_id and device_uid (ingest adds them). Unknown experiments give {}.
    """
    kind = EXPERIMENT_KINDS.get(experiment)
    figures = doc.get("figures") if isinstance(doc.get("figures"), dict) else {}
    quality = quality_of(doc.get("quality")) or checks_quality(doc.get("checks"))
    if kind is None:
        return {}

    def with_quality(row: dict, source) -> dict:
        own = quality_of(source.get("quality")) if isinstance(source, dict) else None
        row["quality"] = own or quality
        return row

    if kind == "baseline":
        rows = [with_quality({"field": f} | typed_row(s, BASELINE), s) for f, s in _per_field(figures)]
        return {"baselines": _unique(rows, ("field",))}
    if kind == "instrument_response":
        rows = [with_quality({"field": f} | typed_row(s, RESPONSE), s) for f, s in _per_field(figures)]
        return {"instrument_response": _unique(rows, ("field",))}
    if kind == "vram_cliff":
        frag = figures.get("fragmentation")
        summary = with_quality(typed_row(figures, VRAM) | typed_row(frag if isinstance(frag, dict) else {}, FRAGMENTATION),
                               figures)
        points = []
        for p in _rows_list(figures.get("cliff")):
            batch = _convert(p.get("batch_size"), ("int", 1, None))
            if batch is not None:
                points.append({"batch_size": batch} | typed_row(p, VRAM_POINT))
        probe_list = figures.get("probes") if figures.get("probes") is not None else doc.get("probes")
        probes = [{"probe_idx": i} | typed_row(p, PROBE) for i, p in enumerate(_rows_list(probe_list))]
        return {"vram_cliff": [summary], "vram_cliff_points": _unique(points, ("batch_size",)),
                "vram_cliff_probes": probes}
    if kind == "joule_curve":
        points = []
        for p in _rows_list(figures.get("points", figures.get("curve"))):
            batch = _convert(p.get("batch_size"), ("int", 1, None))
            if batch is None:
                continue
            row = {"phase": str(p.get("phase") or "decode"), "batch_size": batch} | typed_row(p, JOULE_POINT)
            if isinstance(row["energy_quality"], str):
                row["energy_quality"] = row["energy_quality"].upper()
            points.append(row)
        fits_value = figures.get("fits")
        if isinstance(fits_value, dict):
            fits_value = [{"phase": k} | v for k, v in fits_value.items() if isinstance(v, dict)]
        fits = []
        for f in _rows_list(fits_value):
            params = f.get("params")
            fits.append(with_quality({
                "phase": str(f.get("phase") or "decode"),
                "model": f.get("model") if isinstance(f.get("model"), str) else None,
                "params_json": None if params is None else json.dumps(clean_json(params), sort_keys=True, default=str),
                "r2": _convert(f.get("r2"), ("float", None, 1)),
            }, f))
        return {"joule_curve": _unique(points, ("phase", "batch_size")), "joule_fit": _unique(fits, ("phase",))}
    if kind == "heat_soak":
        summary = with_quality(typed_row(figures, HEAT), figures)
        series = [typed_row(r, SERIES) for r in _rows_list(figures.get("series"))]
        series = _unique([r for r in series if r["t_s"] is not None], ("t_s",))
        return {"heat_soak": [summary], "heat_soak_series": series}
    return {}


def _unique(rows: list[dict], key: tuple) -> list[dict]:
    """Rows with the last one winning per key (a primary key must not repeat)."""
    seen = {}
    for row in rows:
        seen[tuple(row[k] for k in key)] = row
    return list(seen.values())
