"""Heat soak: temperature curves overlaid on a common time axis, slope, equilibrium, tau and T_inf."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui


def _ci(df: pd.DataFrame, name: str, unit: str, spec: str) -> list[str]:
    """Each row's ``name`` with its 95 % interval, or "unresolved"."""
    return [charts.interval_text(v, lo, hi, r, spec) for v, lo, hi, r in
            zip(df[f"{name}_{unit}"], df[f"{name}_ci_low_{unit}"], df[f"{name}_ci_high_{unit}"], df[f"{name}_resolved"])]


f = data.current_filters()
st.title("Heat soak")
st.caption("Temperature under sustained load from the start of each device's heat-soak phase. "
           "Solid: measured; dotted: the exponential fit over the measured curve; dashed: predicted, the fit "
           "continued past the data. ★ equilibrium reached; ☆ equilibrium predicted, not reached. Constants with "
           "their 95 % intervals [low, high]; one the data cannot bound says unresolved.")
fleet = data.fleet(f)
summary, series = data.heat_soak(f)
if summary.empty:
    ui.no_rows("heat-soak results")
    st.stop()
summary = data.attach_labels(summary, fleet)
series = data.attach_labels(series, fleet)
ui.simulated_note(summary)
ui.chart(charts.heat_soak_curves(series, summary), series[["label", "run_id", "device_uid", "t_s", "temp_c",
                                                           "power_w", "sm_clock_mhz"]],
         "heat-soak-curves", f"Series binned in SQL to at most {data.SERIES_POINTS} points per device.")
ui.chart(charts.heat_soak_bars(summary), summary.drop(columns=["fingerprint"]), "heat-soak-constants")
predicted = pd.Series([charts.is_predicted(k, r) for k, r in zip(summary["equilibrium_kind"], summary["equilibrium"])],
                      index=summary.index)
ui.table(pd.DataFrame({
    "device": summary["label"], "source": ui.source_column(summary["simulated"]),
    "tau (s) [95 %]": _ci(summary, "tau", "s", ".0f"), "T_inf (°C) [95 %]": _ci(summary, "t_inf", "c", ".1f"),
    "start (°C)": summary["t_start_c"],
    "end (°C)": summary["t_end_c"], "equilibrium": predicted.map({True: "PREDICTED", False: "measured"}),
    "time to equilibrium (s) [95 %]": _ci(summary, "time_to_equilibrium", "s", ".0f"), "fit R²": summary["fit_r2"],
    "throttled": summary["throttled"].map({True: "THROTTLED", False: "no"}), "throttle (s)": summary["throttle_s"],
    "mean power (W)": summary["power_mean_w"], "quality": summary["quality"], "run quality": summary["run_quality"],
}), column_config={
    c: st.column_config.NumberColumn(format="%.1f") for c in ("throttle (s)", "mean power (W)")
})
