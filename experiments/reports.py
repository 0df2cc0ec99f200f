"""From runner results and the recorded trace to experiment reports (pure, no device).

A report is ``{"experiment", "schema_version", "simulated", "figures", "quality", "checks"}``
(the contract of each experiment: :mod:`experiments.contracts`): the figures come from
:mod:`experiments.analysis` over the trace of the experiment's own window, never from the
runner's view of the device. Every report is built through its contract model and returned
as the JSON document the artifact holds.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa

from experiments.analysis.tables import window
from experiments.contracts.tables import empty, tables_of
from pydantic import ValidationError as ContractViolation

from experiments.contracts import REPORT_SCHEMA_VERSION, build_report, describe, report_json

SCHEMA_VERSION = REPORT_SCHEMA_VERSION
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


def report(name: str, figures: dict | None, simulated: bool, checks: dict | None = None, extra: dict | None = None,
           quality: dict | None = None) -> dict:
    """One experiment's report, validated by its contract, as its artifact's JSON document.

    ``figures`` None: the experiment failed (``checks["error"]`` says why). ``quality``
    adds flags to the ones read from the figures.
    """
    flags = {**_quality(figures or {}), **(quality or {})}
    return report_json(build_report(name, figures, simulated, checks=checks, quality=flags, **(extra or {})))


@dataclass(frozen=True)
class AnalysisInputs:
    """What an experiment's analysis reads: its runner's result, its config, the device's
    whole trace and markers, and the reports of the experiments analysed before it."""

    result: dict
    config: object | None
    trace: pd.DataFrame
    markers: pd.DataFrame | None
    info: dict
    reports: dict = field(default_factory=dict)

    @property
    def simulated(self) -> bool:
        """Whether the device is simulated."""
        return bool(self.info.get("simulated"))


@dataclass(frozen=True)
class Analysis:
    """An experiment's report and the tables it writes beside it (``<table>.parquet``)."""

    report: dict
    tables: dict = field(default_factory=dict)


def analyse_all(results: dict, configs: dict, trace: pd.DataFrame, markers: pd.DataFrame | None, info: dict):
    """(reports of every experiment that ran, in the order given, the tables they computed by artifact name).

    Each experiment's analysis comes from the registry; a runner's error becomes a report
    that carries it. The tables are what the device dir holds as ``<name>.parquet``:
    ``events`` (the Joule curve's per-event energy) when there are events, and every table of
    :mod:`experiments.contracts.tables` for each experiment that ran (empty when its
    analysis computed nothing), so the warehouse loads them instead of recomputing.
    """
    from experiments import registry

    sim = bool(info.get("simulated"))
    out: dict[str, dict] = {}
    tables: dict[str, pa.Table] = {}
    for name, res in results.items():
        if "error" in res:
            out[name] = report(name, None, sim, checks={"error": res["error"]})
            tables.update({t.name: empty(t) for t in tables_of(name)})
            continue
        try:
            analysis = registry.get(name).analysis(AnalysisInputs(res, configs.get(name), trace, markers, info, dict(out)))
        except ContractViolation as exc:  # a bug (analysis and contract disagree): this report fails, loudly
            out[name] = report(name, None, sim, checks={"error": f"the {name} report breaks its contract: " + describe(
                exc, "experiments/analysis and experiments/contracts disagree: a bug to report")})
            tables.update({t.name: empty(t) for t in tables_of(name)})
            continue
        out[name] = analysis.report
        tables.update(analysis.tables)
    return out, tables


def analyse_baseline(inputs: AnalysisInputs) -> Analysis:
    """Idle baseline over the runner's window."""
    from experiments.analysis import baseline as a_baseline

    res, cfg = inputs.result, inputs.config
    fig = a_baseline.analyze_baseline(inputs.trace, res["t_start_ns"], res["t_end_ns"],
                                      floor_threshold_w=cfg.floor_threshold_w, outlier_k=cfg.outlier_k)
    return Analysis(report("baseline", fig, inputs.simulated, checks={"completed": res["completed"]}))


def analyse_instrument_response(inputs: AnalysisInputs) -> Analysis:
    """Sensor response over the runner's load steps."""
    from experiments.analysis import instrument_response as a_ir

    res = inputs.result
    fig = a_ir.analyze_step_response(window(inputs.trace, res["t_start_ns"], res["t_end_ns"]), res["edges"])
    return Analysis(report("instrument_response", fig, inputs.simulated, checks={"steps": len(res["edges"]) // 2}))


def analyse_heat_soak(inputs: AnalysisInputs) -> Analysis:
    """Heat-soak fit and equilibrium over the runner's window."""
    from experiments.analysis import heat_soak as a_soak

    res, cfg = inputs.result, inputs.config
    fig = a_soak.analyze_heat_soak(inputs.trace, res["t_start_ns"], res["t_end_ns"], window_s=cfg.window_s,
                                   window_note=cfg.window_note)
    fig["end_reason"] = res["end_reason"]
    if res.get("trip"):
        fig["thermal_trip"] = res["trip"]
    return Analysis(report("heat_soak", fig, inputs.simulated, checks={"end_reason": res["end_reason"]}))


def analyse_joule_curve(inputs: AnalysisInputs) -> Analysis:
    """Per-event energy (the ``events`` table) and the Joule curve over it."""
    from experiments.analysis import energy as a_energy

    res = inputs.result
    events, idle = _joule_events(res, inputs.trace, inputs.reports.get("baseline"),
                                 inputs.reports.get("instrument_response"), inputs.markers)
    fig = a_energy.joule_curve(events) if len(events) else {}
    fig.update(_j_per_token_headline(fig.get("points") or []))
    fig["idle"] = idle  # the idle reference every net figure above subtracts
    if idle is not None and idle["power_w"] is None:
        fig["quality"], fig["quality_reason"] = "insufficient", idle["reason"]
    if res.get("figures", {}).get("model"):
        fig["model"] = res["figures"]["model"]  # the model measured: its shape, dtype and memory figures
    fig["truth"] = (res.get("figures") or {}).get("truth")  # the compute model's law; None on hardware
    tables = {"events": pa.Table.from_pandas(events, preserve_index=False)} if len(events) else {}
    return Analysis(report("joule_curve", fig, inputs.simulated, checks=res.get("checks", {})), tables)


def analyse_vram_cliff(inputs: AnalysisInputs) -> Analysis:
    """The VRAM cliff reports its own figures (the allocator's answers, not the trace)."""
    res = inputs.result
    return Analysis(report("vram_cliff", res.get("figures", {}), inputs.simulated, checks=res.get("checks", {}),
                           extra={k: res[k] for k in ("probes",) if k in res}))


def analyse_training_coupling(inputs: AnalysisInputs) -> Analysis:
    """Coupling of the training steps to the device's power and temperature."""
    settings = getattr(inputs.config, "analysis", None)
    rep, tables = training_coupling(inputs.result, inputs.trace, inputs.info, inputs.simulated, settings)
    return Analysis(rep, tables)


FALLBACK_SLOWDOWN_C = 83.0  # the thermal guard's fallback: when a device reports no slowdown threshold


def training_coupling(res: dict, trace: pd.DataFrame, info: dict, sim: bool, settings=None) -> tuple[dict, dict]:
    """(report, tables) of the coupling analysis over the whole device trace (RLE's warm-up is
    spent before training), with ``settings`` (a CouplingAnalysisSettings; None: the defaults).

    The report records the settings and RLE's limits it used; the tables
    (training_coupling_steps, training_coupling_rle) are the analysis' own per-step figures
    and 1 s bins. A device without a power limit gets no RLE: its steps keep only the
    runner's columns.
    """
    from experiments.analysis.coupling import analyze_training_coupling
    from experiments.training_coupling.config import CouplingAnalysisSettings
    from experiments.training_coupling.tables import tables as training_tables

    settings = settings if settings is not None else CouplingAnalysisSettings()
    limit = info.get("power_limit_w") or info.get("default_power_limit_w")
    slowdown = info.get("slowdown_temp_c") or FALLBACK_SLOWDOWN_C
    checks = {"end_reason": res.get("end_reason"), "slowdown_temp_c_assumed": not info.get("slowdown_temp_c")}
    if not limit:
        doc = report("training_coupling", {"verdict": "insufficient data",
                                           "verdict_reason": "the device reports no power limit: RLE needs one",
                                           "analysis_settings": settings.model_dump()}, sim, checks=checks,
                     extra={"steps": res["steps"]})
        return doc, training_tables(res["steps"], None, None)
    result = analyze_training_coupling(trace, pd.DataFrame(res["steps"]), float(limit), float(slowdown),
                                       **settings.model_dump(), return_frames=True, per_step=False)
    result.pop("per_step", None)
    frames = result.pop("frames")
    figures = {k: v for k, v in result.items() if k not in ("figures", "quality")} | result.get("figures", {})
    figures |= {"rle_power_limit_w": float(limit), "rle_slowdown_temp_c": float(slowdown),
                "analysis_settings": settings.model_dump()}
    doc = report("training_coupling", figures, sim, checks=checks, extra={"steps": res["steps"]},
                 quality=result.get("quality") or {})
    return doc, training_tables(res["steps"], frames["per_step"], frames["rle_series"])


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


def _joule_events(res: dict, trace: pd.DataFrame, baseline: dict | None, ir: dict | None,
                  markers: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict | None]:
    """The per-event energy table and the idle reference its net energies subtract
    (:func:`experiments.analysis.idle.idle_reference`; None without events)."""
    from experiments.analysis import energy as a_energy
    from experiments.analysis.idle import idle_reference

    evs = res.get("events", [])
    if not evs:
        return pd.DataFrame(), None
    window = res.get("idle_window") or {}
    idle = idle_reference(trace, min(e["t_start_ns"] for e in evs), baseline=(baseline or {}).get("figures"),
                          idle_window=(window["t_start_ns"], window["t_end_ns"]) if window else None,
                          markers=markers)
    update_ms = None
    if ir:
        figures = ir.get("figures") or {}
        field = figures.get("power_instant_w") or figures.get("power_w") or {}
        update_ms = field.get("update_period_ms")
    # All events at once (vectorised over events): one call per event cost ~20 ms each, the
    # whole joule curve of a 1 h run at 100 Hz about 10 s per device (`bench analysis`).
    table = pd.DataFrame([{k: e.get(k) for k in ("event_id", "phase", "batch_size", "input_tokens", "output_tokens",
                                                   "passes", "t_start_ns", "t_end_ns", "tokens_per_second")}
                          | {"counter_start_j": e.get("energy_counter_start_j"),
                             "counter_end_j": e.get("energy_counter_end_j")} for e in evs])
    per = a_energy.events_energy(trace, table, idle["power_w"], update_period_ms=update_ms, p_idle_sem_w=idle["sem_w"])
    per.insert(0, "experiment", "joule_curve")
    per["energy_quality"] = per["quality"]
    return per, idle


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
    (tmp / "baseline.json").write_text(json.dumps((baseline or {}).get("figures") or {}, indent=2, default=str))
    (tmp / "run_metadata.json").write_text(json.dumps(meta, indent=2, default=str))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir
