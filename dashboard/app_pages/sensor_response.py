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
ui.chart(charts.sensor_rise(figures, fleet["label"]), figures, "sensor-rise",
         "Error bars: 95 % intervals. A timing the steps cannot bound says unresolved (its interval still shown).")
def _ci(name: str, spec: str = ".0f") -> list[str]:
    """Each row's timing ``name`` (ms) with its 95 % interval, or "unresolved"."""
    return [charts.interval_text(v, lo, hi, r, spec) for v, lo, hi, r in
            zip(figures[f"{name}_ms"], figures[f"{name}_ci_low_ms"], figures[f"{name}_ci_high_ms"],
                figures[f"{name}_resolved"])]


ui.table(pd.DataFrame({
    "device": figures["label"], "source": ui.source_column(figures["simulated"]), "field": figures["field"],
    "update period (ms) [95 %]": _ci("update_period", ".4g"), "rise 10–90 % (ms) [95 %]": _ci("rise"),
    "delay (ms) [95 %]": _ci("delay"), "window (ms) [95 %]": _ci("window"),
    "idle (W)": figures["idle_w"], "load (W)": figures["load_w"], "steps": figures["n_steps"],
    "quality": figures["quality"],
}))
