"""Live curves of train()'s metrics: one panel per metric, one colour per run, updated in place."""

from __future__ import annotations

import math

from typing import Mapping, Sequence

import numpy as np

from softviz.viz.style import template, _go

# Metric name -> axis title. Names are train()'s (TRL's where they mean the same).
TRAINING_PANELS = {
    "val/greedy_accuracy": "greedy validation accuracy",
    "reward": "mean reward (100 correct, 10 boxed, 0)",
    "entropy": "CoT entropy of p (nats)",
    "cot/mean_length": "CoT length (tokens)",
}


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
            # steps are whole numbers: no tick at 0.5 or 1.5 when a run has only a few
            new.update_xaxes(title_text="step", row=1, col=col, tick0=0, tickformat="d",
                             dtick=max(1, math.ceil(max(steps) / 8)) if steps else 1)
    new.update_layout(title=title, height=360, width=330 * len(keys), template=template(), uirevision="training",
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


MIN_BAND_SEEDS = 3  # with 2 seeds a 95% t-interval is ±12.7 standard deviations: drawn, it hides the curves


def method_curves(summary: Mapping, title: str | None = None, gain: bool = False):
    """Learning curves of `softviz methods` (softviz.methods.summarize): per method the mean greedy validation
    accuracy over seeds at each evaluated step, with its 95% t-interval as a band (from MIN_BAND_SEEDS seeds,
    clipped to 0-100%). `gain`: each run's accuracy minus its own step 0 (points), which removes the seeds'
    different starting points (each seed validates on its own problems) from the band; not clipped."""
    go = _go()
    from plotly.colors import qualitative

    from softviz.viz.style import MODE_COLOURS

    fig = go.Figure()
    validation = summary["config"]["validation"]
    title = title or ("Greedy validation gain while training, per method" if gain else
                      "Greedy validation while training, per method")
    for i, (method, e) in enumerate(summary["methods"].items()):
        curve = e.get("gain_curve" if gain else "curve")
        if not curve:
            continue
        colour = MODE_COLOURS.get(method, qualitative.Plotly[i % len(qualitative.Plotly)])
        steps = list(curve["step"])
        mean = np.array([m for m, _ in curve["mean_ci"]]) * 100
        half = np.array([h for _, h in curve["mean_ci"]]) * 100
        n = len(e["seeds"])
        label = f"{method} (lr {e['learning_rate']:g}, {n} seed{'s' if n > 1 else ''})"
        if n >= MIN_BAND_SEEDS:
            hi, lo = (mean + half, mean - half) if gain else (np.minimum(mean + half, 100), np.maximum(mean - half, 0))
            fig.add_trace(go.Scatter(x=steps + steps[::-1], y=list(hi) + list(lo[::-1]),
                                     fill="toself", fillcolor=colour, opacity=0.15, line=dict(width=0),
                                     hoverinfo="skip", showlegend=False, legendgroup=method))
        fig.add_trace(go.Scatter(x=steps, y=mean, mode="lines+markers", name=label, legendgroup=method,
                                 line=dict(color=colour, width=2), customdata=half,
                                 hovertemplate=f"{method}<br>step %{{x}}<br>{validation} "
                                               f"{'gain %{y:+.1f} points' if gain else 'accuracy %{y:.1f}%'} "
                                               "± %{customdata:.1f}<extra></extra>"))
    fig.update_layout(title=dict(text=f"{title}<br><sup>{validation} validation on {summary['config']['eval_size']} "
                                      f"problems; mean over seeds, band: 95% t-interval (from {MIN_BAND_SEEDS} seeds)</sup>"),
                      template=template(), height=440, width=760, legend=dict(orientation="h", y=-0.2),
                      xaxis_title="RL step", yaxis_title="greedy validation gain (points)" if gain else
                      "greedy validation accuracy (%)")
    if gain:
        fig.add_hline(y=0, line=dict(color="#888", width=1, dash="dot"))
    return fig
