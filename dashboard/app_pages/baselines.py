"""Baselines: idle power distributions side by side, robust means with their 95 % intervals."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui

f = data.current_filters()
st.title("Baselines")
st.caption("Idle power of each device in its baseline window. The robust mean is the baseline that "
           "energy figures subtract; SEM_eff is its standard error corrected for autocorrelation, and its 95 % "
           "interval is the mean ± 1.96 SEM_eff (error bars).")
fleet = data.fleet(f)
fleet = fleet[fleet["idle_robust_w"].notna()]
if fleet.empty:
    ui.no_rows("idle baselines")
    st.stop()
ui.simulated_note(fleet)
dist = data.baseline_distribution(f)
ui.chart(charts.baseline_distribution(dist, fleet),
         fleet[["label", "run_id", "device_uid", "idle_field", "idle_robust_w", "idle_sem_w", "idle_robust_ci_low_w",
                "idle_robust_ci_high_w", "idle_robust_resolved", "floor_fraction", "fake_idle", "idle_quality"]].merge(dist, on=["run_id", "device_uid"], how="left"),
         "baselines-distribution",
         "Boxes from SQL quantiles of the trace in the baseline window (no raw rows leave the warehouse).")
if (fleet["idle_peers"].fillna(0) > 1).any():
    ui.chart(charts.baseline_delta(fleet), fleet[["label", "run_id", "device_uid", "idle_robust_w", "idle_sem_w",
                                                   "idle_robust_ci_low_w", "idle_robust_ci_high_w", "idle_peers",
                                                   "peer_median_idle_w", "idle_delta_w", "idle_delta_sem",
                                                   "idle_overlaps_peer_median"]],
             "baselines-vs-peers")
else:
    st.caption("Peer comparison (v_baseline_compare): every device here is the only one of its comparability "
               "key, so there is no peer median to compare with yet.")

table = pd.DataFrame({
    "device": fleet["label"], "source": ui.source_column(fleet["simulated"]), "field": fleet["idle_field"],
    "robust mean (W)": fleet["idle_robust_w"],
    "95 % interval (W)": [charts.interval_text(v, lo, hi, r, ".3f") for v, lo, hi, r in
                          zip(fleet["idle_robust_w"], fleet["idle_robust_ci_low_w"], fleet["idle_robust_ci_high_w"],
                              fleet["idle_robust_resolved"])],
    "SEM_eff (W)": fleet["idle_sem_w"],
    "floor fraction": fleet["floor_fraction"], "fake idle": fleet["fake_idle"].map({True: "FAKE IDLE", False: "no"}),
    "quality": fleet["idle_quality"], "peer median (W)": fleet["peer_median_idle_w"],
    "delta (SEM)": fleet["idle_delta_sem"],
    "interval holds the peer median": fleet["idle_overlaps_peer_median"].map({True: "yes", False: "NO"}),
    "run quality": fleet["run_quality"],
})
ui.table(table, column_config={
    "robust mean (W)": st.column_config.NumberColumn(format="%.3f"),
    "SEM_eff (W)": st.column_config.NumberColumn(format="%.3g"),
    "floor fraction": st.column_config.NumberColumn(format="percent"),
    "peer median (W)": st.column_config.NumberColumn(format="%.3f"),
    "delta (SEM)": st.column_config.NumberColumn(format="%+.1f"),
})
if fleet["fake_idle"].fillna(False).any():
    st.warning("FAKE IDLE: the sensor reports a floor value while the board is not idle; those baselines "
               "understate idle power.", icon=":material/warning:")
