"""One rollout step by step: its top-k mixture weights, how far noise and mixing moved the fed input from the
vocabulary, and its CoT as "soft text" HTML."""

from __future__ import annotations

import html
import math

import numpy as np

from softviz import analysis
from softviz.trace import Trace
from softviz.viz.style import (template, RANK_COLOURS, _go, _head, _one_trace, _rollout_title, _token_text,
                               visible)


def _mark_step(fig, step: int | None, rows: int = 1) -> None:
    """A vertical band over CoT step `step` (a shape named "selected"), across `rows` stacked subplots."""
    if step is None:
        return
    for r in range(1, rows + 1):
        fig.add_vrect(x0=step - 0.5, x1=step + 0.5, fillcolor="#E45756", opacity=0.18, line_width=0, layer="below",
                      name="selected", row=r if rows > 1 else None, col=1 if rows > 1 else None)


def mixture_topk(trace: Trace, rollout: int = 0, *, k: int | None = None, max_steps: int = 256,
                 token_row: bool | None = None, title: str | None = None, selected_step: int | None = None,
                 bar_labels: bool = True):
    """The mixture's top-k tokens and their weights at each CoT step of one rollout, as stacked bars.

    Rank 1 is at the bottom of each bar; the grey top is the weight left to the rest of the vocabulary. For hard
    tokens the bars are the sampling distribution and the fed token is the sampled one (the shadow token).
    Returns: a Figure with one Bar trace per rank ("rank 1", ...) and one "rest of vocabulary" trace;
    their y values at a step sum to 1. token_row: write the fed (shadow) tokens above the bars (default: up to 64
    steps). selected_step: shade that step. bar_labels: write each token inside its bar (weight ≥ 0.12).
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
    what = trace.weights_name
    hard = what == "probability"  # each input was one sampled token's embedding
    data = []
    for j in range(k):
        label = np.where(w[:, j] >= 0.12, toks[:, j], "") if bar_labels else None
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
    notes = [f"each bar is one CoT step: its {k} largest mixture weights stacked (rank 1 at the bottom"
             + (", labelled when ≥ 0.12" if bar_labels else "") + "); grey: the rest of the vocabulary",
             f"text above the bars: {fed} · ␣ marks a space" if row else f"hover shows {fed} · ␣ marks a space"]
    if hard:
        tau = trace.meta.get("mode", {}).get("cot_temperature", "?")
        notes.append(f"the bars are the sampling distribution p (τ = {tau}) from which the hard token is sampled "
                     "and fed")
    if shown < n:
        notes.append(f"showing the first {shown} of {n} steps")
    _head(fig, title or f"Top-{k} mixture weights per CoT step — {title_rollout}", notes)
    fig.update_layout(barmode="stack", bargap=0.08, template=template(), height=500,
                      uniformtext=dict(minsize=8, mode="hide"),
                      legend=dict(traceorder="normal", orientation="h", y=-0.18))
    _mark_step(fig, selected_step)
    fig.update_xaxes(title_text="CoT step")
    fig.update_yaxes(title_text=f"mixture {what}" if not hard else "probability", range=[0, 1.11 if row else 1.0],
                     tickvals=[0, 0.2, 0.4, 0.6, 0.8, 1.0])
    return fig


def noise_shift(trace: Trace, rollout: int = 0, *, max_steps: int = 512, title: str | None = None,
                selected_step: int | None = None):
    """How far the noise (and the mixing) moved the fed input from the vocabulary, at each CoT step of one rollout.

    Top: cosine of the fed input to its nearest vocabulary token (1 = exactly a token's embedding), and to the
    shadow token when it is among the nearest; markers say whether the nearest token is the shadow token.
    Bottom: the shadow token's rank among the fed input's nearest tokens (1 = nearest).
    selected_step: shade that step in both panels.
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
    hard = trace.weights_name == "probability"  # every input was one token's embedding
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
    fig.update_layout(template=template(), height=520, legend=dict(orientation="h", y=-0.14))
    low = float(np.nanmin(top1)) if n and np.isfinite(top1).any() else 1.0
    span = {"range": [min(0.5, math.floor(10 * low - 1) / 10), 1.03]} if cosine else {}
    fig.update_yaxes(title_text=metric, row=1, col=1, **span)
    fig.update_yaxes(title_text="rank (1 = nearest)", range=[kn + 1.5, 0.5], tickmode="array", row=2, col=1,
                     tickvals=list(range(1, kn + 2)), ticktext=[str(r) for r in range(1, kn + 1)] + [f"> {kn}"])
    _mark_step(fig, selected_step, rows=2)
    fig.update_xaxes(title_text="CoT step", row=2, col=1)
    fig.update_xaxes(zeroline=False)
    return fig


def soft_text_html(trace: Trace, rollout: int = 0, k: int = 3, *, max_steps: int = 512,
                   branch_points: bool = True, selected_step: int | None = None) -> str:
    """The CoT of one rollout as "soft text": each step a column of its top-k tokens, darker where the weight is larger.

    Tokens mixed with weight 0 (fuzzy's ranks 2-3, a Dirichlet draw's) are left out. branch_points: an orange bar
    over the steps softviz.analysis.branch_points finds; selected_step: that step outlined in red. All token text is
    HTML-escaped; hovering a step shows its weights. Returns an HTML fragment (no scripts) for gr.HTML or
    IPython.display.HTML.
    """
    _one_trace(trace)
    head = _rollout_title(trace, rollout)
    n = min(int(trace.lengths[rollout]), max_steps)
    k = max(1, min(k, trace.topk_ids.shape[-1]))
    ids, w = trace.topk_ids[rollout, :n, :k].tolist(), trace.topk_weights[rollout, :n, :k].tolist()
    shadow = trace.tokens[rollout, :n].tolist()
    bp = analysis.branch_points(trace) if branch_points else None
    branch = (bp["uncertain"] | bp["blended"])[rollout] if bp is not None else np.zeros(n, dtype=bool)
    cells = []
    for t in range(n):
        strs = [trace.token_strings.get(i, f"<{i}>") for i in ids[t]]
        kept = [(j, s, p) for j, (s, p) in enumerate(zip(strs, w[t])) if j == 0 or p >= 5e-4]
        tip = html.escape(f"step {t}{' (branch point)' if branch[t] else ''}: "
                          + ", ".join(f"{visible(s)} {p:.3f}" for _, s, p in kept), quote=True)
        rows = []
        for j, s, p in kept:
            shown = html.escape(visible(s) if not s.strip() or "\ufffd" in s else s)
            colour = "#fff" if p > 0.55 else "#111"
            border = "border-bottom:2px solid #1f3f66;" if ids[t][j] == shadow[t] else ""
            rows.append(f"<span style=\"white-space:pre;padding:0 2px;background:rgba(31,119,180,{p:.3f});"
                        f"color:{colour};opacity:{0.35 + 0.65 * p:.3f};{border}\">{shown}</span>")
        frame = ("outline:2px solid #E45756;" if t == selected_step else "") + \
            ("border-top:3px solid #F58518;" if branch[t] else "border-top:3px solid transparent;")
        cells.append(f"<span title=\"{tip}\" data-step=\"{t}\" style=\"display:inline-flex;flex-direction:column;"
                     f"margin:0 1px 4px 0;border-left:1px solid #eee;{frame}\">{''.join(rows)}</span>")
    note = f" (first {n} of {int(trace.lengths[rollout])} steps)" if n < int(trace.lengths[rollout]) else ""
    return ("<div class=\"softviz-soft-text\" style=\"font-family:ui-monospace,Menlo,monospace;font-size:13px;"
            "line-height:1.25\"><div style=\"font-family:sans-serif;margin-bottom:4px\">"
            f"<b>Soft text</b> — {head}{note}: each column is a CoT step with its top-{k} tokens, darker = larger "
            "weight, underlined = shadow token" + (", orange bar = branch point" if branch.any() else "")
            + (f", red outline = step {selected_step}" if selected_step is not None else "")
            + "; hover a column for its weights.</div>"
            f"<div style=\"display:flex;flex-wrap:wrap;align-items:flex-start\">{''.join(cells)}</div></div>")
