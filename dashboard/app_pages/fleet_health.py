"""Fleet health: which devices to trust, which stand out from their peers, and why."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, ui
from dashboard.verdict_charts import figure_strips
from warehouse.verdict import MIN_PEERS, NOT_READY, READY, Z_OUTLIER, judge
from warehouse.verdict_data import load_figures

WORDS = {NOT_READY: "NOT READY", "caution": "caution", READY: "ready"}


def _largest_z(d: dict) -> str:
    zs = [abs(o["robust_z"]) for o in d["outliers"]] + [abs(x["robust_z"]) for x in d["drift"]]
    return f"{max(zs):.1f}" if zs else "—"


f = data.current_filters()
st.title("Fleet health")
st.caption(f"Per device, the verdict ready · caution · not ready from the written rules (README, \"Fleet "
           f"verdict\"): its own checks, its robust z against the other devices of its board and configuration "
           f"(at least {MIN_PEERS} peers; |z| ≥ {Z_OUTLIER:g} stands out) and its drift from its own earlier runs. "
           "Same judgement as `fleetphysics verdict`.")
where, params = f.where(True)
selected = data.frame(f"SELECT run_id, device_uid FROM v_run_constants {where} "
                      "ORDER BY started_wall_ns DESC NULLS LAST, run_id DESC", params)
if selected.empty:
    ui.no_rows("devices")
    st.stop()
run_id = str(selected["run_id"].iloc[0])  # the latest run within the filters
rows, _ = load_figures(lambda sql, p: data.frame(sql, p), run_id)
verdict = judge(rows, run_id)
shown = set(selected.loc[selected["run_id"] == run_id, "device_uid"])
run_rows = rows[(rows["run_id"] == run_id) & rows["device_uid"].isin(shown)]
devices = [d for d in verdict["devices"] if d["device_uid"] in shown]
labelled = data.add_labels(run_rows[["device_uid", "host", "gpu_name", "simulated"]])
labels = dict(zip(labelled["device_uid"], labelled["label"]))
st.subheader(f"Run {run_id}" + ("" if f.runs else " (the latest; choose another under Run in the sidebar)"))
ui.simulated_note(run_rows)
counts = {k: sum(d["verdict"] == k for d in devices) for k in (NOT_READY, "caution", READY)}
cols = st.columns(3)
for col, (key, n) in zip(cols, counts.items()):
    col.metric(WORDS[key], f"{n} of {len(devices)}")

table = pd.DataFrame([{
    "device (host · GPU)": labels.get(d["device_uid"], d["device_uid"]),
    "rank": i + 1,
    "verdict": WORDS[d["verdict"]],
    "largest |z|": _largest_z(d),
    "peers": d["n_peers"],
    "reasons": "; ".join(d["reasons"]) if d["reasons"] else "no rule fired",
} for i, d in enumerate(devices)])
ui.table(table, column_config={
    "rank": st.column_config.NumberColumn(width="small"),
    "largest |z|": st.column_config.TextColumn(width="small"),
    "peers": st.column_config.NumberColumn(width="small"),
    "reasons": st.column_config.TextColumn(width="large"),
})
suspects = [d for d in devices if d["verdict"] != READY]
for d in suspects[:10]:
    with st.expander(f"{WORDS[d['verdict']]} · {labels.get(d['device_uid'], d['device_uid'])}",
                     expanded=d is suspects[0]):
        st.markdown("\n".join(f"- {r}" for r in d["reasons"]))
ui.chart(figure_strips(run_rows, devices, labels),
         run_rows.assign(label=run_rows["device_uid"].map(labels)).drop(columns=["throttle", "fake_idle_reasons"],
                                                                           errors="ignore"),
         "fleet-health-strips",
         "Each figure of the run as a strip: one dot per device in its colour with a whisker of ± 1.96 x the SE "
         "the verdict judges it by (sensor timings: at least the timing resolution; each figure's own 95 % "
         "interval is on its page), the vertical bar its group's median, outliers ringed in red with their host "
         "and robust z.")
