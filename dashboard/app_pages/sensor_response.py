"""Sensor response: how fast each power field follows a load step, devices overlaid."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui

f = data.current_filters()
st.title("Sensor response")
st.caption(f"Each power field's reading after a load step, averaged over up to {data.MAX_STEP_EDGES} rising edges "
           "of the instrument_response phase and scaled to 0 before the edge and 1 on the plateau. "
           "Solid: power_w; dashed: power_instant_w; dotted: power_avg_1s_w.")
fleet = data.fleet(f)
figures, raw = data.sensor_response(f)
if figures.empty and raw.empty:
    ui.no_rows("sensor-response results")
    st.stop()
figures = data.attach_labels(figures, fleet)
steps = data.attach_labels(data.normalize_steps(raw), fleet) if not raw.empty else raw.assign(label=[])
ui.simulated_note(figures if not figures.empty else steps)
ui.chart(charts.sensor_steps(steps, fleet["label"]), steps, "sensor-steps",
         "Trace rows bucketed in SQL around each edge (one bucket per poller period, at least 10 ms).")
ui.chart(charts.sensor_rise(figures, fleet["label"]), figures, "sensor-rise")
def _interval(low: pd.Series, high: pd.Series) -> pd.Series:
    """'low – high' of a 95 % interval, blank where the result has none."""
    return pd.Series([f"{a:.0f} – {b:.0f}" if pd.notna(a) and pd.notna(b) else "" for a, b in zip(low, high)],
                     index=low.index)


ui.table(pd.DataFrame({
    "device": figures["label"], "source": ui.source_column(figures["simulated"]), "field": figures["field"],
    "update period (ms)": figures["update_period_ms"], "rise 10–90 % (ms)": figures["rise_ms"],
    "rise 95 % (ms)": _interval(figures["rise_ci_low_ms"], figures["rise_ci_high_ms"]),
    "delay (ms)": figures["delay_ms"], "window (ms)": figures["window_ms"],
    "window 95 % (ms)": _interval(figures["window_ci_low_ms"], figures["window_ci_high_ms"]),
    "window resolved": figures["window_resolved"].map({True: "yes", False: "NOT RESOLVED"}),
    "idle (W)": figures["idle_w"], "load (W)": figures["load_w"], "steps": figures["n_steps"],
    "quality": figures["quality"],
}))
