"""SQL: one read-only SELECT on the warehouse, its result and a CSV download."""

from __future__ import annotations

import streamlit as st

from agents.errors import FleetPhysicsError
from dashboard import data

DEFAULT_SQL = "SELECT * FROM v_fleet_latest"

st.title("SQL")
st.caption("One SELECT on the warehouse through the same guard as `fleetphysics sql`: read-only connection, "
           "no file or network access (no read_csv, COPY, ATTACH, INSTALL), a row limit and a time limit. "
           "The sidebar filters do not apply here.")
with st.expander("Views"):
    st.table({"view": [v for v, _ in data.VIEWS_HELP], "what": [w for _, w in data.VIEWS_HELP]})
sql = st.text_area("Query", value=DEFAULT_SQL, key="q", bind="query-params", height=120,
                   help="Ctrl+Enter runs it. The query is kept in the URL.")
left, right = st.columns(2)
max_rows = left.number_input("Row limit", min_value=1, max_value=1_000_000, value=10_000, step=1_000, key="sql_rows")
timeout_s = right.number_input("Time limit (s)", min_value=1.0, max_value=120.0, value=30.0, step=5.0, key="sql_timeout")
if sql.strip():
    try:
        df = data.user_query(sql, max_rows=int(max_rows), timeout_s=float(timeout_s))
    except FleetPhysicsError as exc:
        st.error(str(exc), icon=":material/block:")
    else:
        note = f"{len(df):,} row(s)"
        if df.attrs.get("truncated"):
            note += f": the first {int(max_rows):,}; raise the row limit to see more"
        st.caption(note)
        if "simulated" in df.columns and df["simulated"].fillna(False).astype(bool).any():
            st.badge("SIMULATED rows in this result (column simulated = true): physics models, not hardware",
                     icon=":material/science:", color="orange")
        st.dataframe(df, width="stretch", hide_index=True, placeholder="NULL")
        st.download_button("CSV", data=df.to_csv(index=False).encode(), file_name="query.csv", mime="text/csv",
                           key="csv-sql", on_click="ignore", icon=":material/download:")
