"""Joule curve: energy per token against batch size, prefill and decode, with quality."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui

f = data.current_filters()
st.title("Joule curve")
st.caption("Energy per token (baseline subtracted) against batch size. Solid: decode; dashed: prefill. "
           "Marker: energy quality (◆ BILLABLE, ● GOOD, ▲ GAPPY, × NO_DATA). Error bars: 95 % interval over events "
           "(Student t); a point of one event has none and is unresolved.")
fleet = data.fleet(f)
points, fits = data.joule(f)
if points.empty:
    ui.no_rows("Joule-curve points")
    st.stop()
points = data.attach_labels(points, fleet)
fits = data.attach_labels(fits, fleet)
ui.simulated_note(points)
ui.chart(charts.joule_curve(points, fleet["label"]), points, "joule-curve")
ui.table(pd.DataFrame({
    "device": points["label"], "source": ui.source_column(points["simulated"]), "phase": points["phase"],
    "batch": points["batch_size"], "J/token": points["j_per_token"],
    "95 % interval": [charts.interval_text(v, lo, hi, r, ".4g") for v, lo, hi, r in
                      zip(points["j_per_token"], points["j_per_token_ci_low"], points["j_per_token_ci_high"],
                          points["j_per_token_resolved"])],
    "SEM": points["j_per_token_sem"],
    "tokens/s": points["tokens_per_s"], "power (W)": points["power_w"], "events": points["n_events"],
    "energy quality": points["energy_quality"], "run quality": points["run_quality"],
}), column_config={
    "J/token": st.column_config.NumberColumn(format="%.4g"), "SEM": st.column_config.NumberColumn(format="%.2g"),
    "tokens/s": st.column_config.NumberColumn(format="%.1f"), "power (W)": st.column_config.NumberColumn(format="%.1f"),
})
if not fits.empty:
    st.subheader("Fits")
    ui.table(fits.assign(params_json=fits["params_json"].map(ui.plain_params))[
        ["label", "phase", "model", "params_json", "r2", "quality"]].rename(
        columns={"label": "device", "params_json": "parameters", "r2": "R²"}))
