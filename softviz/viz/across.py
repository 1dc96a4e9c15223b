"""Figures across rollouts and modes: distinct final answers, distances between rollouts' fed inputs, a 2-D
projection of every fed input, and pass@k curves."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from softviz import analysis
from softviz.trace import Trace
from softviz.viz.style import (template, _SYMBOLS, _colours, _esc, _go, _head, _one_trace, _rollout_ticks,
                               _short)


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
    fig.update_layout(barmode="group", template=template(), height=460)
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
    fig.update_layout(template=template(), height=max(380, 160 + 14 * rows),
                      coloraxis=dict(colorscale="Magma", reversescale=True, cmin=0,
                                     colorbar=dict(title=dict(text="mean L2<br>distance", side="right"))))
    ticks = _rollout_ticks(trace, rows)
    fig.update_xaxes(title_text="rollout", **{k: v for k, v in ticks.items() if k != "ticktext"},
                     **({"ticktext": [str(b) for b in range(rows)]} if ticks else {}))
    fig.update_yaxes(title_text="rollout: final answer" if ticks else "rollout", autorange="reversed", **ticks)
    return fig


SVG_POINTS = 3000  # projection(): at most this many points drawn as SVG, more with WebGL


def projection(traces: Mapping[str, Trace] | Trace, color_by: str = "mode", method: str = "pca", *,
               max_points: int | None = None, seed: int = 0, title: str | None = None):
    """2-D projection (PCA, or UMAP when asked) of every fed CoT input, one point per rollout and step.

    Args:
        traces: label -> Trace (needs TraceConfig(keep_inputs=True)); all share one projection.
        color_by: "mode" (one colour per label), "rollout" or "step" (a colour scale; one marker symbol per mode).
        method: "pca" (fast) or "umap" (slow on CPU; imported lazily).
        max_points: above this many points a random subset is shown (default 10 000 PCA, 3 000 UMAP).
    Returns: a Figure with one scatter trace per mode, named by its label (SVG Scatter up to SVG_POINTS points in
        all, WebGL Scattergl above); customdata columns: rollout, step, shadow token, nearest token.
    """
    if color_by not in ("mode", "rollout", "step"):
        raise ValueError(f"color_by must be 'mode', 'rollout' or 'step', got {color_by!r}")
    go = _go()
    traces = analysis.as_trace_dict(traces)
    table, info = analysis.project_inputs(traces, method, max_points, seed, return_info=True)
    total, shown = info["total"], info["shown"]
    colours = _colours(list(traces))
    data = []
    # WebGL pays off only for thousands of points: without a GPU (a headless or remote browser) the browser
    # renders it in software, and a comparison's ~500 points took 160-700 ms to draw against ~15 ms as SVG
    scatter = go.Scatter if shown <= SVG_POINTS else go.Scattergl
    for i, lb in enumerate(traces):
        sel = table["mode"] == lb
        if color_by == "mode":
            marker = dict(color=colours[lb], size=5, opacity=0.7)
        else:
            marker = dict(color=table[color_by][sel], coloraxis="coloraxis", size=5, opacity=0.75,
                          symbol=_SYMBOLS[i % len(_SYMBOLS)])
        data.append(scatter(x=table["x"][sel], y=table["y"][sel], mode="markers", name=lb, marker=marker,
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
    fig.update_layout(template=template(), height=520, legend=legend)
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
    data, ks, drawn = [], set(), {}
    dashes = ["dash", "dot", "dashdot", "longdash"]
    for i, (lb, c) in enumerate(curves.items()):
        k = sorted(int(x) for x in c)
        ks |= set(k)
        y = tuple(round(float(c[x]), 9) for x in k)
        same = drawn.get((tuple(k), y))  # a curve equal to one drawn before would hide it: dashed, and said so
        name = lb if same is None else f"{lb} (= {same})"
        drawn.setdefault((tuple(k), y), lb)
        data.append(go.Scatter(x=k, y=list(y), mode="lines+markers", name=name,
                               line=dict(color=colours[lb], dash=None if same is None else dashes[i % len(dashes)],
                                         width=2 if same is None else 3),
                               marker=dict(symbol=_SYMBOLS[i % len(_SYMBOLS)], size=8),
                               hovertemplate=f"<b>{_esc(name)}</b><br>pass@%{{x}} = %{{y:.1%}}<extra></extra>"))
    fig = go.Figure(data)
    _head(fig, title or "pass@k: chance that at least one of k samples is correct",
          ["unbiased estimator from n samples per problem (Chen et al. 2021), mean over problems"])
    fig.update_layout(template=template(), height=400)
    ks = sorted(ks)
    fig.update_xaxes(title_text="k (samples)", type="log", tickmode="array", tickvals=ks, ticktext=[str(k) for k in ks])
    fig.update_yaxes(title_text="pass@k", tickformat=".0%", range=[0, 1.02])
    return fig
