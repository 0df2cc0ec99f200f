"""Drift: one device across its runs and fingerprints."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui

f = data.current_filters()
st.title("Drift")
st.caption("One device's key constants across its runs. A new fingerprint (driver, VBIOS, power limit, ...) "
           "is marked in red. The run filter does not apply here.")
devices = data.drift_devices(f)
if devices.empty:
    ui.no_rows("devices")
    st.stop()
# Raw device ids as options: a bound widget puts its option's text in the URL.
device = st.selectbox("Device (device_uid)", list(devices["device_uid"]), key="device", bind="query-params")
row = devices[devices["device_uid"] == device].iloc[0]
st.caption(f"{row['label']}: {int(row['runs'])} run(s), {int(row['fingerprints'])} fingerprint(s)")
df = data.drift(f, device)
ui.simulated_note(df)
if len(df) < 2:
    st.info(f"{row['label']} has {len(df)} run in the selection: drift needs two. The points below are its "
            "current values; run the suite again on this host to see them move.", icon=":material/info:")
ui.chart(charts.drift(df, row["label"]), df, f"drift-{device}")
ui.table(pd.DataFrame({
    "run": df["run_id"], "started": [ui.when(t) for t in df["started_wall_ns"]],
    "fingerprint": df["fingerprint"].astype(str).str[:12], "new fingerprint": df["fingerprint_changed"],
    "idle (W)": df["idle_robust_w"], "Δ idle (W)": df["idle_delta_w"], "rise instant (ms)": df["power_instant_w_rise_ms"],
    "VRAM cliff b1": df["vram_max_context_batch1"], "J/token b1": df["j_per_token_batch1"],
    "T_inf (°C)": df["t_inf_c"], "equilibrium": df["equilibrium_kind"], "throttled": df["throttled"],
    "run quality": df["run_quality"],
}))
