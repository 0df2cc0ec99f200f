"""The fleetphysics dashboard: `fleetphysics dashboard` runs
``streamlit run dashboard/app.py -- --warehouse PATH``.

This entrypoint is the frame around every page (st.navigation): it resolves the
warehouse, shows the first-run screen when it is missing or empty, draws the sidebar
filters (kept in the URL) and runs the chosen page inside one read-only request.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

try:
    import dashboard  # noqa: F401 - installed with the project
except ImportError:  # a checkout run without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.errors import FleetPhysicsError  # noqa: E402
from dashboard import charts, data, ui  # noqa: E402


def main() -> None:
    """Render the frame and the current page."""
    st.set_page_config(page_title="fleetphysics", page_icon=":material/bolt:", layout="wide")
    pages = [st.Page(f"{ui.PAGES_DIR}/{file}", title=title, icon=icon, url_path=url, default=i == 0)
             for i, (file, title, icon, url) in enumerate(ui.PAGES)]
    page = st.navigation(pages)
    path = data.resolve_warehouse()
    with data.reading(path):
        status = data.warehouse_status(path)
        if status.kind != "ok":
            ui.first_run(status)
            return
        try:
            st.session_state["_filters"] = ui.sidebar_filters()
            charts.set_device_order(data.device_labels())  # one color per device on every page
            with st.sidebar:
                st.caption(f"Warehouse `{Path(status.path).name}`: {status.runs:,} run(s), {status.devices:,} device(s), "
                           f"{status.trace_rows:,} trace rows. Read-only; results cached {data.TTL_S} s.")
            page.run()
        except FleetPhysicsError as exc:
            # Expected failures (a lock held too long, a query past its time limit) as one line.
            st.error(data.public_text(str(exc), path), icon=":material/error:")


main()
