"""Plotly figures of the dashboard: pure functions from DataFrames to figures.

Every device keeps one color across charts (:func:`color_map`); simulated devices carry
"(simulated)" in their label and a hatched pattern on bars; quality words are printed on
or beside the marks they qualify.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

PALETTE = qualitative.D3 + qualitative.Set2 + qualitative.Dark24
SIM_PATTERN = "/"
QUALITY_SYMBOLS = {"BILLABLE": "diamond", "GOOD": "circle", "GAPPY": "triangle-up", "NO_DATA": "x"}
FIELD_DASH = {"power_w": "solid", "power_instant_w": "dash", "power_avg_1s_w": "dot"}
PHASE_DASH = {"decode": "solid", "prefill": "dash"}
# A model's curve: dotted where it overlays measured data, dashed where it predicts past it.
PREDICTION_LINE = {"fit": dict(dash="dot", width=1), "predicted": dict(dash="dash", width=2)}
HEIGHT = 420
MAX_TOP_LEGEND = 8  # legend entries above the plot; more go to its right
MAX_MARK_TEXT = 6  # devices whose marks get printed values; more get them on hover only


_DEVICE_ORDER: dict[str, int] = {}


def set_device_order(labels) -> None:
    """Fix every device's color for this warehouse: the position of its label among all
    the warehouse's labels (the app sets it once per request, before any page draws)."""
    _DEVICE_ORDER.clear()
    _DEVICE_ORDER.update({label: i for i, label in enumerate(sorted(set(labels)))})


def color_map(labels) -> dict[str, str]:
    """A stable color per device label: its place among all the warehouse's devices when
    :func:`set_device_order` knows every label here (so a filter or another page keeps a
    device's color), else its place among these labels, sorted."""
    wanted = sorted(set(labels))
    if wanted and all(label in _DEVICE_ORDER for label in wanted):
        return {label: PALETTE[_DEVICE_ORDER[label] % len(PALETTE)] for label in wanted}
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(wanted)}


def _layout(fig: go.Figure, title: str | None = None, height: int = HEIGHT, legend_y: float = 1.02) -> go.Figure:
    """Common layout: the title at the very top, the legend between it and the plot
    (``legend_y`` above 1 clears subplot titles)."""
    entries = sum(1 for t in fig.data if t.showlegend is not False)
    if entries > MAX_TOP_LEGEND:  # a long list goes to the right, where it cannot squash the plot
        legend = dict(orientation="v", yanchor="top", y=1, xanchor="left", x=1.01, font=dict(size=10))
    else:
        legend = dict(orientation="h", yanchor="bottom", y=legend_y, xanchor="left", x=0)
    _legible_bar_text(fig)
    fig.update_layout(title=dict(text=title, y=0.99, yanchor="top") if title else None, height=height,
                      margin=dict(l=10, r=10, t=(90 if legend_y > 1.05 else 70) if title else 40, b=10),
                      legend=legend, hovermode="closest")
    return fig


def _hatched(trace) -> bool:
    shape = trace.marker.pattern.shape if trace.marker and trace.marker.pattern else None
    shapes = [shape] if isinstance(shape, str) else list(shape or ())
    return any(shapes)


def _legible_bar_text(fig: go.Figure) -> None:
    """Text of a hatched bar goes beside it, on the plain background (printed over the
    hatch it cannot be read), and the hatch is drawn fainter."""
    for trace in fig.data:
        if trace.type == "bar" and _hatched(trace):
            trace.marker.pattern.fgopacity = 0.45
            if trace.text is not None:
                trace.textposition = "outside"
                trace.cliponaxis = False


def empty(message: str) -> go.Figure:
    """A blank figure that says why it is blank."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font=dict(size=14))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, height=240)


def plain_number(value: float) -> str:
    """A tick label in plain words: 0.2, 0.5, 1, 2, 500, 1k, 20k, 1.5M."""
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:g}{suffix}"
    return f"{value:g}"


def log_ticks(values) -> dict:
    """tickvals and ticktext of a log axis over ``values``: 1-2-5 steps, plain numbers
    (Plotly's own log ticks print '5' and '2' between decades without their magnitude)."""
    v = pd.to_numeric(pd.Series(list(values)), errors="coerce")
    v = v[(v > 0) & np.isfinite(v)]
    if v.empty:
        return {}
    lo, hi = math.floor(math.log10(v.min())), math.ceil(math.log10(v.max()))
    ticks = [m * 10.0 ** e for e in range(lo - 1, hi + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if v.min() / 2.5 <= t <= v.max() * 2.5]
    return {"tickvals": ticks, "ticktext": [plain_number(t) for t in ticks]}


def is_predicted(kind, reached) -> bool:
    """Whether an equilibrium was predicted (from the fit) rather than reached in the run."""
    if isinstance(kind, str) and kind:
        return kind == "predicted"
    return reached is not None and not pd.isna(reached) and not bool(reached)


def _fmt(value, spec: str = ".3g", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or pd.isna(value):
        return "n/a"
    return f"{value:{spec}}{unit}"


def _patterns(df: pd.DataFrame) -> list[str]:
    return [SIM_PATTERN if s else "" for s in df["simulated"].fillna(False).astype(bool)]


# ---------------------------------------------------------------- fleet


def fleet_overview(df: pd.DataFrame) -> go.Figure:
    """Four key constants side by side per device: idle baseline (+- SEM_eff), equilibrium
    time (predicted hatched lighter), VRAM cliff at batch 1 and J/token at batch 1."""
    if df.empty:
        return empty("no devices match the filters")
    colors = color_map(df["label"])
    fig = make_subplots(rows=1, cols=4, horizontal_spacing=0.05, subplot_titles=(
        "idle (W ± SEM_eff)", "time to equilibrium (s)", "VRAM cliff @ batch 1 (tokens)", "J/token @ batch 1"))
    bar = dict(marker_color=[colors[lab] for lab in df["label"]], showlegend=False)
    y = df["label"]
    fig.add_trace(go.Bar(x=df["idle_robust_w"], y=y, orientation="h",
                         error_x=dict(type="data", array=df["idle_sem_w"].fillna(0)),
                         marker_pattern_shape=_patterns(df),
                         text=[f"{_fmt(v, '.1f')} W" for v in df["idle_robust_w"]],
                         hovertext=[f"{_fmt(v, '.3f')} ± {_fmt(s, '.2g')} W · {q or 'n/a'}" for v, s, q in
                                    zip(df["idle_robust_w"], df["idle_sem_w"], df["idle_quality"])],
                         name="idle", **bar), 1, 1)
    predicted = pd.Series([is_predicted(k, r) for k, r in zip(df["equilibrium_kind"], df["equilibrium"])], index=df.index)
    fig.add_trace(go.Bar(x=df["time_to_equilibrium_s"], y=y, orientation="h",
                         marker_pattern_shape=["x" if p else ("/" if s else "") for p, s in
                                               zip(predicted, df["simulated"].fillna(False))],
                         marker_opacity=[0.55 if p else 1.0 for p in predicted],
                         text=[f"{_fmt(t, '.0f')} s {'predicted' if p else 'measured'}" if pd.notna(t) else "n/a"
                               for t, p in zip(df["time_to_equilibrium_s"], predicted)],
                         name="equilibrium", **bar), 1, 2)
    fig.add_trace(go.Bar(x=df["vram_max_context_batch1"], y=y, orientation="h", marker_pattern_shape=_patterns(df),
                         text=[f"{_fmt(v, ',.0f')}" for v in df["vram_max_context_batch1"]],
                         hovertext=[f"{_fmt(v, ',.0f')} tokens · {q or 'n/a'}" for v, q in
                                    zip(df["vram_max_context_batch1"], df["vram_cliff_quality"])],
                         name="vram", **bar), 1, 3)
    fig.add_trace(go.Bar(x=df["j_per_token_batch1"], y=y, orientation="h", marker_pattern_shape=_patterns(df),
                         text=[f"{_fmt(v, '.3g')} J" for v in df["j_per_token_batch1"]],
                         hovertext=[f"{_fmt(v, '.4g')} J/token · {q or 'n/a'}" for v, q in
                                    zip(df["j_per_token_batch1"], df["j_per_token_batch1_quality"])],
                         name="joule", **bar), 1, 4)
    fig.update_yaxes(showticklabels=False, col=2)
    fig.update_yaxes(showticklabels=False, col=3)
    fig.update_yaxes(showticklabels=False, col=4)
    fig.update_yaxes(autorange="reversed")
    fig.update_traces(textposition="outside", cliponaxis=False, textfont_size=12, selector=dict(type="bar"))
    for col, column in enumerate(("idle_robust_w", "time_to_equilibrium_s", "vram_max_context_batch1",
                                  "j_per_token_batch1"), start=1):
        top = pd.to_numeric(df[column], errors="coerce").max()
        if pd.notna(top) and top > 0:
            fig.update_xaxes(range=[0, top * 1.6], col=col)  # room for the value printed after the bar
    return _layout(fig, height=max(260, (70 if len(df) <= 6 else 34) * len(df) + 120))


# ---------------------------------------------------------------- baselines


def baseline_distribution(dist: pd.DataFrame, fleet: pd.DataFrame) -> go.Figure:
    """Left: each device's robust mean with its ± SEM_eff error bar on one axis from 0.
    Right: its idle samples in the baseline window around that mean (box = quartiles,
    whiskers = 5th and 95th percentiles), so spreads compare across power levels."""
    if fleet.empty:
        return empty("no idle baselines in the selection")
    colors = color_map(fleet["label"])
    merged = fleet.merge(dist, on=["run_id", "device_uid"], how="left") if not dist.empty else fleet.assign(q50=np.nan)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.08, subplot_titles=(
        "robust mean ± SEM_eff (W)", "spread: samples − robust mean (W)<br><sup>quartiles, 5th–95th pct, floor readings left out</sup>"))
    for row in merged.itertuples():
        color = colors[row.label]
        if pd.notna(row.idle_robust_w):
            note = f"{row.idle_robust_w:.2f} ± {row.idle_sem_w or 0:.2g} W · {row.idle_quality or 'n/a'}"
            note += " · FAKE IDLE" if row.fake_idle else ""
            fig.add_trace(go.Bar(
                y=[row.label], x=[row.idle_robust_w], orientation="h", marker_color=color,
                marker_pattern_shape=SIM_PATTERN if row.simulated else "",
                error_x=dict(type="data", array=[row.idle_sem_w or 0], thickness=2, width=8),
                text=[note], textposition="outside", cliponaxis=False, showlegend=False, name=row.label,
                hovertemplate=f"{note}<extra>{row.label}</extra>"), 1, 1)
        if pd.notna(getattr(row, "q50", np.nan)) and pd.notna(row.idle_robust_w):
            c = row.idle_robust_w
            fig.add_trace(go.Box(
                y=[row.label], q1=[row.q25 - c], median=[row.q50 - c], q3=[row.q75 - c], lowerfence=[row.q05 - c],
                upperfence=[row.q95 - c], mean=[row.mean - c], orientation="h", marker_color=color, showlegend=False,
                name=row.label, boxpoints=False,
                hovertemplate=f"{row.n} samples of {row.field}: min {row.lo:.2f}, median {row.q50:.2f}, "
                              f"max {row.hi:.2f} W<extra>{row.label}</extra>"), 1, 2)
    fig.add_vline(x=0, line=dict(color="gray", width=1, dash="dot"), row=1, col=2)
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(showticklabels=False, col=2)
    top = pd.to_numeric(fleet["idle_robust_w"], errors="coerce").max()
    if pd.notna(top) and top > 0:
        fig.update_xaxes(range=[0, top * 1.9], col=1)  # room for the value and quality after the bar
    return _layout(fig, height=max(300, (80 if len(fleet) <= 6 else 34) * len(fleet) + 140))


def baseline_delta(fleet: pd.DataFrame) -> go.Figure:
    """Each device's idle baseline minus its peer median, in SEM_eff units."""
    df = fleet.dropna(subset=["idle_delta_w"])
    if df.empty:
        return empty("no peer comparison (v_baseline_compare) for the selection")
    colors = color_map(fleet["label"])
    fig = go.Figure(go.Bar(x=df["label"], y=df["idle_delta_w"], marker_color=[colors[lab] for lab in df["label"]],
                           marker_pattern_shape=_patterns(df),
                           error_y=dict(type="data", array=df["idle_sem_w"].fillna(0)),
                           text=[f"{d:+.2f} W ({'n/a' if pd.isna(s) else f'{s:+.1f} SEM'}; {int(p)} peer(s))"
                                 for d, s, p in zip(df["idle_delta_w"], df["idle_delta_sem"], df["idle_peers"])],
                           textposition="outside"))
    fig.update_yaxes(title="idle − peer median (W)")
    return _layout(fig, "Against peers (same comparability key, simulated never mixed with real)", height=340)


# ---------------------------------------------------------------- heat soak


def heat_soak_curves(series: pd.DataFrame, summary: pd.DataFrame) -> go.Figure:
    """Temperature against time since the heat soak began, all devices overlaid, with the
    fitted exponential (dotted over the measured curve, dashed and named "predicted" past
    it), equilibrium markers (filled: measured, open: predicted) and the slope dT/dt in
    °C/min below."""
    if summary.empty:
        return empty("no heat-soak results in the selection")
    colors = color_map(summary["label"])
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.06,
                        subplot_titles=("Temperature (°C)", "Slope dT/dt (°C/min)"))
    marks: dict[str, list] = {"x": [], "y": [], "color": [], "symbol": [], "text": [], "name": []}
    predicted_any = False
    for row in summary.itertuples():
        color = colors[row.label]
        s = series[(series["run_id"] == row.run_id) & (series["device_uid"] == row.device_uid)].sort_values("t_s")
        if not s.empty:
            fig.add_trace(go.Scatter(x=s["t_s"], y=s["temp_c"], mode="lines", name=row.label, legendgroup=row.label,
                                     line=dict(color=color, width=2)), 1, 1)
            slope = _slope_per_min(s["t_s"].to_numpy(), s["temp_c"].to_numpy())
            fig.add_trace(go.Scatter(x=s["t_s"], y=slope, mode="lines", name=row.label, legendgroup=row.label,
                                     showlegend=False, line=dict(color=color, width=1.5)), 2, 1)
        t_end = float(s["t_s"].max()) if not s.empty else (row.duration_s or 0.0)
        if pd.notna(row.tau_s) and pd.notna(row.t_inf_c) and pd.notna(row.t_start_c):
            horizon = max(t_end, row.time_to_equilibrium_s if pd.notna(row.time_to_equilibrium_s) else 0.0)
            for t0, t1, kind in ((0.0, min(t_end, horizon), "fit"), (t_end, horizon, "predicted")):
                if t1 <= t0:
                    continue
                t = np.linspace(t0, t1, 200)
                fit = row.t_inf_c - (row.t_inf_c - row.t_start_c) * np.exp(-t / row.tau_s)
                fig.add_trace(go.Scatter(x=t, y=fit, mode="lines", line=dict(color=color, **PREDICTION_LINE[kind]),
                                         name=f"{row.label} {kind}", legendgroup=row.label, showlegend=False,
                                         hovertemplate=f"{kind} %{{y:.1f}} °C at %{{x:.0f}} s<extra></extra>"), 1, 1)
                predicted_any |= kind == "predicted"
        if pd.notna(row.time_to_equilibrium_s):
            predicted = is_predicted(row.equilibrium_kind, row.equilibrium)
            temp = row.t_inf_c if predicted and pd.notna(row.t_inf_c) else _temp_at(s, row.time_to_equilibrium_s, row.t_end_c)
            if pd.notna(temp):
                marks["x"].append(row.time_to_equilibrium_s)
                marks["y"].append(temp)
                marks["color"].append(color)
                marks["symbol"].append("star-open" if predicted else "star")
                marks["text"].append(f"{'predicted' if predicted else 'equilibrium'} {row.time_to_equilibrium_s:.0f} s, "
                                     f"{temp:.1f} °C")
                marks["name"].append(row.label)
    if marks["x"]:  # one trace for every marker: a trace per device costs more than it shows
        fig.add_trace(go.Scatter(
            x=marks["x"], y=marks["y"], mode="markers+text" if len(marks["x"]) <= MAX_MARK_TEXT else "markers",
            marker=dict(color=marks["color"], size=14, symbol=marks["symbol"], line=dict(color=marks["color"], width=2)),
            text=marks["text"], textposition="top center", customdata=marks["name"], name="equilibrium",
            showlegend=False, hovertemplate="%{text}<extra>%{customdata}</extra>"), 1, 1)
    for kind, words in (("fit", "fit (over the measured curve)"),
                        ("predicted", "predicted (the fit past the measured data)")):
        if kind == "fit" or predicted_any:  # legend keys only: what a dotted and a dashed line mean
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=words, legendgroup=kind,
                                     line=dict(color="#7f7f7f", **PREDICTION_LINE[kind])), 1, 1)
    fig.update_xaxes(title="seconds since the heat soak began", row=2, col=1)
    return _layout(fig, height=580, legend_y=1.08)


def _slope_per_min(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dT/dt in °C/min: a least-squares line over a centered window of 5 % of the series
    (at least ± 2 s: a 1 °C sensor makes the raw difference useless), vectorized with
    cumulative sums."""
    n = len(t)
    if n < 3:
        return np.full(n, np.nan)
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    t = t - t[0]  # keeps the sums well conditioned
    half_s = max(0.05 * t[-1], 2.0)  # a 1 °C sensor needs a few seconds to show a slope

    def csum(v):
        return np.concatenate([[0.0], np.cumsum(v)])

    st_, sy, stt, sty = csum(t), csum(y), csum(t * t), csum(t * y)
    a = np.searchsorted(t, t - half_s, side="left")
    b = np.searchsorted(t, t + half_s, side="right")
    k = (b - a).astype(float)
    sum_t, sum_y = st_[b] - st_[a], sy[b] - sy[a]
    denom = k * (stt[b] - stt[a]) - sum_t ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (k * (sty[b] - sty[a]) - sum_t * sum_y) / denom
    return np.where(denom > 1e-12, slope * 60.0, np.nan)


def _temp_at(series: pd.DataFrame, t_s: float, fallback) -> float:
    if series.empty:
        return fallback if fallback is not None else np.nan
    i = (series["t_s"] - t_s).abs().idxmin()
    return float(series.loc[i, "temp_c"])


def heat_soak_bars(summary: pd.DataFrame) -> go.Figure:
    """tau and T_inf per device; predicted equilibria hatched with x and lighter."""
    if summary.empty:
        return empty("no heat-soak results in the selection")
    colors = color_map(summary["label"])
    fig = make_subplots(rows=1, cols=3, subplot_titles=("tau (s)", "T_inf (°C)", "time to equilibrium (s)"))
    predicted = pd.Series([is_predicted(k, r) for k, r in zip(summary["equilibrium_kind"], summary["equilibrium"])],
                          index=summary.index)
    for col, column, spec in ((1, "tau_s", ".0f"), (2, "t_inf_c", ".1f"), (3, "time_to_equilibrium_s", ".0f")):
        text = []
        for v, p, q in zip(summary[column], predicted, summary["quality"]):
            text.append("n/a (" + (q or "no fit") + ")" if pd.isna(v) else
                        f"{v:{spec}}" + (" predicted" if p and column != "tau_s" else "") + f" · {q or 'n/a'}")
        fig.add_trace(go.Bar(x=summary["label"], y=summary[column].fillna(0),
                             marker_color=[colors[lab] for lab in summary["label"]],
                             marker_pattern_shape=["x" if p else ("/" if s else "") for p, s in
                                                   zip(predicted, summary["simulated"].fillna(False))],
                             marker_opacity=[0.55 if p else 1.0 for p in predicted],
                             text=text, textposition="auto", showlegend=False), 1, col)
        top = pd.to_numeric(summary[column], errors="coerce").max()
        if pd.notna(top) and top > 0:
            fig.update_yaxes(range=[0, top * 1.25], row=1, col=col)  # room for the text above the bar
    fig.update_xaxes(showticklabels=False)
    return _layout(fig, "Fitted constants (hatched x = equilibrium predicted, not reached)", height=380, legend_y=1.1)


# ---------------------------------------------------------------- VRAM cliff


def vram_cliff(points: pd.DataFrame, summary: pd.DataFrame) -> go.Figure:
    """Largest context that fits against batch size, one line per device (log-log)."""
    if points.empty:
        return empty("no VRAM cliff points in the selection")
    colors = color_map(summary["label"] if not summary.empty else points["label"])
    fig = go.Figure()
    for label, g in points.groupby("label", sort=True):
        g = g.sort_values("batch_size")
        fig.add_trace(go.Scatter(
            x=g["batch_size"], y=g["max_context"], mode="lines+markers+text" if points["label"].nunique() <= MAX_MARK_TEXT else "lines+markers", name=label,
            line=dict(color=colors.get(label), width=2), marker=dict(size=9),
            text=[f"{c:,}" for c in g["max_context"]], textposition="top right",
            customdata=np.stack([g["cause"].fillna("n/a"), g["peak_allocated_mib"].fillna(np.nan),
                                 g["first_failing_context"].fillna(np.nan)], axis=1),
            hovertemplate="batch %{x}: %{y:,} tokens fit; next %{customdata[2]:,} failed (%{customdata[0]}); "
                          "peak %{customdata[1]:,.0f} MiB<extra>%{fullData.name}</extra>"))
    fig.update_xaxes(type="log", title="batch size", dtick=math.log10(2))
    fig.update_yaxes(type="log", title="max context that fits (tokens), higher is better",
                     **log_ticks(points["max_context"]))
    return _layout(fig)


def vram_capacity(summary: pd.DataFrame) -> go.Figure:
    """Capacity and peak allocation at the cliff (batch 1) per device."""
    if summary.empty:
        return empty("no VRAM results in the selection")
    fig = go.Figure()
    fig.add_trace(go.Bar(x=summary["label"], y=summary["vram_capacity_mib"], name="capacity (MiB)",
                         marker_color="#9aa5b1", marker_pattern_shape=_patterns(summary)))
    fig.add_trace(go.Bar(x=summary["label"], y=summary["vram_cliff_peak_mib_batch1"], name="peak allocated at the cliff, batch 1 (MiB)",
                         marker_color="#1f77b4", marker_pattern_shape=_patterns(summary),
                         text=[f"frag {_fmt(f, '.0%')} · {q or 'n/a'}" for f, q in
                               zip(summary["vram_fragmentation"], summary["vram_cliff_quality"])],
                         textposition="outside"))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="MB")
    return _layout(fig, height=340)


# ---------------------------------------------------------------- Joule curve


def joule_curve(points: pd.DataFrame, labels: pd.Series) -> go.Figure:
    """J/token against batch size, prefill dashed and decode solid, SEM error bars, the
    marker shape giving the energy quality (◆ billable, ● good, ▲ gappy, × no data)."""
    if points.empty:
        return empty("no Joule-curve points in the selection")
    colors = color_map(labels)
    fig = go.Figure()
    for (label, phase), g in points.groupby(["label", "phase"], sort=True):
        g = g.sort_values("batch_size")
        quality = g["energy_quality"].fillna("NO_DATA").str.upper()
        fig.add_trace(go.Scatter(
            x=g["batch_size"], y=g["j_per_token"], mode="lines+markers", name=f"{label} · {phase}",
            line=dict(color=colors.get(label), dash=PHASE_DASH.get(phase, "dot"), width=2),
            marker=dict(size=11, symbol=[QUALITY_SYMBOLS.get(q, "circle-open") for q in quality],
                        line=dict(color="black", width=1)),
            error_y=dict(type="data", array=g["j_per_token_sem"].fillna(0), visible=True),
            customdata=np.stack([quality, g["tokens_per_s"].fillna(np.nan), g["n_events"].fillna(0)], axis=1),
            hovertemplate="batch %{x}: %{y:.4g} J/token · %{customdata[0]} · %{customdata[1]:.1f} tok/s · "
                          "%{customdata[2]} event(s)<extra>%{fullData.name}</extra>"))
    fig.update_xaxes(type="log", title="batch size", dtick=math.log10(2))
    fig.update_yaxes(type="log", title="energy per token (J, baseline subtracted), lower is better",
                     **log_ticks(points["j_per_token"]))
    return _layout(fig, height=460)


# ---------------------------------------------------------------- sensor response


def sensor_steps(steps: pd.DataFrame, labels: pd.Series) -> go.Figure:
    """Normalized step responses (0 before the edge, 1 on the plateau) of each power field,
    all devices overlaid on milliseconds since the load edge; 10 % and 90 % guides."""
    if steps.empty:
        return empty("no load steps in an instrument_response phase for the selection")
    colors = color_map(labels)
    fig = go.Figure()
    for (label, fld), g in steps.groupby(["label", "field"], sort=True):
        fig.add_trace(go.Scatter(x=g["rel_ms"], y=g["response"], mode="lines", name=f"{label} · {fld}",
                                 line=dict(color=colors.get(label), dash=FIELD_DASH.get(fld, "dashdot"), width=2),
                                 customdata=g["watts"], line_shape="hv",
                                 hovertemplate="%{x:.0f} ms: %{y:.2f} (%{customdata:.1f} W)<extra>%{fullData.name}</extra>"))
    for level in (0.1, 0.9):
        fig.add_hline(y=level, line=dict(color="gray", dash="dot", width=1), annotation_text=f"{level:.0%}",
                      annotation_position="right")
    fig.add_vline(x=0, line=dict(color="black", width=1), annotation_text="load edge")
    fig.update_xaxes(title="ms since the load step")
    fig.update_yaxes(title="normalized response")
    return _layout(fig, height=460)


def sensor_rise(figures: pd.DataFrame, labels: pd.Series) -> go.Figure:
    """Update period and 10–90 % rise per device, one color per power field; the
    quality word on each bar."""
    df = figures.dropna(subset=["update_period_ms", "rise_ms"], how="all")
    if df.empty:
        return empty("no instrument_response figures in the selection")
    field_colors = {"power_w": "#1f77b4", "power_instant_w": "#ff7f0e", "power_avg_1s_w": "#2ca02c"}
    fig = make_subplots(rows=1, cols=2, subplot_titles=("update period (ms)", "rise 10–90 % (ms)"))
    order = sorted(df["label"].unique())
    for fld, g in df.groupby("field", sort=True):
        g = g.set_index("label").reindex(order)
        for col, column in ((1, "update_period_ms"), (2, "rise_ms")):
            fig.add_trace(go.Bar(x=order, y=g[column], name=fld, legendgroup=fld, showlegend=col == 1,
                                 marker_color=field_colors.get(fld, "#7f7f7f"),
                                 text=[f"{_fmt(v, '.0f')} · {q}" if isinstance(q, str) else _fmt(v, ".0f")
                                       for v, q in zip(g[column], g["quality"])],
                                 textposition="auto"), 1, col)
    fig.update_layout(barmode="group")
    fig.update_xaxes(showticklabels=len(order) <= MAX_MARK_TEXT, tickangle=-20)
    return _layout(fig, "Per device (hover for names when there are many)", height=400, legend_y=1.1)


# ---------------------------------------------------------------- training coupling


SIGNATURE_PANELS = (  # (low column, high column, subplot title, number format)
    ("power_p05_w", "power_p95_w", "power p5–p95 (W)", ".0f"),
    ("temp_p05_c", "temp_p95_c", "temperature p5–p95 (°C)", ".0f"),
    ("util_p05_pct", "util_p95_pct", "utilization p5–p95 (%)", ".0f"),
)


def range_text(low, high, spec: str = ".0f") -> str:
    """'low–high', with n/a for a missing end."""
    return f"{_fmt(low, spec)}–{_fmt(high, spec)}"


def verdict_text(verdict, p_value) -> str:
    """'coupled (p 0.001)', 'not coupled (p 0.42)' or the verdict alone when there is no p."""
    if not isinstance(verdict, str) or not verdict:
        return "no verdict"
    return f"{verdict} (p {_fmt(p_value, '.2g')})" if p_value is not None and pd.notna(p_value) else verdict


def training_signatures(summary: pd.DataFrame) -> go.Figure:
    """Each device's training workload side by side: the 5th–95th percentile ranges of power,
    temperature and utilization during training, and the RLE collapse rate with the
    coupling verdict and p-value printed beside it."""
    if summary.empty:
        return empty("no training-coupling results in the selection")
    colors = color_map(summary["label"])
    titles = [p[2] for p in SIGNATURE_PANELS] + ["RLE collapses per gated hour · verdict"]
    fig = make_subplots(rows=1, cols=4, horizontal_spacing=0.05, subplot_titles=titles)
    y = summary["label"]
    bar = dict(orientation="h", marker_color=[colors[lab] for lab in y], marker_pattern_shape=_patterns(summary),
               showlegend=False)
    for col, (lo, hi, title, spec) in enumerate(SIGNATURE_PANELS, start=1):
        low, high = pd.to_numeric(summary[lo], errors="coerce"), pd.to_numeric(summary[hi], errors="coerce")
        text = [range_text(a, b, spec) for a, b in zip(low, high)]
        fig.add_trace(go.Bar(x=(high - low).fillna(0), base=low.fillna(0), y=y, text=text, name=title,
                             hovertemplate="%{y}: %{text}<extra>" + title + "</extra>", **bar), 1, col)
    rate = pd.to_numeric(summary["collapse_rate_per_gated_h"], errors="coerce")
    text = [f"{_fmt(r, '.3g')}/h · {verdict_text(v, p)}" for r, v, p in
            zip(rate, summary["verdict"], summary["p_value"])]
    fig.add_trace(go.Bar(x=rate.fillna(0), y=y, text=text, textposition="outside", cliponaxis=False, name="collapses",
                         hovertext=[f"{n if pd.notna(n) else 'n/a'} collapse(s) · {reason or ''}" for n, reason in
                                    zip(summary["n_collapses"], summary["verdict_reason"])], **bar), 1, 4)
    top = rate.max()
    fig.update_xaxes(range=[0, (top if pd.notna(top) and top > 0 else 1.0) * 3.0], col=4)
    for col in (2, 3, 4):
        fig.update_yaxes(showticklabels=False, col=col)
    fig.update_yaxes(autorange="reversed")
    fig.update_traces(textfont_size=12, selector=dict(type="bar"))
    return _layout(fig, height=max(260, (70 if len(summary) <= 6 else 34) * len(summary) + 120))


def training_steps(steps: pd.DataFrame, label: str) -> go.Figure:
    """One device's training per step: grad_norm with its spikes (×) and learning-rate
    spikes (▲), the mean power of the trace reads inside each step (gaps: steps with no read),
    and the step's RLE with its collapses (×)."""
    if steps.empty:
        return empty("no training steps for this device")
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07, row_heights=[0.4, 0.3, 0.3],
                        subplot_titles=("grad_norm (before clipping)", "power per step (W)", "RLE per step"))
    x = steps["step"]
    fig.add_trace(go.Scatter(x=x, y=steps["grad_norm"], mode="lines", name="grad_norm",
                             line=dict(color="#1f77b4", width=1.5)), 1, 1)
    spikes = steps[steps["spike"].fillna(False).astype(bool)]
    fig.add_trace(go.Scatter(x=spikes["step"], y=spikes["grad_norm"], mode="markers", name="grad_norm spike",
                             marker=dict(color="#d62728", symbol="x", size=9)), 1, 1)
    lr = steps[steps["lr_spike"].fillna(False).astype(bool)]
    fig.add_trace(go.Scatter(x=lr["step"], y=lr["grad_norm"], mode="markers", name="learning-rate spike",
                             marker=dict(color="#ff7f0e", symbol="triangle-up", size=10)), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=steps["power_w"], mode="lines", name="power", connectgaps=False,
                             line=dict(color="#2ca02c", width=1.5)), 2, 1)
    fig.add_trace(go.Scatter(x=x, y=steps["rle"], mode="lines", name="RLE", connectgaps=False,
                             line=dict(color="#9467bd", width=1.5)), 3, 1)
    collapsed = steps[steps["collapse"].fillna(False).astype(bool)]
    fig.add_trace(go.Scatter(x=collapsed["step"], y=collapsed["rle"], mode="markers", name="RLE collapse",
                             marker=dict(color="#d62728", symbol="x", size=9)), 3, 1)
    fig.update_xaxes(title="step", row=3, col=1)
    unaligned = int((~steps["aligned"].fillna(False).astype(bool)).sum())
    return _layout(fig, f"{label}: {len(steps)} steps, {unaligned} without a trace read", height=620, legend_y=1.06)


def rle_timeline(series: pd.DataFrame, label: str, t0_ns: int | None = None, t1_ns: int | None = None) -> go.Figure:
    """RLE over the whole run with its collapses (×) and the training window shaded
    (``t0_ns``..``t1_ns`` on the series' clock)."""
    if series.empty:
        return empty("no RLE series for this device (no trace, or the device's limits are unknown)")
    fig = go.Figure(go.Scatter(x=series["t_s"], y=series["rle"], mode="lines", name="RLE",
                               line=dict(color="#9467bd", width=1.5)))
    hit = series[series["collapses"] > 0]
    fig.add_trace(go.Scatter(x=hit["t_s"], y=hit["rle"], mode="markers", name="collapse starts",
                             marker=dict(color="#d62728", symbol="x", size=11)))
    if t0_ns is not None and t1_ns is not None:
        offset_ns = int(series["t_ns"].iloc[0]) - float(series["t_s"].iloc[0]) * 1e9
        fig.add_vrect(x0=(t0_ns - offset_ns) / 1e9, x1=(t1_ns - offset_ns) / 1e9, fillcolor="rgba(44,160,44,0.10)",
                      line_width=0, annotation_text="training", annotation_position="top left")
    fig.update_xaxes(title="seconds since the first trace read")
    fig.update_yaxes(title="RLE")
    return _layout(fig, f"{label}: RLE in 1 s bins, {int(series['collapses'].sum())} collapse(s)", height=360)


# ---------------------------------------------------------------- drift


DRIFT_METRICS = (
    ("idle_robust_w", "idle baseline (W)", "idle_sem_w"),
    ("power_instant_w_rise_ms", "rise, power_instant_w (ms)", None),
    ("vram_max_context_batch1", "VRAM cliff @ batch 1 (tokens)", None),
    ("j_per_token_batch1", "J/token @ batch 1", None),
    ("t_inf_c", "T_inf (°C)", None),
    ("time_to_equilibrium_s", "time to equilibrium (s)", None),
)


def drift(df: pd.DataFrame, label: str) -> go.Figure:
    """One device's key constants across its runs (x: run start), a dashed line where its
    fingerprint changed (driver, VBIOS, ...)."""
    if df.empty:
        return empty("no runs of this device in the selection")
    x = pd.to_datetime(df["started_wall_ns"], unit="ns", utc=True)
    fig = make_subplots(rows=2, cols=3, subplot_titles=[m[1] for m in DRIFT_METRICS], vertical_spacing=0.16)
    for i, (column, _title, err) in enumerate(DRIFT_METRICS):
        r, c = divmod(i, 3)
        if column not in df:
            continue
        fig.add_trace(go.Scatter(
            x=x, y=df[column], mode="lines+markers", name=column, showlegend=False, line=dict(color="#1f77b4"),
            marker=dict(size=9, color=["#d62728" if ch else "#1f77b4" for ch in df["fingerprint_changed"].fillna(False)]),
            error_y=dict(type="data", array=df[err].fillna(0)) if err else None,
            customdata=np.stack([df["run_id"], df["fingerprint"].astype(str).str[:12], df["run_quality"].fillna("n/a")], axis=1),
            hovertemplate="%{y:.4g}<br>run %{customdata[0]}<br>fp %{customdata[1]} · %{customdata[2]}<extra></extra>"),
            r + 1, c + 1)
    for when in x[df["fingerprint_changed"].fillna(False).astype(bool)]:
        fig.add_vline(x=when.timestamp() * 1000, line=dict(color="#d62728", dash="dash", width=1))
    fig.update_yaxes(tickformat=".6~g")
    return _layout(fig, f"{label}: {len(df)} run(s); red = first run on a new fingerprint", height=580, legend_y=1.1)


# ---------------------------------------------------------------- run explorer


PHASE_COLORS = ("rgba(31,119,180,0.10)", "rgba(255,127,14,0.10)", "rgba(44,160,44,0.10)",
                "rgba(148,103,189,0.10)", "rgba(140,86,75,0.10)", "rgba(227,119,194,0.10)")


def _span(x0: float, x1: float, yref: str, fill: str, line: dict | None = None, xref: str = "x") -> dict:
    return dict(type="rect", x0=x0, x1=x1, y0=0, y1=1, xref=xref, yref=yref, fillcolor=fill, layer="below",
                line=line or dict(width=0))


def run_trace(buckets: pd.DataFrame, t0_ns: int, phases: pd.DataFrame, events: pd.DataFrame,
              throttle: pd.DataFrame, title: str) -> go.Figure:
    """Power (mean with min–max band per bucket) and temperature over the run, with phase
    spans shaded, events outlined and throttling in red; zoom with the mouse."""
    if buckets.empty:
        return empty("no trace rows in this window")
    t = (buckets["t_ns"] - t0_ns) / 1e9
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.05,
                        specs=[[{"secondary_y": True}], [{}]])
    for fld, color in (("power_w", "#1f77b4"), ("power_instant_w", "#ff7f0e")):
        if buckets[fld].notna().any():
            # The min-max band as one closed polygon over the buckets that have readings:
            # fill="tonexty" across failed reads (NaN) draws stray diagonals.
            ok = buckets[f"{fld}_min"].notna() & buckets[f"{fld}_max"].notna()
            tt = t[ok].to_numpy()
            fig.add_trace(go.Scatter(x=np.concatenate([tt, tt[::-1]]),
                                     y=np.concatenate([buckets.loc[ok, f"{fld}_max"].to_numpy(),
                                                       buckets.loc[ok, f"{fld}_min"].to_numpy()[::-1]]),
                                     mode="lines", line=dict(width=0, color=color), fill="toself", opacity=0.25,
                                     showlegend=False, hoverinfo="skip", legendgroup=fld), 1, 1)
            fig.add_trace(go.Scatter(x=t, y=buckets[fld], mode="lines", name=f"{fld} (W)", line=dict(color=color, width=1.5),
                                     legendgroup=fld), 1, 1)
    if buckets["power_avg_1s_w"].notna().any():
        fig.add_trace(go.Scatter(x=t, y=buckets["power_avg_1s_w"], mode="lines", name="power_avg_1s_w (W)",
                                 line=dict(color="#2ca02c", width=1.5)), 1, 1)
    fig.add_trace(go.Scatter(x=t, y=buckets["temp_c"], mode="lines", name="temp (°C)",
                             line=dict(color="#d62728", width=1.5, dash="dot")), 1, 1, secondary_y=True)
    fig.add_trace(go.Scatter(x=t, y=buckets["sm_clock_mhz"], mode="lines", name="SM clock (MHz)",
                             line=dict(color="#7f7f7f", width=1)), 2, 1)
    # Shapes are assigned in one layout update: add_vrect per span is slow with hundreds of spans.
    shapes, notes = [], []
    for i, p in enumerate(phases.itertuples()):
        end = p.t_end_ns if pd.notna(p.t_end_ns) else buckets["t_ns"].max()
        x0 = (p.t_start_ns - t0_ns) / 1e9
        shapes.append(_span(x0, (end - t0_ns) / 1e9, "y domain", PHASE_COLORS[i % len(PHASE_COLORS)]))
        notes.append(dict(x=x0, y=1.0, xref="x", yref="y domain", text=p.phase, showarrow=False, xanchor="left",
                          yanchor="top", font=dict(size=11)))
    for e in events.itertuples():
        shapes.append(_span((e.t_start_ns - t0_ns) / 1e9, (e.t_end_ns - t0_ns) / 1e9, "y domain", "rgba(0,0,0,0.04)",
                            line=dict(color="#555", width=1)))
    for th in throttle.itertuples():
        shapes.append(_span((th.t_start_ns - t0_ns) / 1e9, (th.t_end_ns - t0_ns) / 1e9, "y3 domain",
                            "rgba(214,39,40,0.25)", xref="x2"))
    fig.update_layout(shapes=shapes, annotations=list(fig.layout.annotations) + notes)
    fig.update_yaxes(title="W", row=1, col=1, secondary_y=False)
    fig.update_yaxes(title="°C", row=1, col=1, secondary_y=True, showgrid=False, tickformat=".0f")
    fig.update_yaxes(title="MHz (red: throttled)", row=2, col=1)
    fig.update_xaxes(title="seconds since the first sample", row=2, col=1)
    return _layout(fig, title, height=640)
