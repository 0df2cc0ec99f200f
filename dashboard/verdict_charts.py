"""The Fleet health page's figure: every compared figure as a strip of the devices, the
outliers marked (pure function from the verdict and its figures table)."""

from __future__ import annotations


import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.charts import _layout, color_map, empty
from warehouse.verdict import FIGURES
from warehouse.verdict import _num  # finite float or None, as the rules read figures

OUTLIER_COLOR = "#d62728"
ROW_PX = 105



def figure_strips(rows: pd.DataFrame, verdict_devices: list[dict], labels: dict[str, str]) -> go.Figure:
    """One strip per figure (a subplot each, its own unit): a dot per device of the run,
    its group's peer median as a bar, outliers in a red ring with their host and z.

    ``rows``: the verdict's figures table restricted to the judged run; ``labels``:
    device_uid -> the device's label (its colour is the one every page gives it)."""
    outliers = {(d["device_uid"], o["figure"]): o for d in verdict_devices for o in d["outliers"]}
    shown = [f for f in FIGURES if f.column in rows and rows[f.column].map(_num).notna().any()]
    if not shown:
        return empty("no figure to compare in this run")
    shown.sort(key=lambda f: not any(k[1] == f.column for k in outliers))  # figures with outliers first
    colors = color_map(labels.values())
    titles = [f"{f.column} ({f.unit})" if f.unit else f.column for f in shown]
    fig = make_subplots(rows=len(shown), cols=1, subplot_titles=titles, vertical_spacing=min(0.75 / len(shown), 0.12))
    groups = rows["gpu_name"].fillna("unknown").astype(str) + rows["simulated"].map(lambda s: " (simulated)" if s else "")
    for i, f in enumerate(shown, start=1):
        values = rows[f.column].map(_num)
        for group in sorted(set(groups)):
            in_group = (groups == group) & values.notna()
            if not in_group.any():
                continue
            med = float(values[in_group].median())
            fig.add_trace(go.Scatter(x=[med], y=[group], mode="markers", showlegend=False,
                                     marker=dict(symbol="line-ns", size=26, line=dict(width=3, color="#444")),
                                     hovertemplate=f"{group}: median {med:.4g} {f.unit}<extra></extra>"), row=i, col=1)
        for uid, value, group in zip(rows["device_uid"], values, groups):
            if value is None:
                continue
            label = labels.get(uid, uid)
            o = outliers.get((uid, f.column))
            marker = dict(size=16 if o else 11, color=colors.get(label, "#888"), opacity=0.85,
                          line=dict(width=3 if o else 0.5, color=OUTLIER_COLOR if o else "white"))
            text = f"{label.split(' · ')[0]} z {o['robust_z']:+.1f}" if o else None
            fig.add_trace(go.Scatter(
                x=[value], y=[group], mode="markers+text" if o else "markers", text=[text] if text else None,
                textposition="top center", textfont=dict(color=OUTLIER_COLOR, size=11), showlegend=False,
                marker=marker, name=label,
                hovertemplate=f"{label}<br>{f.column} %{{x:.4g}} {f.unit}" + (f"<br>robust z {o['robust_z']:+.1f}"
                                                                                 f" against {o['n_peers']} peers"
                                                                                 if o else "") + "<extra></extra>"),
                row=i, col=1)
        n_groups = len(set(groups[values.notna()]))
        # room above the top strip for an outlier's label
        fig.update_yaxes(row=i, col=1, showgrid=False, tickfont=dict(size=10), range=[-0.5, n_groups - 0.5 + 0.6])
        fig.update_xaxes(row=i, col=1, tickfont=dict(size=10), zeroline=False)
    _layout(fig, height=120 + ROW_PX * len(shown))
    fig.update_layout(margin=dict(l=10, r=10, t=40, b=10))
    return fig
