"""SQL: one read-only SELECT on the warehouse, its result and a CSV download.

A query runs only when the viewer presses Run: a query that arrives in a link (``?q=``)
waits for that click, so opening a link never starts a query on the shared warehouse. The
page's own default query, which is cheap, runs on load.
"""

from __future__ import annotations

import streamlit as st

from agents.errors import FleetPhysicsError
from dashboard import data, ui

DEFAULT_SQL = "SELECT * FROM v_fleet_latest"
RAN = "sql_ran"  # session_state: the query text the viewer last pressed Run for

st.title("SQL")
st.caption("One SELECT on the warehouse through the same guard as `fleetphysics sql`: read-only connection, "
           "no file or network access (no read_csv, COPY, ATTACH, INSTALL), a row, size, memory and time limit. "
           "The sidebar filters do not apply here.")
with st.expander("Views"):
    st.table({"view": [v for v, _ in data.VIEWS_HELP], "what": [w for _, w in data.VIEWS_HELP]})
sql = st.text_area("Query", value=DEFAULT_SQL, key="q", bind="query-params", height=120,
                   help="Press Run to run it. The query is kept in the URL; a query from a link waits for Run.")
left, middle, right = st.columns([2, 2, 1], vertical_alignment="bottom")
max_rows = left.number_input("Row limit", min_value=1, max_value=1_000_000, value=10_000, step=1_000, key="sql_rows")
timeout_s = middle.number_input("Time limit (s)", min_value=1.0, max_value=data.MAX_USER_TIMEOUT_S,
                                value=min(30.0, data.MAX_USER_TIMEOUT_S), step=5.0, key="sql_timeout",
                                help="At most half of an ingest's wait for the file, so a query never makes one fail.")
if right.button("Run", key="sql_run", type="primary", icon=":material/play_arrow:"):
    st.session_state[RAN] = sql
if not sql.strip():
    st.stop()
if sql != st.session_state.get(RAN) and sql.strip() != DEFAULT_SQL:
    st.info("Press Run to run this query.", icon=":material/play_arrow:")
    st.stop()
try:
    df = data.user_query(sql, max_rows=int(max_rows), timeout_s=float(timeout_s))
except FleetPhysicsError as exc:
    st.error(data.public_text(str(exc)), icon=":material/block:")
else:
    note = f"{len(df):,} row(s)"
    if df.attrs.get("truncated"):
        note += f": the first {int(max_rows):,}; raise the row limit to see more"
    st.caption(note)
    if "simulated" in df.columns and df["simulated"].fillna(False).astype(bool).any():
        st.badge("SIMULATED rows in this result (column simulated = true): physics models, not hardware",
                 icon=":material/science:", color="orange")
    st.dataframe(df, width="stretch", hide_index=True, placeholder="NULL")
    st.download_button("CSV", data=ui.csv_bytes(df), file_name="query.csv",
                       mime="text/csv", key="csv-sql", on_click="ignore", icon=":material/download:",
                       help="Text cells that a spreadsheet would run as a formula (= + - @) start with '.")
