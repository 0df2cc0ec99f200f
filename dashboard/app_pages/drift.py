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
ui.chart(charts.drift(df, row["label"]), df, f"drift-{device}", "Error bars: 95 % intervals (VRAM: the search's "
         "bracket).")


def _ci(name: str, unit: str, spec: str) -> list[str]:
    """Each run's ``name`` with its 95 % interval, or "unresolved"."""
    return [charts.interval_text(v, lo, hi, r, spec) for v, lo, hi, r in
            zip(df[f"{name}{unit}"], df[f"{name}_ci_low{unit}"], df[f"{name}_ci_high{unit}"], df[f"{name}_resolved"])]


ui.table(pd.DataFrame({
    "run": df["run_id"], "started": [ui.when(t) for t in df["started_wall_ns"]],
    "fingerprint": df["fingerprint"].astype(str).str[:12], "new fingerprint": df["fingerprint_changed"],
    "idle (W) [95 %]": _ci("idle_robust", "_w", ".2f"), "Δ idle (W)": df["idle_delta_w"],
    "rise instant (ms) [95 %]": _ci("power_instant_w_rise", "_ms", ".0f"),
    "VRAM cliff b1 [bracket]": _ci("vram_max_context_batch1", "", ",.0f"),
    "J/token b1 [95 %]": _ci("j_per_token_batch1", "", ".4g"),
    "T_inf (°C) [95 %]": _ci("t_inf", "_c", ".1f"), "equilibrium": df["equilibrium_kind"],
    "time to equilibrium (s) [95 %]": _ci("time_to_equilibrium", "_s", ".0f"), "throttled": df["throttled"],
    "run quality": df["run_quality"],
}))
