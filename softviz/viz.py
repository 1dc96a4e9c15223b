"""Plotly figures, one function per figure. Takes Traces or metrics, returns a plotly Figure; never touches a model.

The numbers come from softviz.analysis. Steps are shown 0-based ("CoT step 0" = the first thought token), as
Trace indexes them. Large inputs are cut or subsampled to stay fast and small, and the figure says so in its
title. Figures render in JupyterLab, VS Code, `gr.Plot` and as PNG (`fig.write_image`, needs Chromium).
"""

from __future__ import annotations

import html
import math
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np

from softviz import analysis, checks
from softviz.trace import Trace

# Metric name -> axis title. Names are train()'s (TRL's where they mean the same).
TRAINING_PANELS = {
    "val/greedy_accuracy": "greedy validation accuracy",
    "reward": "mean reward (100 correct, 10 boxed, 0)",
    "entropy": "CoT entropy of p (nats)",
    "cot/mean_length": "CoT length (tokens)",
}

# Fixed colours for the paper's six settings (greedy = a darker shade of the same hue); others cycle.
MODE_COLOURS = {"hard": "#4C78A8", "hard-greedy": "#1F3F66", "soft": "#F58518", "soft-greedy": "#A35200",
                "fuzzy": "#54A24B", "fuzzy-greedy": "#2A6A24"}
_PALETTE = ["#B279A2", "#E45756", "#72B7B2", "#9D755D", "#EECA3B", "#FF9DA6", "#BAB0AC", "#439894"]
RANK_COLOURS = ["#1F4E79", "#F58518", "#54A24B", "#B279A2", "#E45756", "#72B7B2", "#9D755D", "#EECA3B", "#FF9DA6",
                "#BAB0AC"]  # rank 1 dark; neighbours contrast so thin slices stay visible
_SYMBOLS = ["circle", "diamond", "square", "x", "triangle-up", "cross", "star", "triangle-down"]
ENTROPY_TITLE = {"entropy": "next-token entropy (nats)", "weight_entropy": "entropy of the mixed weights (nats)"}
TEMPLATE = "plotly_white"
MAX_HOVER_CELLS = 16_384  # heatmap cells (32 rollouts × 512 steps) above which hover lists only the top token


def _go():
    import plotly.graph_objects as go

    return go


def mode_colour(label: str, i: int = 0) -> str:
    """The colour of a mode label: fixed for the paper's settings, else the i-th of a palette."""
    return MODE_COLOURS.get(str(label).lower(), _PALETTE[i % len(_PALETTE)])


def _colours(labels) -> dict[str, str]:
    out, others = {}, 0
    for label in labels:
        if str(label).lower() in MODE_COLOURS:
            out[label] = MODE_COLOURS[str(label).lower()]
        else:
            out[label] = _PALETTE[others % len(_PALETTE)]
            others += 1
    return out


def _esc(s) -> str:
    """Escape text for plotly labels (it renders a subset of HTML; quotes stay as they are: no &quot;)."""
    return html.escape(str(s), quote=False)


def _tok(s: str) -> str:
    """A token's text for hover labels: HTML-escaped, whitespace made visible (␣ space, ⏎ newline)."""
    return _esc(s).replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥") or "∅"


def _token_text(trace: Trace, ids) -> np.ndarray:
    """Display strings (object array, same shape) for an int array of token ids."""
    ids = np.asarray(ids)
    uniq, inv = np.unique(ids, return_inverse=True)
    disp = np.array([_tok(trace.token_strings.get(int(i), f"<{int(i)}>")) for i in uniq], dtype=object)
    return disp[inv].reshape(ids.shape)


def _head(fig, main: str, notes: Sequence[str], subplot_titles: bool = False) -> None:
    """Title above the plot area and grey note lines under it (what the figure shows, what was cut or subsampled).

    The notes are an annotation named "notes". The top margin is sized here: plotly's title automargin misplaces
    the data layer in static (kaleido) images, and a multi-line title anchors on its first line.
    """
    notes = [n for n in notes if n]
    below = 26 if subplot_titles else 8  # room for subplot titles between the notes and the plot area
    lines = 19 * len(notes)
    fig.update_layout(title=dict(text=main, x=0, xanchor="left", xref="paper", y=1, yanchor="bottom", yref="paper",
                                 pad=dict(b=below + lines + 4)),
                      margin=dict(t=52 + lines + below))
    if notes:
        fig.add_annotation(text="<br>".join(notes), name="notes", xref="paper", yref="paper", x=0, y=1,
                           xanchor="left", yanchor="bottom", yshift=below, showarrow=False, align="left",
                           font=dict(size=12, color="#555"))


def _answer_label(trace: Trace, b: int, correct: list) -> str:
    answers = trace.meta.get("answers") or [None] * trace.num_rollouts
    a = answers[b]
    a = analysis.NO_ANSWER if a is None else _short(a or '""', 8)
    mark = {True: " ✓", False: " ✗"}.get(correct[b], "")
    return f"{b}: {_esc(a)}{mark}"


def _short(s: str, n: int) -> str:
    s = str(s)
    return s if len(s) <= n else s[: n - 1] + "…"


def _rollout_ticks(trace: Trace, rows: int) -> dict:
    """y ticks "rollout: answer ✓/✗" when there are few rollouts; plain numbers otherwise."""
    if rows > 40:
        return {}
    correct = analysis.rollout_correct(trace)
    return dict(tickmode="array", tickvals=list(range(rows)),
                ticktext=[_answer_label(trace, b, correct) for b in range(rows)])


# ---- 1. token entropy --------------------------------------------------------------------------------------

def entropy_heatmap(trace: Trace, title: str | None = None, *, field: str = "entropy", hover_k: int = 5,
                    max_rollouts: int = 64, max_steps: int = 512):
    """Rollouts × CoT steps heatmap of the entropy at each step; hover shows the shadow token and top-k weights.

    Args:
        trace: a recorded Trace.
        field: "entropy" (of the next-token distribution, temperature 1) or "weight_entropy" (of the weights mixed).
        hover_k: top-k tokens listed in the hover label.
        max_rollouts, max_steps: above these, the first max_rollouts rollouts are shown and steps are averaged in
            bins (the title says so).
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
    _head(fig, main, notes)
    top = float(np.nanmax(H)) if np.isfinite(H).any() else 1.0
    colorbar = dict(title=dict(text=ENTROPY_TITLE[field].replace(" (", "<br>("), side="right"))
    fig.update_layout(template=TEMPLATE, height=max(320, 120 + 14 * rows),
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
    what = "sampling probabilities" if trace.meta.get("mode", {}).get("kind") == "hard" else "mixture weights"
    text = np.empty((rows, T), dtype=object)
    text[:] = ""
    for b in range(rows):
        for t in range(T):
            if valid[b, t]:
                tops = " · ".join(f"{top[b, t, j]} {w[b, t, j]:.3f}" for j in range(k))
                text[b, t] = (f"step {t}<br>shadow token: {shadow[b, t]}"
                              f"<br>top {what}: {tops}")
    return text


def _band_traces(go, label: str, prof: dict, colour: str, dash: str = "solid", band_name: str = "95% CI",
                 legendgroup: str | None = None):
    """(line, band) scatter traces of one profile; the band is a filled polygon that skips hover."""
    ok = prof["count"] > 0
    x, mean, lo, hi, n = prof["step"][ok], prof["mean"][ok], prof["lo"][ok], prof["hi"][ok], prof["count"][ok]
    group = legendgroup or label
    rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    band = go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([hi, lo[::-1]]), fill="toself",
                      fillcolor=f"rgba({rgb[0]},{rgb[1]},{rgb[2]},0.18)", line=dict(width=0), hoverinfo="skip",
                      showlegend=False, legendgroup=group, name=f"{label} {band_name}")
    line = go.Scatter(x=x, y=mean, mode="lines", name=label, legendgroup=group,
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
    fig.update_layout(template=TEMPLATE, height=480 if show_count else 400,
                      hovermode="x unified" if len(series) <= 6 else "closest",
                      legend=dict(orientation="h", y=-0.18))
    fig.update_yaxes(title_text=ENTROPY_TITLE[field], rangemode="tozero", row=1, col=1)
    if show_count:
        fig.update_yaxes(title_text="rollouts", rangemode="tozero", row=2, col=1)
    fig.update_xaxes(title_text="CoT step (0 = first thought token)", row=2 if show_count else 1, col=1)
    return fig


# ---- 2. nearest-vocabulary projections ---------------------------------------------------------------------

def _one_trace(trace) -> None:
    if not isinstance(trace, Trace):
        raise ValueError(f"expected a softviz Trace, got {type(trace).__name__} (generate(..., trace=True).trace, "
                         "or Trace.load(path))")


def _rollout_title(trace: Trace, b: int) -> str:
    if not checks.is_int(b) or not 0 <= b < trace.num_rollouts:
        raise ValueError(f"rollout {b} is out of range: this trace has {trace.num_rollouts} rollouts "
                         f"(0..{trace.num_rollouts - 1})")
    correct = analysis.rollout_correct(trace)[b]
    answers = trace.meta.get("answers") or [None] * trace.num_rollouts
    ans = analysis.NO_ANSWER if answers[b] is None else _esc(str(answers[b]) or analysis.EMPTY_ANSWER)
    mark = {True: " ✓", False: " ✗"}.get(correct, "")
    return f"{analysis.trace_label(trace)}, rollout {b} (answer {ans}{mark})"


def mixture_topk(trace: Trace, rollout: int = 0, *, k: int | None = None, max_steps: int = 256,
                 token_row: bool | None = None, title: str | None = None):
    """The mixture's top-k tokens and their weights at each CoT step of one rollout, as stacked bars.

    Rank 1 is at the bottom of each bar; the grey top is the weight left to the rest of the vocabulary. For hard
    tokens the bars are the sampling distribution and the fed token is the sampled one (the shadow token).
    Returns: a Figure with one Bar trace per rank ("rank 1", ...) and one "rest of vocabulary" trace;
    their y values at a step sum to 1. token_row: write the fed (shadow) tokens above the bars (default: up to 64
    steps).
    """
    _one_trace(trace)
    go = _go()
    title_rollout = _rollout_title(trace, rollout)
    n = int(trace.lengths[rollout])
    shown = min(n, max_steps)
    k = min(k or trace.topk_ids.shape[-1], trace.topk_ids.shape[-1])
    ids = trace.topk_ids[rollout, :shown, :k].numpy()  # (n, k)
    w = trace.topk_weights[rollout, :shown, :k].numpy().astype(np.float64)
    toks = _token_text(trace, ids)
    shadow = _token_text(trace, trace.tokens[rollout, :shown].numpy())
    x = np.arange(shown)
    hard = trace.meta.get("mode", {}).get("kind") == "hard"
    what = "probability" if hard else "weight"
    data = []
    for j in range(k):
        label = np.where(w[:, j] >= 0.12, toks[:, j], "")
        data.append(go.Bar(x=x, y=w[:, j], name=f"rank {j + 1}", text=label, textposition="inside",
                           marker=dict(color=RANK_COLOURS[j % len(RANK_COLOURS)], line=dict(width=0)),
                           insidetextanchor="middle", textangle=0, customdata=np.stack([toks[:, j], shadow], -1),
                           hovertemplate=(f"step %{{x}} · rank {j + 1}<br>token %{{customdata[0]}}<br>"
                                          f"{what} %{{y:.4f}}<br>fed / shadow token %{{customdata[1]}}"
                                          "<extra></extra>")))
    rest = np.clip(1.0 - w.sum(1), 0.0, 1.0)
    data.append(go.Bar(x=x, y=rest, name="rest of vocabulary", marker=dict(color="#E5E5E5"),
                       hovertemplate=f"step %{{x}}<br>rest of the vocabulary: {what} %{{y:.4f}}<extra></extra>"))
    row = shown <= 64 if token_row is None else token_row  # the text row stays readable up to ~64 steps
    if row:
        data.append(go.Scatter(x=x, y=1.035 + 0.04 * (x % 2), mode="text", text=shadow, textfont=dict(size=10),
                               name="sampled token" if hard else "shadow token", showlegend=False,
                               hovertemplate="step %{x}: %{text}<extra></extra>"))
    fig = go.Figure(data)
    fed = "the shadow (argmax) token, or for hard tokens the sampled token fed"
    notes = [f"each bar is one CoT step: its {k} largest mixture weights stacked (rank 1 at the bottom, labelled when "
             "≥ 0.12); grey: the rest of the vocabulary",
             f"text above the bars: {fed} · ␣ marks a space" if row else f"hover shows {fed} · ␣ marks a space"]
    if hard:
        tau = trace.meta.get("mode", {}).get("cot_temperature", "?")
        notes.append(f"the bars are the sampling distribution p (τ = {tau}) from which the hard token is sampled "
                     "and fed")
    if shown < n:
        notes.append(f"showing the first {shown} of {n} steps")
    _head(fig, title or f"Top-{k} mixture weights per CoT step — {title_rollout}", notes)
    fig.update_layout(barmode="stack", bargap=0.08, template=TEMPLATE, height=500,
                      uniformtext=dict(minsize=8, mode="hide"),
                      legend=dict(traceorder="normal", orientation="h", y=-0.18))
    fig.update_xaxes(title_text="CoT step")
    fig.update_yaxes(title_text=f"mixture {what}" if not hard else "probability", range=[0, 1.11 if row else 1.0],
                     tickvals=[0, 0.2, 0.4, 0.6, 0.8, 1.0])
    return fig


def noise_shift(trace: Trace, rollout: int = 0, *, max_steps: int = 512, title: str | None = None):
    """How far the noise (and the mixing) moved the fed input from the vocabulary, at each CoT step of one rollout.

    Top: cosine of the fed input to its nearest vocabulary token (1 = exactly a token's embedding), and to the
    shadow token when it is among the nearest; markers say whether the nearest token is the shadow token.
    Bottom: the shadow token's rank among the fed input's nearest tokens (1 = nearest).
    """
    _one_trace(trace)
    go = _go()
    from plotly.subplots import make_subplots

    title_rollout = _rollout_title(trace, rollout)
    s = {k: v[rollout] for k, v in analysis.nearest_summary(trace).items()}
    n = min(int(trace.lengths[rollout]), max_steps)
    x = np.arange(n)
    kn = trace.nearest_ids.shape[-1]
    if kn == 0:
        raise ValueError("this trace recorded no nearest tokens: record it with TraceConfig(nearest_k=5)")
    cosine = trace.meta.get("nearest_metric", "cosine") == "cosine"
    metric = "cosine" if cosine else "L2 distance"
    near = _token_text(trace, trace.nearest_ids[rollout, :n].numpy())  # (n, kn)
    sc = trace.nearest_scores[rollout, :n].numpy()
    shadow = _token_text(trace, trace.tokens[rollout, :n].numpy())
    hover = np.array([f"step {t} · shadow token {shadow[t]}<br>noise ‖σε‖ {s['noise_norm'][t]:.2f}<br>"
                      "nearest tokens: " + " · ".join(f"{near[t, j]} {sc[t, j]:.3f}" for j in range(kn))
                      for t in range(n)], dtype=object)
    rank = s["shadow_rank"][:n]
    is_shadow = rank == 1
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1, row_heights=[0.62, 0.38],
                        subplot_titles=[f"{metric} of the fed input to its nearest token",
                                        f"rank of the shadow token among the {kn} nearest tokens"])
    top1 = s["top1_score"][:n]
    fig.add_trace(go.Scatter(x=x, y=top1, mode="lines", line=dict(color="#888", width=1), name="nearest token",
                             text=hover, hovertemplate=f"%{{text}}<br>{metric} to nearest %{{y:.3f}}<extra></extra>"),
                  1, 1)
    fig.add_trace(go.Scatter(x=x[is_shadow], y=top1[is_shadow], mode="markers", name="nearest token = shadow token",
                             marker=dict(color="#54A24B", size=7), hoverinfo="skip"), 1, 1)
    fig.add_trace(go.Scatter(x=x[~is_shadow], y=top1[~is_shadow], mode="markers", name="nearest token ≠ shadow token",
                             marker=dict(color="#E45756", size=8, symbol="x"), text=hover[~is_shadow],
                             hovertemplate="%{text}<extra></extra>"), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=s["shadow_score"][:n], mode="lines", line=dict(color="#F58518", dash="dot"),
                             name="shadow token",
                             hovertemplate=f"step %{{x}}: {metric} to the shadow token %{{y:.3f}}<extra></extra>"),
                  1, 1)
    shown_rank = np.where(rank > 0, rank, kn + 1)
    fig.add_trace(go.Scatter(x=x, y=shown_rank, mode="markers", name="shadow token's rank", showlegend=False,
                             marker=dict(color=np.where(rank == 1, "#54A24B", "#E45756"), size=7),
                             text=hover, hovertemplate="%{text}<br>shadow token's rank %{y}<extra></extra>"), 2, 1)
    sigma = float(trace.meta.get("sigma") or 0.0)
    hard = trace.meta.get("mode", {}).get("kind") == "hard"
    if sigma > 0:
        first = f"noise σ = {sigma:.3g} per coordinate, ‖σε‖ ≈ {np.nanmean(s['noise_norm'][:n]):.2f} per step"
    elif hard:
        first = "each input is exactly one token's embedding (hard tokens)"
    else:
        first = "no noise in this mode: any gap from the nearest token comes from mixing several tokens"
    notes = [first, "cosine 1 = exactly a vocabulary token's embedding" if cosine
             else "distance 0 = exactly a token's embedding"]
    if n < int(trace.lengths[rollout]):
        notes.append(f"showing the first {n} of {int(trace.lengths[rollout])} steps")
    _head(fig, title or f"How far the fed input is from the vocabulary — {title_rollout}", notes, subplot_titles=True)
    fig.update_layout(template=TEMPLATE, height=520, legend=dict(orientation="h", y=-0.14))
    low = float(np.nanmin(top1)) if n and np.isfinite(top1).any() else 1.0
    span = {"range": [min(0.5, math.floor(10 * low - 1) / 10), 1.03]} if cosine else {}
    fig.update_yaxes(title_text=metric, row=1, col=1, **span)
    fig.update_yaxes(title_text="rank (1 = nearest)", range=[kn + 1.5, 0.5], tickmode="array", row=2, col=1,
                     tickvals=list(range(1, kn + 2)), ticktext=[str(r) for r in range(1, kn + 1)] + [f"> {kn}"])
    fig.update_xaxes(title_text="CoT step", row=2, col=1)
    fig.update_xaxes(zeroline=False)
    return fig


def soft_text_html(trace: Trace, rollout: int = 0, k: int = 3, *, max_steps: int = 512) -> str:
    """The CoT of one rollout as "soft text": each step a column of its top-k tokens, darker where the weight is larger.

    All token text is HTML-escaped; hovering a step shows its weights. Returns an HTML fragment (no scripts) for
    gr.HTML or IPython.display.HTML.
    """
    _one_trace(trace)
    head = _rollout_title(trace, rollout)
    n = min(int(trace.lengths[rollout]), max_steps)
    k = max(1, min(k, trace.topk_ids.shape[-1]))
    ids, w = trace.topk_ids[rollout, :n, :k].tolist(), trace.topk_weights[rollout, :n, :k].tolist()
    shadow = trace.tokens[rollout, :n].tolist()
    cells = []
    for t in range(n):
        strs = [trace.token_strings.get(i, f"<{i}>") for i in ids[t]]
        tip = html.escape(f"step {t}: " + ", ".join(f"{s!r} {p:.3f}" for s, p in zip(strs, w[t])), quote=True)
        rows = []
        for j, (s, p) in enumerate(zip(strs, w[t])):
            shown = html.escape(s if s.strip() else s.replace(" ", "␣").replace("\n", "⏎") or "∅")
            colour = "#fff" if p > 0.55 else "#111"
            border = "border-bottom:2px solid #1f3f66;" if ids[t][j] == shadow[t] else ""
            rows.append(f"<span style=\"white-space:pre;padding:0 2px;background:rgba(31,119,180,{p:.3f});"
                        f"color:{colour};opacity:{0.35 + 0.65 * p:.3f};{border}\">{shown}</span>")
        cells.append(f"<span title=\"{tip}\" style=\"display:inline-flex;flex-direction:column;margin:0 1px 4px 0;"
                     f"border-left:1px solid #eee\">{''.join(rows)}</span>")
    note = f" (first {n} of {int(trace.lengths[rollout])} steps)" if n < int(trace.lengths[rollout]) else ""
    return ("<div class=\"softviz-soft-text\" style=\"font-family:ui-monospace,Menlo,monospace;font-size:13px;"
            "line-height:1.25\"><div style=\"font-family:sans-serif;margin-bottom:4px\">"
            f"<b>Soft text</b> — {head}{note}: each column is a CoT step with its top-{k} tokens, darker = larger "
            "weight, underlined = shadow token; hover a column for its weights.</div>"
            f"<div style=\"display:flex;flex-wrap:wrap;align-items:flex-start\">{''.join(cells)}</div></div>")


# ---- 3. diversity across rollouts -----------------------------------------------------------------------------

def diversity(traces: Mapping[str, Trace] | Trace, *, gold: str | Sequence[str] | None = None,
              prompt: int | None = None, max_answers: int = 30, title: str | None = None):
    """Distinct final answers per mode and their correctness, as bars.

    Left: how many rollouts of each mode gave each answer (✓ the gold answer, ✗ a wrong one). Right: per mode,
    the number of distinct answers and of correct rollouts.
    Args:
        gold: the gold answer (one string, one per prompt or one per rollout); default: from trace.meta.
        prompt: keep one prompt's rollouts (traces with several prompts otherwise key answers "#p: answer").
        max_answers: more distinct answers than this are pooled into one "other answers" bar.
    """
    go = _go()
    from plotly.subplots import make_subplots

    if max_answers < 2:
        raise ValueError(f"max_answers must be >= 2, got {max_answers}")
    traces = analysis.as_trace_dict(traces)
    counts, status, totals, n_correct, n_distinct = {}, {}, {}, {}, {}
    for lb, tr in traces.items():
        keys, ok = analysis.answer_keys(tr, prompt), analysis.rollout_correct(tr, gold)
        counts[lb] = analysis.distinct_answers(tr, prompt)
        n_distinct[lb] = len(counts[lb])
        totals[lb] = sum(counts[lb].values())
        mine = [c for key, c in zip(keys, ok) if key is not None]
        n_correct[lb] = None if None in mine else sum(mine)
        status.update({key: c for key, c in zip(keys, ok) if key is not None and c is not None})
    order = sorted({a for c in counts.values() for a in c}, key=lambda a: -sum(c.get(a, 0) for c in counts.values()))
    notes = []
    if len(order) > max_answers:
        notes.append(f"{len(order) - max_answers + 1} least frequent answers pooled as 'other answers'")
        other = order[max_answers - 1:]
        order = order[:max_answers - 1] + ["other answers"]
        for lb in counts:
            counts[lb] = {**counts[lb], "other answers": sum(counts[lb].get(a, 0) for a in other)}
    known = any(v is not None for v in n_correct.values())
    notes.insert(0, "✓ gold answer · ✗ wrong" if known
                 else "correctness unknown: pass gold=... (or record trace.meta['correct'])")
    marks = [{True: " ✓", False: " ✗"}.get(status.get(a), "") for a in order]
    ticks = [_esc(a) + m for a, m in zip(order, marks)]  # categories: the full answers
    short = [_esc(_short(a, 14)) + m for a, m in zip(order, marks)]  # what the axis shows
    fig = make_subplots(rows=1, cols=2, column_widths=[0.7, 0.3], horizontal_spacing=0.1,
                        subplot_titles=["rollouts giving each final answer", "per mode"])
    colours = _colours(list(traces))
    for lb in traces:
        y = [counts[lb].get(a, 0) for a in order]
        fig.add_trace(go.Bar(x=ticks, y=y, name=lb, legendgroup=lb, marker_color=colours[lb],
                             customdata=[totals[lb]] * len(y),
                             hovertemplate=(f"<b>{_esc(lb)}</b>: %{{y}} of %{{customdata}} rollouts answered %{{x}}"
                                            "<extra></extra>")), 1, 1)
    labels = list(traces)
    distinct = [n_distinct[lb] for lb in labels]
    fig.add_trace(go.Bar(x=labels, y=distinct, name="distinct answers", marker_color="#9E9E9E", text=distinct,
                         textposition="outside", hovertemplate="%{x}: %{y} distinct answers<extra></extra>"), 1, 2)
    if known:
        fig.add_trace(go.Bar(x=labels, y=[n_correct[lb] or 0 for lb in labels], name="correct rollouts",
                             marker_color="#333333",
                             text=[f"{n_correct[lb]}/{totals[lb]}" for lb in labels], textposition="outside",
                             hovertemplate="%{x}: %{text} rollouts correct<extra></extra>"), 1, 2)
    per = ", ".join(f"{lb} {totals[lb]}" for lb in labels)
    _head(fig, title or f"Final answers across rollouts (rollouts per mode: {per})", notes, subplot_titles=True)
    fig.update_layout(barmode="group", template=TEMPLATE, height=460)
    fig.update_xaxes(title_text="final answer (✓ gold, ✗ wrong)" if known else "final answer", type="category",
                     tickmode="array", tickvals=ticks, ticktext=short, row=1, col=1)
    fig.update_yaxes(title_text="rollouts", row=1, col=1)
    fig.update_yaxes(title_text="count", row=1, col=2)
    return fig


def trajectory_distance_heatmap(trace: Trace, *, max_rollouts: int = 64, title: str | None = None):
    """(B, B) heatmap of the mean L2 distance between two rollouts' fed inputs over the CoT steps both reached.

    Needs trace.inputs (TraceConfig(keep_inputs=True)). The subtitle gives σ√(2d), the distance that the noise
    alone puts between two rollouts that mix exactly the same tokens.
    """
    _one_trace(trace)
    go = _go()
    D = analysis.trajectory_distances(trace)
    B = len(D)
    rows = min(B, max_rollouts)
    D = D[:rows, :rows]
    lengths = trace.lengths[:rows].numpy()
    shared = np.minimum(lengths[:, None], lengths[None, :])
    answers = trace.meta.get("answers") or [None] * B
    ans = [_esc(analysis.NO_ANSWER if a is None else str(a) or analysis.EMPTY_ANSWER) for a in answers[:rows]]
    text = np.array([[f"rollouts {a} and {b}<br>mean distance {D[a, b]:.3f} over {shared[a, b]} shared steps<br>"
                      f"answers {ans[a]} / {ans[b]}" for b in range(rows)] for a in range(rows)], dtype=object)
    ref = analysis.noise_only_distance(trace)
    off = D[~np.eye(rows, dtype=bool)]
    notes = ["mean ‖x_a,t − x_b,t‖ over the CoT steps both rollouts reached" + (
             f"; mean over pairs {np.nanmean(off):.2f}" if off.size and np.isfinite(off).any() else ""),
             f"noise alone would put two rollouts that mix the same tokens ≈ σ√(2d) = {ref:.2f} apart" if ref
             else "no noise in this mode: rollouts differ only where their mixtures differ"]
    if rows < B:
        notes.append(f"showing the first {rows} of {B} rollouts")
    fig = go.Figure(go.Heatmap(z=D, x=np.arange(rows), y=np.arange(rows), text=text, coloraxis="coloraxis",
                               hovertemplate="%{text}<extra></extra>", hoverongaps=False))
    main = title or f"Distance between rollouts' fed-input trajectories — {analysis.trace_label(trace)}, {B} rollouts"
    _head(fig, main, notes)
    fig.update_layout(template=TEMPLATE, height=max(380, 160 + 14 * rows),
                      coloraxis=dict(colorscale="Magma", reversescale=True, cmin=0,
                                     colorbar=dict(title=dict(text="mean L2<br>distance", side="right"))))
    ticks = _rollout_ticks(trace, rows)
    fig.update_xaxes(title_text="rollout", **{k: v for k, v in ticks.items() if k != "ticktext"},
                     **({"ticktext": [str(b) for b in range(rows)]} if ticks else {}))
    fig.update_yaxes(title_text="rollout: final answer" if ticks else "rollout", autorange="reversed", **ticks)
    return fig


def projection(traces: Mapping[str, Trace] | Trace, color_by: str = "mode", method: str = "pca", *,
               max_points: int | None = None, seed: int = 0, title: str | None = None):
    """2-D projection (PCA, or UMAP when asked) of every fed CoT input, one point per rollout and step.

    Args:
        traces: label -> Trace (needs TraceConfig(keep_inputs=True)); all share one projection.
        color_by: "mode" (one colour per label), "rollout" or "step" (a colour scale; one marker symbol per mode).
        method: "pca" (fast) or "umap" (slow on CPU; imported lazily).
        max_points: above this many points a random subset is shown (default 10 000 PCA, 3 000 UMAP).
    Returns: a Figure with one Scattergl per mode, named by its label; customdata columns: rollout, step,
        shadow token, nearest token.
    """
    if color_by not in ("mode", "rollout", "step"):
        raise ValueError(f"color_by must be 'mode', 'rollout' or 'step', got {color_by!r}")
    go = _go()
    traces = analysis.as_trace_dict(traces)
    table, info = analysis.project_inputs(traces, method, max_points, seed, return_info=True)
    total, shown = info["total"], info["shown"]
    colours = _colours(list(traces))
    data = []
    for i, lb in enumerate(traces):
        sel = table["mode"] == lb
        if color_by == "mode":
            marker = dict(color=colours[lb], size=5, opacity=0.7)
        else:
            marker = dict(color=table[color_by][sel], coloraxis="coloraxis", size=5, opacity=0.75,
                          symbol=_SYMBOLS[i % len(_SYMBOLS)])
        data.append(go.Scattergl(x=table["x"][sel], y=table["y"][sel], mode="markers", name=lb, marker=marker,
                                 customdata=np.stack([table["rollout"][sel], table["step"][sel], table["token"][sel],
                                                      table["nearest"][sel]], -1),
                                 hovertemplate=(f"<b>{_esc(lb)}</b><br>rollout %{{customdata[0]}} · step "
                                                "%{customdata[1]}<br>shadow token %{customdata[2]}<br>nearest token "
                                                "%{customdata[3]}<extra></extra>")))
    fig = go.Figure(data)
    name = {"pca": "PCA", "umap": "UMAP"}[method]
    notes = ["one point per rollout and CoT step; hard tokens sit exactly on vocabulary embeddings"]
    if shown < total:
        notes.append(f"showing a random {shown:,} of {total:,} inputs")
    if color_by != "mode":
        notes[0] += " · marker symbol = mode"
    _head(fig, title or f"Fed CoT inputs in 2-D ({name}), coloured by {color_by}", notes)
    legend = dict(title=dict(text="mode"), itemsizing="constant")
    if color_by != "mode":  # the colour bar takes the right side
        legend.update(orientation="h", y=-0.15)
        step = color_by == "step"
        fig.update_layout(coloraxis=dict(colorscale="Viridis" if step else "Turbo",
                                         colorbar=dict(title=dict(text="CoT step" if step else "rollout"))))
    fig.update_layout(template=TEMPLATE, height=520, legend=legend)
    share = info["explained"] or [None, None]
    for i, axis in enumerate((fig.update_xaxes, fig.update_yaxes)):
        axis(title_text=f"PC {i + 1} ({share[i]:.0%} of the variance)" if method == "pca" else f"UMAP {i + 1}")
    return fig


def pass_at_k(curves: Mapping[str, Mapping[int, float]], *, title: str | None = None):
    """pass@k against k (log scale), one line per mode. Values are fractions in [0, 1] (unbiased estimator,
    see analysis.pass_at_k_curve)."""
    go = _go()
    if not curves:
        raise ValueError("curves is empty: give {label: {k: pass@k}}")
    colours = _colours(list(curves))
    data, ks = [], set()
    for lb, c in curves.items():
        k = sorted(int(x) for x in c)
        ks |= set(k)
        data.append(go.Scatter(x=k, y=[float(c[x]) for x in k], mode="lines+markers", name=lb,
                               line=dict(color=colours[lb]),
                               hovertemplate=f"<b>{_esc(lb)}</b><br>pass@%{{x}} = %{{y:.1%}}<extra></extra>"))
    fig = go.Figure(data)
    _head(fig, title or "pass@k: chance that at least one of k samples is correct",
          ["unbiased estimator from n samples per problem (Chen et al. 2021), mean over problems"])
    fig.update_layout(template=TEMPLATE, height=400)
    ks = sorted(ks)
    fig.update_xaxes(title_text="k (samples)", type="log", tickmode="array", tickvals=ks, ticktext=[str(k) for k in ks])
    fig.update_yaxes(title_text="pass@k", tickformat=".0%", range=[0, 1.02])
    return fig


# ---- 4. training ---------------------------------------------------------------------------------------------

def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last `window` values (fewer at the start)."""
    c = np.cumsum(np.concatenate([[0.0], values]))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def training_curves(runs: Mapping[str, Sequence[Mapping]] | Sequence[Mapping],
                    panels: Mapping[str, str] = TRAINING_PANELS, smooth: int = 5, title: str = "RL fine-tuning", *,
                    fig=None):
    """Curves of train()'s metrics, one panel per metric, one colour per run. Cheap to rebuild as runs grow.

    Args:
        runs: run label -> list of per-step metric dicts (as yielded by train() or read from metrics.jsonl); a bare
            list is one run. Lists may grow between calls: call again to refresh a live plot.
        panels: metric -> axis title; metrics a run lacks at a step are skipped (validation is periodic).
        smooth: trailing moving-average window for per-step metrics (raw values are shown faint).
        fig: a figure returned by an earlier call (e.g. a go.FigureWidget on screen in Jupyter): it is updated in
            place, keeping the user's zoom, and returned.
    Returns: a plotly Figure with len(panels) subplots sharing the step axis.
    """
    go = _go()
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    if not isinstance(runs, Mapping):
        runs = {"run": runs}
    keys = list(panels)
    new = make_subplots(rows=1, cols=len(keys), subplot_titles=[panels[k] for k in keys], horizontal_spacing=0.06)
    for i, (label, metrics) in enumerate(runs.items()):
        colour = qualitative.Plotly[i % len(qualitative.Plotly)]
        metrics = list(metrics)  # a snapshot: the list may grow while we read it
        in_legend = False  # the run's legend entry goes with its first curve (it may lack the first panel's metric)
        for col, key in enumerate(keys, start=1):
            pts = [(m["step"], m[key]) for m in metrics if m.get(key) is not None and "step" in m]
            if not pts:
                continue
            steps, values = zip(*pts)
            values = np.asarray(values, dtype=np.float64)
            periodic = key.startswith("val/")
            if not periodic and smooth > 1:
                new.add_trace(go.Scatter(x=steps, y=values, mode="lines", line=dict(color=colour, width=1),
                                         opacity=0.25, showlegend=False, hoverinfo="skip",
                                         uid=f"run{i}-panel{col}-raw"),
                              row=1, col=col)
                values = _moving_average(values, smooth)
            new.add_trace(go.Scatter(x=steps, y=values, mode="lines+markers" if periodic else "lines",
                                     name=label, legendgroup=label, showlegend=not in_legend, uid=f"run{i}-panel{col}",
                                     line=dict(color=colour, width=2),
                                     hovertemplate=f"{label}<br>step %{{x}}<br>{key} %{{y:.3f}}<extra></extra>"),
                          row=1, col=col)
            in_legend = True
            new.update_xaxes(title_text="step", row=1, col=col)
    new.update_layout(title=title, height=360, width=330 * len(keys), template=TEMPLATE, uirevision="training",
                      legend=dict(orientation="h", y=-0.25))
    if fig is None:
        return new
    with fig.batch_update():
        if [(t.uid, t.name) for t in fig.data] == [(t.uid, t.name) for t in new.data]:  # same curves: new points only
            for old, t in zip(fig.data, new.data):
                old.x, old.y = t.x, t.y
        else:
            fig.data = []
            fig.add_traces(list(new.data))
            fig.layout = new.layout
    return fig


# ---- 5. side by side -------------------------------------------------------------------------------------------

_AXIS_KEEP = ("title", "type", "range", "autorange", "tickmode", "tickvals", "ticktext", "tickformat", "rangemode",
              "categoryorder", "categoryarray")


def side_by_side(fn: Callable, traces: Mapping[str, Trace], *, title: str | None = None, **kw):
    """Any per-trace figure (entropy_heatmap, mixture_topk, noise_shift, trajectory_distance_heatmap, ...) for
    several modes in one row of subplots, with shared axes and one shared colour scale.

    Args:
        fn: a function (trace, **kw) -> Figure whose panels are stacked in one column and share their x axis.
        traces: label -> Trace; one column per label, titled by it.
        **kw: passed to fn.
    Returns: a Figure with len(traces) columns (times fn's rows); every x axis is linked to the top-left one and
        every y axis to the first column's in its row, so the same step or value lines up across modes.
    """
    from plotly.subplots import make_subplots

    traces = analysis.as_trace_dict(traces)
    figs = {lb: fn(tr, **kw) for lb, tr in traces.items()}
    first = next(iter(figs.values()))
    if not hasattr(first, "layout") or not hasattr(first, "data"):
        raise ValueError(f"side_by_side needs a function that returns a plotly Figure; "
                         f"{getattr(fn, '__name__', fn)} returned a {type(first).__name__}")
    R, C = len(_axis_rows(first)), len(figs)
    grid = make_subplots(rows=R, cols=C, column_titles=[_esc(lb) for lb in figs],
                         horizontal_spacing=min(0.09 if _has_y_ticktext(first) else 0.06, 0.3 / C),
                         vertical_spacing=0.1)
    seen_legend, ranges = set(), {}
    for c, (lb, f) in enumerate(figs.items(), start=1):
        refs = _axis_rows(f)
        rows = {ref: r for r, ref in enumerate(refs, start=1)}
        for t in f.data:
            r = rows.get((t.xaxis or "x", t.yaxis or "y"), 1)
            t = type(t)(t)  # a copy
            key = (t.name, t.legendgroup)
            if t.showlegend is not False and key in seen_legend:
                t.showlegend = False
            seen_legend.add(key)
            grid.add_trace(t, row=min(r, R), col=c)
        for r, (xr, yr) in enumerate(refs[:R], start=1):
            for axis, ref in (("xaxis", xr), ("yaxis", yr)):
                src = f.layout[axis + ref[1:]]
                props = {k: src[k] for k in _AXIS_KEEP if src[k] is not None}
                dst = grid.layout[axis + _suffix(r, c, C)]
                dst.update(props)
                group = "x" if axis == "xaxis" else f"y{r}"
                if src.range is not None:
                    ranges.setdefault(group, []).append(tuple(src.range))
                if axis == "xaxis":  # every x axis follows the top-left one: steps line up across modes and rows
                    dst.matches = None if (r, c) == (1, 1) else "x"
                    if r < R:
                        dst.title = None
                else:  # y axes follow the first column's, row by row
                    dst.matches = None if c == 1 else "y" + _suffix(r, 1, C)
                    if c > 1:
                        dst.title = None
                        dst.showticklabels = "ticktext" in props  # each mode's own rollout answers stay readable
    for group, rs in ranges.items():  # linked axes show the union of the panels' ranges
        flip = rs[0][0] > rs[0][1]
        lo, hi = min(min(r) for r in rs), max(max(r) for r in rs)
        union = [hi, lo] if flip else [lo, hi]
        for r in range(1, R + 1):
            for c in range(1, C + 1):
                if group == "x":
                    grid.layout["xaxis" + _suffix(r, c, C)].range = union
                elif group == f"y{r}":
                    grid.layout["yaxis" + _suffix(r, c, C)].range = union
    _share_colour_axis(grid, figs)
    _head(grid, (title or _plain_title(first).split(" — ")[0]) + " — side by side", _merge_notes(figs),
          subplot_titles=True)
    grid.update_layout(template=TEMPLATE, height=first.layout.height or 450, barmode=first.layout.barmode,
                       bargap=first.layout.bargap, legend=first.layout.legend, uniformtext=first.layout.uniformtext)
    return grid


def _has_y_ticktext(fig) -> bool:
    return any(k.startswith("yaxis") and v.get("ticktext") for k, v in fig.layout.to_plotly_json().items())


def _merge_notes(figs: dict) -> list[str]:
    """Notes every figure shares, once; the others prefixed with their figure's label."""
    per = {lb: _title_notes(f) for lb, f in figs.items()}
    common = [n for n in next(iter(per.values())) if all(n in v for v in per.values())]
    return common + [f"{_esc(lb)}: {n}" for lb, v in per.items() for n in v if n not in common]


def _suffix(r: int, c: int, C: int) -> str:
    i = (r - 1) * C + c
    return "" if i == 1 else str(i)


def _axis_rows(fig) -> list[tuple[str, str]]:
    """The (xref, yref) pairs of a one-column figure's panels, top to bottom (from its layout's y axes)."""
    lay = fig.layout.to_plotly_json()
    pairs = []
    for key in lay:
        if key.startswith("yaxis"):
            y = "y" + key[5:]
            dom = lay[key].get("domain", [0, 1])
            pairs.append((-dom[1], (lay[key].get("anchor") or "x" + key[5:], y)))
    if not pairs:
        return [("x", "y")]
    return [p for _, p in sorted(pairs)]


def _share_colour_axis(grid, figs) -> None:
    ca = next(iter(figs.values())).layout.coloraxis
    if ca is None or (ca.colorscale is None and ca.colorbar.title.text is None):
        return
    lo, hi = [], []
    for f in figs.values():
        c = f.layout.coloraxis
        if c.cmin is not None:
            lo.append(c.cmin)
        if c.cmax is not None:
            hi.append(c.cmax)
    grid.update_layout(coloraxis=ca.to_plotly_json())
    if lo:
        grid.layout.coloraxis.cmin = min(lo)
    if hi:
        grid.layout.coloraxis.cmax = max(hi)


def _plain_title(fig) -> str:
    return (fig.layout.title.text or "").split("<br>")[0]


def _title_notes(fig) -> list[str]:
    return [line for a in fig.layout.annotations if a.name == "notes" for line in (a.text or "").split("<br>")]


# ---- the train × inference matrix (softviz.matrix) ---------------------------------------------------------

def matrix_pass_at_k(summary: Mapping, ks: Sequence[int] = (1, 32)):
    """Grouped bars of the matrix: one panel per k, inference settings on the x axis, one bar per training
    (mean over seeds, error bar = std). Greedy settings appear in the k = 1 panel only."""
    go = _go()
    from plotly.subplots import make_subplots

    table = summary["table"]
    trains = list(table)
    settings = summary["config"]["settings"]
    fig = make_subplots(rows=1, cols=len(ks), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[f"pass@{k}" for k in ks])
    colours = _colours(trains)
    for c, k in enumerate(ks, start=1):
        xs = [s for s in settings if k == 1 or not s.endswith("-greedy")]
        for train in trains:
            cells = [table[train].get(s, {}).get(f"pass@{k}") for s in xs]
            fig.add_trace(go.Bar(
                x=[s.replace("-greedy", " greedy").replace("hard", "hard").strip() for s in xs],
                y=[100 * v[0] if v else None for v in cells],
                error_y=dict(type="data", array=[100 * v[1] if v else 0 for v in cells], visible=True),
                name=f"{train} training" if train != "base" else "base model", legendgroup=train,
                showlegend=c == 1, marker_color=colours[train] if train != "base" else "#9e9e9e",
                customdata=[[v[2] if v else 0] for v in cells],
                hovertemplate=f"{_esc(train)}: %{{x}}<br>pass@{k} %{{y:.1f}}%<br>seeds %{{customdata[0]}}<extra></extra>"),
                row=1, col=c)
        fig.update_xaxes(title_text="inference setting", row=1, col=c)
    fig.update_yaxes(title_text="% of test problems", row=1, col=1)
    seeds = len(summary["config"]["seeds"])
    _head(fig, "Train × inference on the test split (the paper's Table 1 and Tables 3-5)",
          [f"bars: mean over {seeds} seed(s), error bars: std; greedy = argmax tokens or σ = 0 at the mode's τ; "
           f"sample = τ with noise; {summary['config']['problems']} problems, {summary['config']['samples']} samples"],
          subplot_titles=True)
    fig.update_layout(barmode="group", template="plotly_white", height=440, width=520 * len(ks),
                      legend=dict(orientation="h", y=-0.22))
    return fig


def matrix_entropy_profiles(summary: Mapping):
    """Mean entropy of p per CoT position under hard sampling, one line per training (the paper's Fig. 4)."""
    go = _go()
    profiles = summary["entropy_profiles"]
    colours = _colours(list(profiles))
    fig = go.Figure()
    for train, prof in profiles.items():
        fig.add_trace(go.Scatter(x=list(range(len(prof))), y=prof, mode="lines",
                                 name=f"{train} training" if train != "base" else "base model",
                                 line=dict(color=colours[train] if train != "base" else "#9e9e9e", width=2,
                                           dash="dash" if train == "base" else "solid"),
                                 hovertemplate=f"{_esc(train)}<br>step %{{x}}<br>entropy %{{y:.3f}} nats<extra></extra>"))
    notes = ["mean entropy of p over all test rollouts that reach each step (cf. the paper's Fig. 4)"]
    lengths = summary.get("mean_cot_length") or {}
    if lengths:  # past ~1.6x the mean CoT length few rollouts remain and the mean is noise: zoom in (pan to see it)
        last = round(1.6 * max(lengths.values()))
        fig.update_xaxes(range=[0, last])
        top = max((max(p[: last + 1]) for p in profiles.values() if p), default=1.0)
        fig.update_yaxes(range=[0, 1.15 * top])
        notes.append(f"shown up to 1.6x the mean CoT length ({max(lengths.values()):.0f} tokens); "
                     "later steps are reached by few rollouts")
    _head(fig, "CoT entropy per position after training (hard sampling, τ = 1)", notes)
    fig.update_layout(template="plotly_white", height=400, width=760, xaxis_title="CoT step",
                      yaxis_title="entropy of p (nats)", legend=dict(orientation="h", y=-0.25))
    return fig
