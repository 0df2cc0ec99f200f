"""From runner results and the recorded trace to experiment reports (pure, no device).

A report is ``{"experiment", "schema_version", "simulated", "figures", "quality", "checks"}``:
the figures come from :mod:`experiments.analysis` over the trace of the experiment's own
window, never from the runner's view of the device.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd

from experiments.analysis.tables import window

SCHEMA_VERSION = 1
QUALITY_KEYS = ("quality", "quality_reason", "fake_idle", "fake_idle_reasons", "equilibrium", "equilibrium_status",
                "predicted", "throttled", "passed",
                "criterion", "energy_quality", "limiting_cause", "quality_counts")


def _quality(figures: dict) -> dict:
    """The quality flags of a figures dict (top level and one level down, e.g. per field)."""
    out = {k: figures[k] for k in QUALITY_KEYS if k in figures}
    for key, value in figures.items():
        if isinstance(value, dict):
            sub = {k: value[k] for k in QUALITY_KEYS if k in value}
            if sub:
                out[key] = sub
    return out


def report(name: str, figures: dict, simulated: bool, checks: dict | None = None, extra: dict | None = None) -> dict:
    """One experiment's report."""
    doc = {"experiment": name, "schema_version": SCHEMA_VERSION, "simulated": simulated, "figures": figures,
           "quality": _quality(figures), "checks": checks or {}}
    if extra:
        doc.update(extra)
    return doc


def _idle_power_w(baseline: dict | None, trace: pd.DataFrame, before_ns: int) -> float | None:
    """Idle power for baseline subtraction: the run's baseline, else the 3 s before ``before_ns``."""
    if baseline and baseline.get("figures", {}).get("mean_robust_w") is not None:
        return float(baseline["figures"]["mean_robust_w"])
    pre = window(trace, before_ns - 3_000_000_000, before_ns)
    pre = pre[pre.read_ok & pre.power_w.notna()]
    return float(pre.power_w.median()) if len(pre) else None


def analyse_all(results: dict, configs: dict, trace: pd.DataFrame, markers: pd.DataFrame, info: dict):
    """Reports for every experiment that ran, and the per-event table (or None)."""
    sim = bool(info.get("simulated"))
    out: dict[str, dict] = {}
    events = None
    for name, res in results.items():
        if "error" in res:
            out[name] = report(name, {}, sim, checks={"error": res["error"]})
            continue
        if name == "baseline":
            from experiments.analysis import baseline as a_baseline

            cfg = configs[name]
            fig = a_baseline.analyze_baseline(trace, res["t_start_ns"], res["t_end_ns"],
                                              floor_threshold_w=cfg.floor_threshold_w, outlier_k=cfg.outlier_k)
            out[name] = report(name, fig, sim, checks={"completed": res["completed"]})
        elif name == "instrument_response":
            from experiments.analysis import instrument_response as a_ir

            ir_rows = window(trace, res["t_start_ns"], res["t_end_ns"])
            fig = a_ir.analyze_step_response(ir_rows, res["edges"])
            out[name] = report(name, fig, sim, checks={"steps": len(res["edges"]) // 2})
        elif name == "heat_soak":
            from experiments.analysis import heat_soak as a_soak

            fig = a_soak.analyze_heat_soak(trace, res["t_start_ns"], res["t_end_ns"], window_s=configs[name].window_s,
                                           window_note=configs[name].window_note)
            fig["end_reason"] = res["end_reason"]
            if res.get("trip"):
                fig["thermal_trip"] = res["trip"]
            out[name] = report(name, fig, sim, checks={"end_reason": res["end_reason"]})
        elif name == "joule_curve":
            events = _joule_events(res, trace, out.get("baseline"), out.get("instrument_response"))
            from experiments.analysis import energy as a_energy

            fig = a_energy.joule_curve(events) if len(events) else {}
            fig.update(_j_per_token_headline(fig.get("points") or []))
            if res.get("figures", {}).get("model"):
                fig["model"] = res["figures"]["model"]  # the model measured: its shape, dtype and memory figures
            fig["truth"] = (res.get("figures") or {}).get("truth")  # the compute model's law; None on hardware
            out[name] = report(name, fig, sim, checks=res.get("checks", {}))
        elif name == "training_coupling":
            out[name] = _training_coupling(res, trace, info, sim)
        else:  # vram_cliff reports its own figures
            out[name] = report(name, res.get("figures", {}), sim, checks=res.get("checks", {}),
                               extra={k: res[k] for k in ("probes",) if k in res})
    return out, events


FALLBACK_SLOWDOWN_C = 83.0  # the thermal guard's fallback: when a device reports no slowdown threshold


def _training_coupling(res: dict, trace: pd.DataFrame, info: dict, sim: bool) -> dict:
    """Coupling analysis over the whole device trace (RLE's warm-up is spent before training)."""
    from experiments.analysis.coupling import analyze_training_coupling

    limit = info.get("power_limit_w") or info.get("default_power_limit_w")
    slowdown = info.get("slowdown_temp_c") or FALLBACK_SLOWDOWN_C
    if not limit:
        return report("training_coupling", {"verdict": "insufficient data",
                                            "verdict_reason": "the device reports no power limit: RLE needs one"}, sim)
    result = analyze_training_coupling(trace, pd.DataFrame(res["steps"]), float(limit), float(slowdown))
    result.pop("per_step", None)
    figures = {k: v for k, v in result.items() if k not in ("figures", "quality")} | result.get("figures", {})
    # The limits RLE was computed with: the warehouse repeats the per-step analysis with them.
    figures |= {"rle_power_limit_w": float(limit), "rle_slowdown_temp_c": float(slowdown)}
    doc = report("training_coupling", figures, sim, checks={"end_reason": res.get("end_reason"),
                                                            "slowdown_temp_c_assumed": not info.get("slowdown_temp_c")},
                 extra={"steps": res["steps"]})
    doc["quality"] = {**doc["quality"], **(result.get("quality") or {})}
    return doc


def _j_per_token_headline(points: list[dict], phase: str = "decode") -> dict:
    """J/token at batch 1 and at the largest batch (decode), the figures the fleet table shows."""
    pts = sorted((p for p in points if p.get("phase") == phase and p.get("j_per_token") is not None),
                 key=lambda p: p.get("batch_size") or 0)
    if not pts:
        return {}
    first, last = pts[0], pts[-1]
    return {"j_per_token": first["j_per_token"], "j_per_token_batch1": first["j_per_token"] if first.get("batch_size") == 1 else None,
            "j_per_token_batch1_sem": first.get("j_per_token_sem") if first.get("batch_size") == 1 else None,
            "j_per_token_max_batch": last["j_per_token"], "j_per_token_max_batch_sem": last.get("j_per_token_sem"),
            "max_batch": last.get("batch_size")}


def _joule_events(res: dict, trace: pd.DataFrame, baseline: dict | None, ir: dict | None) -> pd.DataFrame:
    from experiments.analysis import energy as a_energy

    evs = res.get("events", [])
    if not evs:
        return pd.DataFrame()
    p_idle = _idle_power_w(baseline, trace, min(e["t_start_ns"] for e in evs))
    p_idle_sem = (baseline or {}).get("figures", {}).get("sem_eff_w")
    update_ms = None
    if ir:
        field = ir["figures"].get("power_instant_w") or ir["figures"].get("power_w") or {}
        update_ms = field.get("update_period_ms")
    # All events at once (vectorised over events): one call per event cost ~20 ms each, the
    # whole joule curve of a 1 h run at 100 Hz about 10 s per device (`bench analysis`).
    table = pd.DataFrame([{k: e.get(k) for k in ("event_id", "phase", "batch_size", "input_tokens", "output_tokens",
                                                   "passes", "t_start_ns", "t_end_ns", "tokens_per_second")}
                          | {"counter_start_j": e.get("energy_counter_start_j"),
                             "counter_end_j": e.get("energy_counter_end_j")} for e in evs])
    per = a_energy.events_energy(trace, table, p_idle, update_period_ms=update_ms, p_idle_sem_w=p_idle_sem)
    per.insert(0, "experiment", "joule_curve")
    per["energy_quality"] = per["quality"]
    return per


TR122_TRACE_COLUMNS = ["t_ns", "power_w", "temp_c", "sm_clock_mhz", "mem_clock_mhz", "util_gpu", "util_mem",
                       "vram_used_mib", "read_ok", "dt_s"]


def write_tr122_pack(out_dir: Path, trace: pd.DataFrame, events: pd.DataFrame | None, baseline: dict | None,
                     meta: dict) -> Path:
    """TR122-compatible artifacts (section 3 schemas), written to a temp dir then renamed."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cols = [c for c in TR122_TRACE_COLUMNS if c in trace.columns]
    trace[cols].to_csv(tmp / "power_trace.csv", index=False)
    with open(tmp / "generation_events.jsonl", "w") as fh:
        for e in [] if events is None or not len(events) else events.to_dict("records"):
            fh.write(json.dumps({
                "event_id": e.get("event_id"), "phase": e.get("phase"), "t_start_ns": e.get("t_start_ns"),
                "t_end_ns": e.get("t_end_ns"), "input_tokens": e.get("input_tokens"),
                "output_tokens": e.get("output_tokens"), "batch_size": e.get("batch_size"),
                "tokens_per_second": e.get("tokens_per_second"), "energy_joules": e.get("energy_integrated_j"),
                "operational_joules": e.get("energy_net_j"), "energy_quality": e.get("energy_quality"),
                "gap_fraction": e.get("gap_fraction"),
            }, default=float) + "\n")
    (tmp / "baseline.json").write_text(json.dumps((baseline or {}).get("figures", {}), indent=2, default=str))
    (tmp / "run_metadata.json").write_text(json.dumps(meta, indent=2, default=str))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir
