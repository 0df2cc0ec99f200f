"""Run explorer: one run's state and hosts, and one run x device's trace with its phases,
events and throttling."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui

f = data.current_filters()
st.title("Run explorer")
runs = data.runs(f)
if runs.empty:
    ui.no_rows("runs")
    st.stop()
run_ids = list(dict.fromkeys(runs["run_id"]))
left, right = st.columns(2)
# Raw ids as options: a bound widget puts its option's text in the URL.
run_id = left.selectbox("Run", run_ids, key="xrun", bind="query-params")
of_run = runs[runs["run_id"] == run_id]
device = right.selectbox("Device (device_uid)", list(of_run["device_uid"]), key="xdev", bind="query-params")
row = of_run[of_run["device_uid"] == device].iloc[0]
ui.simulated_note(of_run[of_run["device_uid"] == device])
st.caption(f"{row['label']} · started {ui.when(row['started_wall_ns'])} · run state {ui.text(row['run_state'])} "
           f"({ui.text(row['end_reason'])}) · run quality {ui.text(row['run_quality'])} · "
           f"{int(row['trace_rows']):,} samples · clock {ui.text(row['clock'])} · source {ui.text(row['source'])}")
hosts = data.frame("""
    SELECT host, state, reason, node_id, hostname, first_seen, last_seen, devices_stored, trace_rows_stored, run_state
    FROM v_run_hosts WHERE run_id = $run ORDER BY state = 'done', host""", {"run": run_id})
if hosts.empty:  # ingested from artifact dirs or imported: no fleet driver summed the run up
    st.caption(f"Run {run_id}: no run state recorded (not written by a fleet driver).")
else:
    st.caption(f"Run {run_id}: {ui.text(hosts['run_state'].iloc[0])} · " + ", ".join(
        f"{n} {state}" for state, n in hosts["state"].value_counts().sort_index().items()))
    with st.expander("Hosts of this run: each one's state and why", expanded=bool((hosts["state"] != "done").any())):
        ui.table(hosts.drop(columns="run_state").assign(node_id=hosts["node_id"].str[:12]))
if pd.isna(row["t_first_ns"]) or not row["trace_rows"]:
    st.info("This run x device has no trace rows.", icon=":material/info:")
    st.stop()
t_first, t_last = int(row["t_first_ns"]), int(row["t_last_ns"])
duration = max((t_last - t_first) / 1e9, 0.001)
window = st.slider("Window (s since the first sample): narrow it to re-read the trace at finer resolution",
                   0.0, float(round(duration + 0.5, 1)), (0.0, float(round(duration + 0.5, 1))), step=0.1,
                   key=f"xwin-{run_id}-{device}")
t0 = t_first + int(window[0] * 1e9)
t1 = min(t_last, t_first + int(window[1] * 1e9))
buckets, bucket_ns = data.trace_buckets(int(row["trace_key"]), t0, t1)
phases, events, throttle = data.run_spans(run_id, device)
title = f"{row['label']}: {len(buckets):,} buckets of {bucket_ns / 1e6:.3g} ms"
ui.chart(charts.run_trace(buckets, t_first, phases, events, throttle, title),
         buckets.assign(t_s=(buckets["t_ns"] - t_first) / 1e9), f"trace-{run_id}-{device}",
         "Downsampled in SQL: mean line with the min–max band of each bucket, so short spikes stay visible. "
         "Drag to zoom, double-click to reset. Shaded: phases; outlined: events; red: throttling.")
c1, c2 = st.columns(2)
with c1:
    st.subheader("Phases")
    ui.table(phases.assign(start_s=(phases["t_start_ns"] - t_first) / 1e9,
                               duration_s=(phases["t_end_ns"] - phases["t_start_ns"]) / 1e9)[["phase", "start_s", "duration_s"]])
with c2:
    st.subheader(f"Events ({len(events)})")
    ui.table(events.assign(start_s=(events["t_start_ns"] - t_first) / 1e9)[
        ["event_id", "phase", "batch_size", "start_s", "energy_net_j", "energy_quality", "tokens_per_second"]])
if not throttle.empty:
    st.caption(f"Throttled {len(throttle)} time(s), {throttle['duration_s'].sum():.1f} s in all"
               + (" (thermal)" if throttle["thermal"].any() else " (power or other reasons)") + ".")
