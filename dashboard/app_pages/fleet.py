"""Fleet: one row per device and fingerprint, its latest run within the filters."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui


def _num(value, spec: str, unit: str = "") -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:{spec}}{unit}"


def _response(row, fld: str) -> str:
    period = getattr(row, f"{fld}_update_period_ms")
    rise = getattr(row, f"{fld}_rise_ms")
    quality = getattr(row, f"{fld}_response_quality")
    if pd.isna(period) and pd.isna(rise):
        return ""
    return f"{_num(period, '.0f', ' ms')} / rise {_num(rise, '.0f', ' ms')} · {quality or 'n/a'}"


def _equilibrium(row) -> str:
    if pd.isna(row.time_to_equilibrium_s):
        return f"n/a · {row.heat_soak_quality or 'no heat soak'}"
    predicted = charts.is_predicted(row.equilibrium_kind, row.equilibrium)
    temp = row.t_inf_c if pd.notna(row.t_inf_c) else row.heat_t_end_c
    kind = "PREDICTED" if predicted else "measured"
    return f"{row.time_to_equilibrium_s:.0f} s {kind} · {_num(temp, '.1f', ' °C')} · {row.heat_soak_quality or 'n/a'}"


def fleet_table(df: pd.DataFrame) -> pd.DataFrame:
    """The Fleet table: one row per device and fingerprint, each figure with its quality."""
    rows = []
    for r in df.itertuples():
        rows.append({
            "device (host · GPU)": r.label,
            "source": "SIMULATED" if r.simulated else "real",
            "fingerprint": str(r.fingerprint)[:8],
            "idle baseline (robust mean ± SEM_eff)": (f"{r.idle_robust_w:.2f} ± {r.idle_sem_w:.2g} W · {r.idle_quality or 'n/a'}"
                                                      if pd.notna(r.idle_robust_w) else "n/a"),
            "floor fraction": r.floor_fraction,
            "fake idle": "n/a" if pd.isna(r.fake_idle) else ("FAKE IDLE" if r.fake_idle else "no"),
            "power_w: update / rise": _response(r, "power_w"),
            "power_instant_w: update / rise": _response(r, "power_instant_w"),
            "power_avg_1s_w: update / rise": _response(r, "power_avg_1s_w"),
            "VRAM cliff @ batch 1": (f"{int(r.vram_max_context_batch1):,} tok · {r.vram_cliff_quality or 'n/a'}"
                                     if pd.notna(r.vram_max_context_batch1) else "n/a"),
            "VRAM cliff @ largest batch": (f"{int(r.vram_max_context_max_batch):,} tok @ b{int(r.vram_max_batch_size)}"
                                           if pd.notna(r.vram_max_context_max_batch) else "n/a"),
            "J/token @ batch 1": (f"{r.j_per_token_batch1:.4g} J · {r.j_per_token_batch1_quality or 'n/a'}"
                                  if pd.notna(r.j_per_token_batch1) else "n/a"),
            "J/token @ largest batch": (f"{r.j_per_token_max_batch:.4g} J @ b{int(r.max_batch_size)} · "
                                        f"{r.j_per_token_max_batch_quality or 'n/a'}" if pd.notna(r.j_per_token_max_batch) else "n/a"),
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
           "quality; predicted equilibria are marked PREDICTED.")
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
                                        "idle_sem_w", "idle_quality", "time_to_equilibrium_s", "equilibrium_kind",
                                        "vram_max_context_batch1", "vram_cliff_quality", "j_per_token_batch1",
                                        "j_per_token_batch1_quality"]],
         "fleet-overview", "Hatched: simulated; x-hatched and lighter: equilibrium predicted, not reached.")

st.subheader("Every figure with its quality")
table = fleet_table(df)
ui.table(table, column_config={
    "floor fraction": st.column_config.NumberColumn(format="percent"),
})
st.download_button("CSV of every figure and flag", data=ui.csv_bytes(df.drop(columns=["label"])),
                   file_name="fleet.csv", mime="text/csv", key="csv-fleet-table", on_click="ignore",
                   icon=":material/download:")
