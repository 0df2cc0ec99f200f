"""The Fleet health page's figure: every compared figure as a strip of the devices, the
outliers marked (pure function from the verdict and its figures table)."""

from __future__ import annotations


import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.charts import _layout, color_map, empty
from warehouse.verdict import FIGURES
from warehouse.verdict import _num  # finite float or None, as the rules read figures

Z95 = 1.959963984540054  # two-sided 95 % normal quantile

OUTLIER_COLOR = "#d62728"
ROW_PX = 105



def _strip_range(values: pd.Series, ses: pd.Series) -> list[float] | None:
    """The strip's x range: its values and the intervals that exclude zero (a resolved
    figure's); an unresolved interval runs off the strip rather than squash the dots."""
    ends = [v for v in values if v is not None]
    for v, se in zip(values, ses):
        if v is not None and se is not None and Z95 * se < abs(v):
            ends += [v - Z95 * se, v + Z95 * se]
    if not ends:
        return None
    lo, hi = min(ends), max(ends)
    pad = max((hi - lo) * 0.08, abs(hi) * 0.02, 1e-9)
    return [lo - pad, hi + pad]


def figure_strips(rows: pd.DataFrame, verdict_devices: list[dict], labels: dict[str, str]) -> go.Figure:
    """One strip per figure (a subplot each, its own unit): a dot per device of the run with
    ± 1.96 x the SE the verdict judges it by (where it has one), its group's peer median as a
    bar, outliers in a red ring with their host and z.

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
        ses = rows[f.se].map(_num) if f.se and f.se in rows else pd.Series([None] * len(rows), index=rows.index)
        for uid, value, group, se in zip(rows["device_uid"], values, groups, ses):
            if value is None:
                continue
            label = labels.get(uid, uid)
            o = outliers.get((uid, f.column))
            marker = dict(size=16 if o else 11, color=colors.get(label, "#888"), opacity=0.85,
                          line=dict(width=3 if o else 0.5, color=OUTLIER_COLOR if o else "white"))
            text = f"{label.split(' · ')[0]} z {o['robust_z']:+.1f}" if o else None
            interval = "" if se is None else f" [{value - Z95 * se:.4g}, {value + Z95 * se:.4g}]"
            fig.add_trace(go.Scatter(
                x=[value], y=[group], mode="markers+text" if o else "markers", text=[text] if text else None,
                error_x=None if se is None else dict(type="data", array=[Z95 * se], color="rgba(40,40,40,0.55)",
                                                     thickness=1.5, width=4),
                textposition="top center", textfont=dict(color=OUTLIER_COLOR, size=11), showlegend=False,
                marker=marker, name=label,
                hovertemplate=f"{label}<br>{f.column} %{{x:.4g}}{interval} {f.unit}" + (f"<br>robust z {o['robust_z']:+.1f}"
                                                                                 f" against {o['n_peers']} peers"
                                                                                 if o else "") + "<extra></extra>"),
                row=i, col=1)
        n_groups = len(set(groups[values.notna()]))
        # room above the top strip for an outlier's label
        fig.update_yaxes(row=i, col=1, showgrid=False, tickfont=dict(size=10), range=[-0.5, n_groups - 0.5 + 0.6])
        fig.update_xaxes(row=i, col=1, tickfont=dict(size=10), zeroline=False, range=_strip_range(values, ses))
    _layout(fig, height=120 + ROW_PX * len(shown))
    fig.update_layout(margin=dict(l=10, r=10, t=40, b=10))
    return fig
