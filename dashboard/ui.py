"""Streamlit pieces shared by the pages: the sidebar filters, chart export, badges, the
first-run screen."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from experiments.contracts import catalog
from warehouse.result_text import csv_safe_frame

from . import data

# The pages st.navigation shows, in order (files under dashboard/app_pages/): the fleet's,
# then one per experiment as the catalog lists them, then the cross-cutting ones.
PAGES_DIR = "app_pages"
PAGES = (
    # (file, title, icon, url path)
    ("fleet_health.py", "Fleet health", ":material/health_and_safety:", "fleet-health"),
    ("fleet.py", "Fleet", ":material/dns:", "fleet"),
    *((e.page.file, e.page_title, e.page.icon, e.page.url_path) for e in catalog.pages()),
    ("drift.py", "Drift", ":material/timeline:", "drift"),
    ("run_explorer.py", "Run explorer", ":material/query_stats:", "run-explorer"),
    ("sql.py", "SQL", ":material/database:", "sql"),
)

DATE_MIN = dt.date(2000, 1, 1)
MISSING = "—"  # what a table shows for a missing value (Streamlit's default is "None")
FP_PREFIX = 12
PNG_NOTE = ("PNG: the camera icon in the chart's toolbar (Plotly's own export in the browser, "
            "no kaleido needed).")


def _plotly_config(name: str) -> dict:
    return {"displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": name, "scale": 2}}


def csv_bytes(df: pd.DataFrame) -> bytes:
    """``df`` as the bytes of a CSV download; every download goes through here, so no text
    cell can start a spreadsheet formula (warehouse.result_text.csv_safe_frame)."""
    return csv_safe_frame(df).to_csv(index=False).encode()


def chart(fig: go.Figure, table: pd.DataFrame, name: str, caption: str | None = None) -> None:
    """A Plotly chart, a CSV download of the data it draws, and how to get its PNG."""
    st.plotly_chart(fig, width="stretch", config=_plotly_config(name), key=f"chart-{name}")
    left, right = st.columns([1, 5], vertical_alignment="center")
    left.download_button("CSV", data=csv_bytes(table), file_name=f"{name}.csv", mime="text/csv",
                         key=f"csv-{name}", on_click="ignore", icon=":material/download:",
                         help=f"{len(table):,} rows: the data of this chart")
    right.caption(" ".join(x for x in (caption, PNG_NOTE) if x))


def table(df: pd.DataFrame, column_config: dict | None = None) -> None:
    """A page's table: as wide as the page (wider content scrolls inside it), its first
    column (what the rows are: device, host, run) pinned so it stays in view while
    scrolling, and missing values shown as MISSING."""
    config = dict(column_config or {})
    if len(df.columns) and df.columns[0] not in config:
        config[df.columns[0]] = st.column_config.Column(pinned=True)
    st.dataframe(df, hide_index=True, width="stretch", placeholder=MISSING, column_config=config)


def simulated_note(df: pd.DataFrame) -> None:
    """A badge when any row on the page is simulated (physics model, not hardware)."""
    if "simulated" in df and df["simulated"].fillna(False).astype(bool).any():
        n = int(df.drop_duplicates(subset=[c for c in ("device_uid", "fingerprint") if c in df])["simulated"]
                .fillna(False).astype(bool).sum())
        st.badge(f"SIMULATED: {n} device(s) on this page are physics models with known ground truth, "
                 "not hardware; their labels say (simulated)", icon=":material/science:", color="orange")


def source_column(simulated: pd.Series) -> pd.Series:
    """The "source" cell every table shows: simulated or real."""
    return simulated.fillna(False).astype(bool).map({True: "SIMULATED", False: "real"})


def first_run(status: data.Status) -> None:
    """The screen of an empty or missing warehouse: what to run, never a traceback."""
    st.title("fleetphysics")
    if status.kind == "error":
        st.error(data.public_text(status.message, status.path), icon=":material/error:")
        return
    name = Path(status.path).name  # viewers see the file, never where it lives on the server
    st.info(f"No measurements yet in `{name}` ({data.public_text(status.message, status.path)}).",
            icon=":material/info:")
    st.markdown("Fill it with one of (on the dashboard's host, `--warehouse` naming this file):")
    st.code("make run\n"
            f"fleetphysics run --warehouse {name}            # every GPU host of the (embedded) Ray cluster\n"
            f"fleetphysics ingest DIR --warehouse {name}     # artifact dirs of earlier runs",
            language="bash")
    st.markdown("then reload this page. On a machine without GPUs `fleetphysics run` measures simulated "
                "devices, labelled **simulated** everywhere.")


def _date_or_none(value):
    return value if isinstance(value, dt.date) else None


def sidebar_filters() -> data.Filters:
    """Run, GPU model, host, fingerprint and date filters, kept in the URL's query
    parameters so a view can be shared as a link."""
    opts = data.filter_options()
    with st.sidebar:
        st.subheader("Filters")
        # No format_func on bound widgets: the URL would carry the formatted text, not the value.
        runs = list(dict.fromkeys(opts["run_id"]))
        st.multiselect("Run", runs, key="run", bind="query-params", placeholder="all runs",
                       help="Newest first. Run ids start with their UTC start time.")
        st.multiselect("GPU model", sorted(opts["gpu_name"].dropna().unique()), key="gpu", bind="query-params",
                       placeholder="all GPU models")
        st.multiselect("Host", sorted(opts["host"].dropna().unique()), key="host", bind="query-params",
                       placeholder="all hosts")
        fingerprints = list(dict.fromkeys(opts["fingerprint"].astype(str)))
        prefixes = list(dict.fromkeys(f[:FP_PREFIX] for f in fingerprints))
        st.multiselect("Fingerprint", prefixes, key="fp", bind="query-params", placeholder="all fingerprints",
                       help=f"The first {FP_PREFIX} characters of each hardware fingerprint.")
        left, right = st.columns(2)
        # Fixed bounds (not the data's): a date in a shared link must stay valid as runs are added.
        bounds = dict(min_value=DATE_MIN, max_value=dt.date.today() + dt.timedelta(days=5 * 366))
        date_from = left.date_input("From", value=None, key="from", bind="query-params", format="YYYY-MM-DD", **bounds)
        date_to = right.date_input("To", value=None, key="to", bind="query-params", format="YYYY-MM-DD", **bounds)
        st.caption("Filters live in the URL: copy it to share this view.")
    chosen = set(st.session_state.get("fp") or ())
    return data.Filters(runs=tuple(st.session_state.get("run") or ()), gpus=tuple(st.session_state.get("gpu") or ()),
                        hosts=tuple(st.session_state.get("host") or ()),
                        fingerprints=tuple(f for f in fingerprints if f[:FP_PREFIX] in chosen),
                        date_from=_date_or_none(date_from), date_to=_date_or_none(date_to))


def _when(ns) -> str:
    if ns is None or pd.isna(ns):
        return "start unknown"
    return pd.Timestamp(int(ns), unit="ns", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")


def when(ns) -> str:
    """A wall-clock time in ns as 'YYYY-MM-DD HH:MM UTC'."""
    return _when(ns)


def no_rows(what: str) -> None:
    """Say that the selection has nothing for this page, and what would fill it."""
    f = data.current_filters()
    hint = " Clear some filters in the sidebar." if f.active else ""
    st.info(f"No {what} in the selection.{hint}", icon=":material/filter_alt_off:")


def text(value) -> str:
    """A value for a caption: MISSING for None or NaN (never "None" or "nan" on screen)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return MISSING
    return str(value)


def plain_params(text) -> str:
    """A fit's parameters JSON as words: "a 1.2, b 0.8" (never raw JSON on screen)."""
    import json

    if text is None or (isinstance(text, float) and pd.isna(text)):
        return MISSING
    try:
        params = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return str(text)
    if not isinstance(params, dict):
        return str(params)
    return ", ".join(_param_words(k, v, params) for k, v in params.items() if not _interval_part(k)) or MISSING


def _interval_part(key: str) -> bool:
    """A parameter's standard error, interval bound or resolved flag (shown with the parameter)."""
    return any(part in key for part in ("_se_", "_ci_low_", "_ci_high_")) or key.endswith(("_resolved", "_se"))


def _param_words(key: str, value, params: dict) -> str:
    """One parameter: "e_token 0.00229 J [0.00228, 0.00230]" (its 95 % interval when it has
    one, "unresolved" when its interval cannot bound it)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return f"{key} {value}"
    base, unit = (key[:-2], " J") if key.endswith("_j") else (key, "")
    lo, hi = params.get(f"{base}_ci_low{key[len(base):]}"), params.get(f"{base}_ci_high{key[len(base):]}")
    words = f"{base} {value:.4g}{unit}"
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        words += f" [{lo:.4g}, {hi:.4g}]"
    if params.get(f"{base}_resolved") is False:
        words += " (unresolved)"
    return words
