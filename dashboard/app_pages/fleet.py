"""Fleet: one row per device and fingerprint, its latest run within the filters."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui


def _num(value, spec: str, unit: str = "") -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:{spec}}{unit}"


def _ci(row, name: str, unit: str = "", spec: str = ".3g", shown_unit: str = "") -> str:
    """v_run_constants' figure ``name`` (unit suffix ``unit``) with its 95 % interval."""
    suffix = f"_{unit}" if unit else ""
    return charts.interval_text(getattr(row, f"{name}{suffix}"), getattr(row, f"{name}_ci_low{suffix}"),
                                getattr(row, f"{name}_ci_high{suffix}"), getattr(row, f"{name}_resolved"), spec,
                                shown_unit)


def _response(row, fld: str) -> str:
    period = getattr(row, f"{fld}_update_period_ms")
    rise = getattr(row, f"{fld}_rise_ms")
    quality = getattr(row, f"{fld}_response_quality")
    if pd.isna(period) and pd.isna(rise):
        return ""
    return (f"{_ci(row, f'{fld}_update_period', 'ms', '.4g', 'ms')} / rise {_ci(row, f'{fld}_rise', 'ms', '.0f', 'ms')}"
            f" · {quality or 'n/a'}")


def _equilibrium(row) -> str:
    if pd.isna(row.time_to_equilibrium_s):
        flag = "unresolved" if charts.is_unresolved(row.time_to_equilibrium_resolved) else "n/a"
        return f"{flag} · {row.heat_soak_quality or 'no heat soak'}"
    predicted = charts.is_predicted(row.equilibrium_kind, row.equilibrium)
    temp = _ci(row, "t_inf", "c", ".1f", "°C") if pd.notna(row.t_inf_c) else _num(row.heat_t_end_c, ".1f", " °C")
    kind = "PREDICTED" if predicted else "measured"
    return f"{_ci(row, 'time_to_equilibrium', 's', '.0f', 's')} {kind} · {temp} · {row.heat_soak_quality or 'n/a'}"


def fleet_table(df: pd.DataFrame) -> pd.DataFrame:
    """The Fleet table: one row per device and fingerprint, each figure with its quality."""
    rows = []
    for r in df.itertuples():
        rows.append({
            "device (host · GPU)": r.label,
            "source": "SIMULATED" if r.simulated else "real",
            "fingerprint": str(r.fingerprint)[:8],
            "idle baseline (robust mean [95 %])": (f"{_ci(r, 'idle_robust', 'w', '.2f', 'W')} · {r.idle_quality or 'n/a'}"
                                                   if pd.notna(r.idle_robust_w) else "n/a"),
            "floor fraction": r.floor_fraction,
            "fake idle": "n/a" if pd.isna(r.fake_idle) else ("FAKE IDLE" if r.fake_idle else "no"),
            "power_w: update / rise": _response(r, "power_w"),
            "power_instant_w: update / rise": _response(r, "power_instant_w"),
            "power_avg_1s_w: update / rise": _response(r, "power_avg_1s_w"),
            "VRAM cliff @ batch 1": (f"{_ci(r, 'vram_max_context_batch1', spec=',.0f', shown_unit='tok')} · "
                                     f"{r.vram_cliff_quality or 'n/a'}" if pd.notna(r.vram_max_context_batch1) else "n/a"),
            "VRAM cliff @ largest batch": (f"{_ci(r, 'vram_max_context_max_batch', spec=',.0f', shown_unit='tok')} @ "
                                           f"b{int(r.vram_max_batch_size)}"
                                           if pd.notna(r.vram_max_context_max_batch) else "n/a"),
            "J/token @ batch 1": (f"{_ci(r, 'j_per_token_batch1', spec='.4g', shown_unit='J')} · "
                                  f"{r.j_per_token_batch1_quality or 'n/a'}" if pd.notna(r.j_per_token_batch1) else "n/a"),
            "J/token @ largest batch": (f"{_ci(r, 'j_per_token_max_batch', spec='.4g', shown_unit='J')} @ "
                                        f"b{int(r.max_batch_size)} · {r.j_per_token_max_batch_quality or 'n/a'}"
                                        if pd.notna(r.j_per_token_max_batch) else "n/a"),
            "equilibrium (time · temperature)": _equilibrium(r),
            "throttled": ("THROTTLED" + (" (thermal)" if r.thermal_throttled else "") + f" {r.throttle_s:.0f} s"
                          if r.throttled else "no"),
            "run quality": r.run_quality,
            "run": r.run_id,
            "run state": f"{r.run_state} ({r.end_reason})",
        })
    table = pd.DataFrame(rows)
    empty_cols = [c for c in table.columns if c.endswith("update / rise") and not table[c].astype(bool).any()]
    return table.drop(columns=empty_cols)


f = data.current_filters()
st.title("Fleet")
st.caption("One row per device and fingerprint: its latest run within the filters. Every figure carries its "
           "quality and its 95 % interval [low, high] (error bars in the chart); a figure the data cannot bound "
           "says unresolved; predicted equilibria are marked PREDICTED.")
df = data.fleet(f)
if df.empty:
    ui.no_rows("devices")
    st.stop()
ui.simulated_note(df)
c = st.columns(5)
c[0].metric("devices", df["device_uid"].nunique())
c[1].metric("hosts", df["host"].nunique())
c[2].metric("GPU models", df["gpu_name"].nunique())
c[3].metric("simulated devices", int(df.loc[df["simulated"].fillna(False).astype(bool), "device_uid"].nunique()))
c[4].metric("strict run quality", f"{int((df['run_quality'] == 'strict').sum())} / {len(df)} rows")

st.subheader("Side by side")
ui.chart(charts.fleet_overview(df), df[["label", "run_id", "device_uid", "fingerprint", "simulated", "idle_robust_w",
                                        "idle_sem_w", "idle_robust_ci_low_w", "idle_robust_ci_high_w",
                                        "idle_robust_resolved", "idle_quality", "time_to_equilibrium_s",
                                        "time_to_equilibrium_ci_low_s", "time_to_equilibrium_ci_high_s",
                                        "time_to_equilibrium_resolved", "equilibrium_kind",
                                        "vram_max_context_batch1", "vram_max_context_batch1_ci_low",
                                        "vram_max_context_batch1_ci_high", "vram_max_context_batch1_resolved",
                                        "vram_cliff_quality", "j_per_token_batch1", "j_per_token_batch1_ci_low",
                                        "j_per_token_batch1_ci_high", "j_per_token_batch1_resolved",
                                        "j_per_token_batch1_quality"]],
         "fleet-overview", "Error bars: 95 % intervals (VRAM: the search's bracket). Hatched: simulated; "
         "x-hatched and lighter: equilibrium predicted, not reached.")

st.subheader("Every figure with its quality")
table = fleet_table(df)
ui.table(table, column_config={
    "floor fraction": st.column_config.NumberColumn(format="percent"),
})
st.download_button("CSV of every figure and flag", data=ui.csv_bytes(df.drop(columns=["label"])),
                   file_name="fleet.csv", mime="text/csv", key="csv-fleet-table", on_click="ignore",
                   icon=":material/download:")
