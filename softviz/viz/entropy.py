"""Entropy figures: a rollouts × steps heatmap, and per-step profiles with a band (one or several modes, or
before and after RL training, the paper's Fig. 4)."""

from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

import numpy as np

from softviz import analysis
from softviz.trace import Trace
from softviz.viz.style import (template, ENTROPY_TITLE, _colours, _esc, _go, _head, _one_trace, _rollout_ticks,
                               _token_text)

MAX_HOVER_CELLS = 16_384  # heatmap cells (32 rollouts × 512 steps) above which hover lists only the top token


def entropy_heatmap(trace: Trace, title: str | None = None, *, field: str = "entropy", hover_k: int = 5,
                    max_rollouts: int = 64, max_steps: int = 512, zmax: float | None = None,
                    branch_points: bool = False, selected: tuple[int, int] | None = None):
    """Rollouts × CoT steps heatmap of the entropy at each step; hover shows the shadow token and top-k weights.

    Args:
        trace: a recorded Trace.
        field: "entropy" (of the next-token distribution, temperature 1) or "weight_entropy" (of the weights mixed).
        hover_k: top-k tokens listed in the hover label.
        max_rollouts, max_steps: above these, the first max_rollouts rollouts are shown and steps are averaged in
            bins (the title says so).
        zmax: the top of the colour scale (default: this trace's largest value); give several heatmaps the same
            one to compare their colours.
        branch_points: mark the steps softviz.analysis.branch_points finds (a second trace, "branch points").
        selected: (rollout, step) to outline (a rectangle shape named "selected").
    Returns: a Figure with one Heatmap; z[b][t] is the entropy (NaN where rollout b's CoT had ended).
    """
    _one_trace(trace)
    go = _go()
    H = analysis.entropy_matrix(trace, field)
    B, T = H.shape
    rows = min(B, max_rollouts)
    notes = ["hover: shadow (argmax) token and the largest mixture weights · blank: the rollout's CoT had ended"]
    if rows < B:
        notes.append(f"showing the first {rows} of {B} rollouts")
    H = H[:rows]
    pool = max(1, math.ceil(T / max_steps))
    if pool > 1:
        pad = np.full((rows, pool * math.ceil(T / pool) - T), np.nan)
        with warnings.catch_warnings():  # bins where every rollout had ended are all-NaN: they stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            Hp = np.nanmean(np.concatenate([H, pad], 1).reshape(rows, -1, pool), axis=2)
        x = np.arange(Hp.shape[1]) * pool
        text = np.array([[f"steps {t}–{t + pool - 1} (mean of {pool})" for t in x]] * rows, dtype=object)
        notes.append(f"{T} steps averaged in bins of {pool}; hover tokens omitted")
        H = Hp
    else:
        x = np.arange(T)
        if rows * T > MAX_HOVER_CELLS and hover_k > 1:  # the hover text is most of the JSON: keep it a few MB
            hover_k = 1
            notes.append(f"{rows * T:,} cells: hover lists only the top token")
        text = _entropy_hover(trace, rows, hover_k)
    label = analysis.trace_label(trace)
    main = title or f"{ENTROPY_TITLE[field].split(' (')[0].capitalize()} at each CoT step — {label}, {B} rollouts"
    fig = go.Figure(go.Heatmap(z=H, x=x, y=np.arange(rows), text=text,
                               hovertemplate="rollout %{y} · %{text}<br>entropy %{z:.3f} nats<extra></extra>",
                               hoverongaps=False, coloraxis="coloraxis", name=label))
    if branch_points and pool == 1:
        bp = analysis.branch_points(trace)
        at = np.argwhere((bp["uncertain"] | bp["blended"])[:rows])
        fig.add_trace(go.Scatter(x=at[:, 1], y=at[:, 0], mode="markers", name="branch points",
                                 marker=dict(symbol="circle-open", size=7, color="white", line=dict(width=1.5)),
                                 hovertemplate="branch point: rollout %{y}, step %{x}<extra></extra>",
                                 showlegend=False))
        notes.append(f"○ branch points ({len(at)}): entropy above {analysis.BRANCH_ENTROPY} nats or top weight "
                     f"below {analysis.BRANCH_WEIGHT}")
    if selected is not None and pool == 1:
        b, t = selected
        fig.add_shape(type="rect", x0=t - 0.5, x1=t + 0.5, y0=b - 0.5, y1=b + 0.5, name="selected",
                      line=dict(color="#E45756", width=3))
    _head(fig, main, notes)
    top = zmax if zmax is not None else float(np.nanmax(H)) if np.isfinite(H).any() else 1.0
    colorbar = dict(title=dict(text=ENTROPY_TITLE[field].replace(" (", "<br>("), side="right"))
    fig.update_layout(template=template(), height=max(320, 120 + 14 * rows),
                      coloraxis=dict(colorscale="Viridis", cmin=0, cmax=top, colorbar=colorbar))
    fig.update_xaxes(title_text="CoT step (0 = first thought token)", range=[-0.5, x[-1] + pool - 0.5])
    ticks = _rollout_ticks(trace, rows)
    fig.update_yaxes(title_text="rollout: final answer" if ticks else "rollout", autorange="reversed", **ticks)
    return fig


def _entropy_hover(trace: Trace, rows: int, k: int) -> np.ndarray:
    """Per cell: the step, its shadow token and top-k weights ("" past the rollout's end); kept short: it is most
    of the figure's JSON."""
    T = trace.num_steps
    k = min(k, trace.topk_ids.shape[-1])
    shadow = _token_text(trace, trace.tokens[:rows].numpy())  # (rows, T)
    top = _token_text(trace, trace.topk_ids[:rows, :, :k].numpy())  # (rows, T, k)
    w = trace.topk_weights[:rows, :, :k].numpy()
    valid = analysis.valid_mask(trace)[:rows]
    what = "sampling probabilities" if trace.weights_name == "probability" else "mixture weights"
    text = np.empty((rows, T), dtype=object)
    text[:] = ""
    for b in range(rows):
        for t in range(T):
            if valid[b, t]:
                tops = " · ".join(f"{top[b, t, j]} {w[b, t, j]:.3f}" for j in range(k))
                text[b, t] = (f"step {t}<br>shadow token: {shadow[b, t]}"
                              f"<br>top {what}: {tops}")
    return text


def _band_traces(go, label: str, prof: dict, colour: str, dash: str = "solid", band_name: str = "95% CI"):
    """(line, band) scatter traces of one profile; the band is a filled polygon that skips hover."""
    ok = prof["count"] > 0
    x, mean, lo, hi, n = prof["step"][ok], prof["mean"][ok], prof["lo"][ok], prof["hi"][ok], prof["count"][ok]
    rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    band = go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([hi, lo[::-1]]), fill="toself",
                      fillcolor=f"rgba({rgb[0]},{rgb[1]},{rgb[2]},0.18)", line=dict(width=0), hoverinfo="skip",
                      showlegend=False, legendgroup=label, name=f"{label} {band_name}")
    line = go.Scatter(x=x, y=mean, mode="lines", name=label, legendgroup=label,
                      line=dict(color=colour, dash=dash, width=2),
                      customdata=np.stack([lo, hi, n], -1),
                      hovertemplate=(f"<b>{_esc(label)}</b><br>step %{{x}}<br>mean %{{y:.3f}} nats<br>"
                                     f"{band_name} %{{customdata[0]:.3f}}–%{{customdata[1]:.3f}}<br>"
                                     "%{customdata[2]} rollouts still in their CoT<extra></extra>"))
    return line, band


BAND_NAMES = {"ci95": "95% CI of the mean", "std": "± 1 std", "iqr": "25th–75th percentile"}


def entropy_profiles(traces: Mapping[str, Trace] | Trace, *, field: str = "entropy", band: str = "ci95",
                     show_count: bool = True, title: str | None = None):
    """Mean entropy per CoT step for each mode, with a band, on shared axes; below, the rollouts that reached each step.

    Args:
        traces: label -> Trace, or one Trace.
        band: "ci95" (95% confidence interval of the mean), "std" or "iqr" (see analysis.band_stats).
    Returns: a Figure; for each label a line trace named label (y = mean) and a filled band trace.
    """
    return _profiles_figure({lb: (tr, "solid") for lb, tr in analysis.as_trace_dict(traces).items()}, field, band,
                            show_count, title or f"{ENTROPY_TITLE[field].split(' (')[0].capitalize()} per CoT step, "
                                                  "mean over rollouts")


def entropy_before_after(before: Mapping[str, Trace] | Trace, after: Mapping[str, Trace] | Trace, *,
                         labels: Sequence[str] = ("before RL", "after RL"), field: str = "entropy", band: str = "ci95",
                         show_count: bool = True, title: str | None = None):
    """Per-position entropy profile before (dashed) and after (solid) training: the analogue of the paper's Fig. 4.

    Args:
        before, after: a Trace each (the same prompts and mode, decoded by the model before and after RL), or
            dicts label -> Trace for several decoding modes (matched by label).
        labels: the names of the two states.
    Returns: a Figure with a line "<mode> · <state>" and a band per (mode, state).
    """
    before, after = analysis.as_trace_dict(before), analysis.as_trace_dict(after)
    series = {}
    for state, group, dash in ((labels[0], before, "dash"), (labels[1], after, "solid")):
        for lb, tr in group.items():
            series[f"{lb} · {state}"] = (tr, dash)
    main = title or (f"{ENTROPY_TITLE[field].split(' (')[0].capitalize()} per CoT step, {labels[0]} (dashed) and "
                     f"{labels[1]} (solid)")
    return _profiles_figure(series, field, band, show_count, main, note="cf. the paper's Fig. 4")


def _profiles_figure(series: dict, field: str, band: str, show_count: bool, main: str, note: str = ""):
    go = _go()
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2 if show_count else 1, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        row_heights=[0.75, 0.25] if show_count else [1.0])
    colours = _colours(list(dict.fromkeys(lb.split(" · ")[0] for lb in series)))
    for lb, (tr, dash) in series.items():
        colour = colours[lb.split(" · ")[0]]
        prof = analysis.entropy_profile(tr, field, band)
        line, bnd = _band_traces(go, lb, prof, colour, dash, BAND_NAMES[band])
        fig.add_trace(bnd, row=1, col=1)
        fig.add_trace(line, row=1, col=1)
        if show_count:
            fig.add_trace(go.Scatter(x=prof["step"], y=prof["count"], mode="lines", name=f"{lb} rollouts",
                                     line=dict(color=colour, dash=dash, width=1.5, shape="hv"), legendgroup=lb,
                                     showlegend=False, hovertemplate=f"{_esc(lb)}<br>step %{{x}}: %{{y}} rollouts "
                                                                     "still in their CoT<extra></extra>"), row=2, col=1)
    notes = [f"line: mean over the rollouts still in their CoT · band: {BAND_NAMES[band]}", note]
    _head(fig, main, notes)
    fig.update_layout(template=template(), height=480 if show_count else 400,
                      hovermode="x unified" if len(series) <= 6 else "closest",
                      legend=dict(orientation="h", y=-0.18))
    fig.update_yaxes(title_text=ENTROPY_TITLE[field], rangemode="tozero", row=1, col=1)
    if show_count:
        fig.update_yaxes(title_text="rollouts", rangemode="tozero", row=2, col=1)
    fig.update_xaxes(title_text="CoT step (0 = first thought token)", row=2 if show_count else 1, col=1)
    return fig
