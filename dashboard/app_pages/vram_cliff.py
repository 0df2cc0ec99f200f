"""VRAM cliff: the largest context that fits against batch size, per device."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui

f = data.current_filters()
st.title("VRAM cliff")
st.caption("Each point is the largest context that fit before the real out-of-memory error at that batch size.")
fleet = data.fleet(f)
summary, points = data.vram_cliff(f)
if summary.empty:
    ui.no_rows("VRAM cliff results")
    st.stop()
summary = data.attach_labels(summary, fleet)
points = data.attach_labels(points, fleet)
ui.simulated_note(summary)
ui.chart(charts.vram_cliff(points, summary), points.drop(columns=["simulated"]), "vram-cliff",
         "Log-log axes; hover for the first failing context, its cause and the peak allocation.")
ui.chart(charts.vram_capacity(summary), summary, "vram-capacity")
ui.table(pd.DataFrame({
    "device": summary["label"], "source": ui.source_column(summary["simulated"]),
    "capacity (MiB)": summary["vram_capacity_mib"], "max context @ b1": summary["vram_max_context_batch1"],
    "peak @ b1 (MiB)": summary["vram_cliff_peak_mib_batch1"], "cause @ b1": summary["vram_cliff_cause_batch1"],
    "largest batch": summary["vram_max_batch_size"], "max context @ largest batch": summary["vram_max_context_max_batch"],
    "fragmentation": summary["vram_fragmentation"], "peer median @ b1": summary["peer_median_max_context_batch1"],
    "quality": summary["vram_cliff_quality"], "run quality": summary["run_quality"],
}), column_config={
    "fragmentation": st.column_config.NumberColumn(format="percent"),
    "capacity (MiB)": st.column_config.NumberColumn(format="%,.0f"),
    "peak @ b1 (MiB)": st.column_config.NumberColumn(format="%,.0f"),
})
