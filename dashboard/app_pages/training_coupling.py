"""Training coupling: workload signatures of the training experiment across hosts, whether
grad-norm spikes couple with power, temperature or RLE collapses, and one device's steps."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui

f = data.current_filters()
st.title("Training coupling")
st.caption("A small fine-tune logged per step on the poller's clock. Signature: 5th–95th percentiles of power, "
           "temperature and utilization while training. Verdict: lagged rank correlation of grad_norm with per-step "
           "power, temperature slope and RLE collapses, against a block-bootstrap null (coupled when p ≤ alpha). "
           "Each device's latest run with this experiment.")
summary = data.training_coupling(f)
if summary.empty:
    hint = " Clear some filters in the sidebar, or run it:" if f.active else " It is not in the default suite; run it:"
    st.info(f"No training-coupling results in the selection.{hint}", icon=":material/model_training:")
    st.code("fleetphysics suite --device sim:rtx4080-laptop --experiments training_coupling --preset smoke --out runs\n"
            f"fleetphysics ingest runs/ --warehouse {data.current_path()}\n"
            f"fleetphysics run --experiments training_coupling --warehouse {data.current_path()}   # every host",
            language="bash")
    st.stop()
ui.simulated_note(summary)
ui.chart(charts.training_signatures(summary), summary.drop(columns=["fingerprint"]), "training-signatures",
         "Hatched: simulated device. A collapse rate of n/a: no gated time (load with the die heating) after "
         "RLE's 60 s warm-up.")
ui.table(pd.DataFrame({
    "device": summary["label"], "source": ui.source_column(summary["simulated"]),
    "power p5–p95 (W)": [charts.range_text(a, b) for a, b in zip(summary["power_p05_w"], summary["power_p95_w"])],
    "temperature p5–p95 (°C)": [charts.range_text(a, b) for a, b in zip(summary["temp_p05_c"], summary["temp_p95_c"])],
    "utilization p5–p95 (%)": [charts.range_text(a, b) for a, b in zip(summary["util_p05_pct"], summary["util_p95_pct"])],
    "collapses / gated h": summary["collapse_rate_per_gated_h"], "collapses": summary["n_collapses"],
    "verdict": summary["verdict"], "p-value": summary["p_value"], "best lag (steps)": summary["best_lag"],
    "correlation (rho)": summary["correlation"], "against": summary["target"],
    "aligned fraction": summary["aligned_fraction"], "steps": summary["steps"], "grad spikes": summary["n_spikes"],
    "quality": summary["quality"], "run quality": summary["run_quality"], "run": summary["run_id"],
}), column_config={
    "collapses / gated h": st.column_config.NumberColumn(format="%.3g"),
    "p-value": st.column_config.NumberColumn(format="%.3g"),
    "correlation (rho)": st.column_config.NumberColumn(format="%+.2f"),
    "aligned fraction": st.column_config.NumberColumn(format="%.3f"),
})

st.subheader("One device, step by step")
# A device with two fingerprints has two rows: its key names the fingerprint too.
dup = summary["device_uid"].duplicated(keep=False)
keys = summary["device_uid"].where(~dup, summary["device_uid"] + " @ " + summary["fingerprint"].astype(str).str[:12])
choice = st.selectbox("Device (device_uid)", list(keys), key="tc_device", bind="query-params")
row = summary[keys == choice].iloc[0]
st.caption(f"{row['label']}, run {row['run_id']}: {row['verdict'] or 'no verdict'}. {row['verdict_reason'] or ''}")
steps = data.training_steps(row["run_id"], row["device_uid"])
ui.chart(charts.training_steps(steps, row["label"]), steps, f"training-steps-{row['device_uid']}",
         "Per-step figures repeat the report's analysis over the stored trace.")
series = data.rle_timeline(row["run_id"], row["device_uid"])
window = (int(steps["t_start_ns"].min()), int(steps["t_end_ns"].max())) if not steps.empty else (None, None)
ui.chart(charts.rle_timeline(series, row["label"], *window), series, f"rle-{row['device_uid']}",
         f"Binned in SQL to at most {data.SERIES_POINTS} points.")
