"""Plotly figures, one function per figure. Takes Traces or metrics, returns a plotly Figure; never touches a model."""

from __future__ import annotations

from typing import Mapping, Sequence

# Metric name -> axis title. Names are train()'s (TRL's where they mean the same).
TRAINING_PANELS = {
    "val/greedy_accuracy": "greedy validation accuracy",
    "reward": "mean reward (100 correct, 10 boxed, 0)",
    "entropy": "CoT entropy of p (nats)",
    "cot/mean_length": "CoT length (tokens)",
}


def training_curves(runs: Mapping[str, Sequence[Mapping]], panels: Mapping[str, str] = TRAINING_PANELS,
                    smooth: int = 5, title: str = "RL fine-tuning"):
    """Curves of train()'s metrics, one panel per metric, one colour per run.

    Args:
        runs: run label -> list of per-step metric dicts (as yielded by train() or read from metrics.jsonl).
        panels: metric -> axis title; metrics a run lacks at a step are skipped (validation is periodic).
        smooth: trailing moving-average window for per-step metrics (raw values are shown faint).
    Returns: a plotly Figure with len(panels) subplots sharing the step axis.
    """
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    keys = list(panels)
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=[panels[k] for k in keys], horizontal_spacing=0.06)
    for i, (label, metrics) in enumerate(runs.items()):
        colour = qualitative.Plotly[i % len(qualitative.Plotly)]
        for col, key in enumerate(keys, start=1):
            pts = [(m["step"], m[key]) for m in metrics if key in m]
            if not pts:
                continue
            steps, values = zip(*pts)
            periodic = key.startswith("val/")
            if not periodic and smooth > 1:
                fig.add_trace(go.Scatter(x=steps, y=values, mode="lines", line=dict(color=colour, width=1),
                                         opacity=0.25, showlegend=False, hoverinfo="skip"), row=1, col=col)
                values = [sum(values[max(0, j - smooth + 1): j + 1]) / len(values[max(0, j - smooth + 1): j + 1])
                          for j in range(len(values))]
            fig.add_trace(go.Scatter(x=steps, y=values, mode="lines+markers" if periodic else "lines",
                                     name=label, legendgroup=label, showlegend=col == 1,
                                     line=dict(color=colour, width=2),
                                     hovertemplate=f"{label}<br>step %{{x}}<br>{key} %{{y:.3f}}<extra></extra>"),
                          row=1, col=col)
            fig.update_xaxes(title_text="step", row=1, col=col)
    fig.update_layout(title=title, height=360, width=330 * len(keys), template="plotly_white",
                      legend=dict(orientation="h", y=-0.25))
    return fig
