"""Figures of the train × inference matrix: pass@k bars and entropy profiles per training, drawn from the
summary dict that softviz.matrix.summarize returns (this module does not import softviz.matrix)."""

from __future__ import annotations

from typing import Mapping, Sequence

from softviz.viz.style import template, _colours, _esc, _go, _head


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
                x=[s.replace("-greedy", " greedy") for s in xs],
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
    fig.update_layout(barmode="group", template=template(), height=440, width=520 * len(ks),
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
    fig.update_layout(template=template(), height=400, width=760, xaxis_title="CoT step",
                      yaxis_title="entropy of p (nats)", legend=dict(orientation="h", y=-0.25))
    return fig
