"""The Explore tab's handlers: open a Trace (an uploaded file, or a mode of the last comparison) and walk it rollout
by rollout and step by step (OpenedTrace, ExploreView, StepView)."""

from __future__ import annotations

import dataclasses
import html
import os
from pathlib import Path
from typing import Any

import gradio as gr

from softviz import Trace, viz

from .checks import clamped, visitor_errors
from .session import Session
from .settings import Settings
from .views import Outputs, accuracy, nested, responsive, rollout_figures


@dataclasses.dataclass
class StepView(Outputs):
    """One CoT step of the explored trace."""

    text: Any  # markdown: the shadow token, entropy and noise at this step
    table: Any  # rows: rank, mixed token, weight, nearest token of the fed input, its score


@dataclasses.dataclass
class StepChange(Outputs):
    """What Explore's step slider redraws: the soft text (the step outlined) and the step's text and table. The
    figures keep their rollout (they mark the step when the rollout or a Compare selection opens it)."""

    soft_text: Any
    step: StepView = nested(StepView)


@dataclasses.dataclass
class ExploreView(Outputs):
    """One rollout of the explored trace, and one of its steps."""

    soft_text: Any  # HTML
    entropy_heatmap: Any  # of every rollout
    mixture: Any
    noise: Any
    step: StepView = nested(StepView)


@dataclasses.dataclass
class OpenedTrace(Outputs):
    """What opening a trace sets: its summary, the sliders' ranges, and its first rollout and step."""

    summary: Any  # markdown
    rollout_slider: Any  # gr.Slider updates
    step_slider: Any
    view: ExploreView = nested(ExploreView)


def step_table(trace: Trace, rollout: int, step: int) -> list[list]:
    """Rows for one step: rank, mixed token, its weight, nearest vocabulary token of the fed input, its score."""
    k = trace.topk_ids.shape[-1]
    kn = trace.nearest_ids.shape[-1]
    mixed = trace.decode(trace.topk_ids[rollout, step])
    near = trace.decode(trace.nearest_ids[rollout, step]) if kn else []
    rows = []
    for i in range(max(k, kn)):
        rows.append([i + 1, repr(mixed[i]) if i < k else "",
                     f"{float(trace.topk_weights[rollout, step, i]):.4g}" if i < k else "",
                     repr(near[i]) if i < kn else "",
                     f"{float(trace.nearest_scores[rollout, step, i]):.4g}" if i < kn else ""])
    return rows


def explore_summary(trace: Trace) -> str:
    meta = trace.meta
    prompts = meta.get("prompts") or ["?"]
    gold = (meta.get("golds") or [None])[0]
    acc = accuracy(trace)
    return (f"**{meta.get('mode_label', '?')}** on model {html.escape(str(meta.get('model')))} · seed "
            f"{meta.get('seed')} · {trace.num_rollouts} rollouts × up to {trace.num_steps} CoT steps"
            + (f" · {acc[0]}/{acc[1]} correct" if acc else "") + f"  \n**Prompt:** {html.escape(prompts[0])}"
            + (f" (+{len(prompts) - 1} more)" if len(prompts) > 1 else "")
            + (f"  \n**Gold:** {html.escape(str(gold))}" if gold else ""))


def explore_step(rollout, step, session: Session) -> StepView:
    """One step of the explored trace (rollout and step moved into range)."""
    trace = session.explore
    if trace is None:
        raise ValueError("open a trace first: upload a .safetensors file or pick one from your last comparison")
    b = clamped("rollout", rollout, 0, trace.num_rollouts - 1)
    length = int(trace.lengths[b])
    if length == 0:
        return StepView(f"Rollout {b} has no CoT steps.", [])
    t = clamped("CoT step", step, 0, length - 1)
    tau = trace.mode.cot_temperature
    return StepView(f"**Step {t}** of rollout {b} ({length} steps): shadow token "
                    f"{trace.decode([trace.tokens[b, t]])[0]!r} · entropy of p at τ = 1 (the model's own "
                    f"uncertainty) {float(trace.entropy[b, t]):.3f} nats · the weights below are the mode's, at "
                    f"τ = {tau:g} · noise ‖σε‖ {float(trace.noise_norm[b, t]):.3f}", step_table(trace, b, t))


def explore_view(rollout, step, session: Session) -> ExploreView:
    """One rollout of the explored trace (its soft text and figures) and one of its steps."""
    at = explore_step(rollout, step, session)
    trace = session.explore
    b = clamped("rollout", rollout, 0, trace.num_rollouts - 1)
    t = clamped("CoT step", step, 0, max(int(trace.lengths[b]) - 1, 0)) if int(trace.lengths[b]) else None
    one = rollout_figures(trace, b, step=t)
    heat = viz.entropy_heatmap(trace, branch_points=True, selected=None if t is None else (b, t))
    return ExploreView(soft_text=one.soft_text, entropy_heatmap=responsive(heat, narrow=True),
                       mixture=one.mixture, noise=one.noise, step=at)


def open_trace(trace: Trace, session: Session, rollout: int = 0, step: int = 0) -> OpenedTrace:
    """Explore opened on `trace`, at `rollout` and CoT `step` (Compare's selection opens it there)."""
    session.explore = trace
    longest = int(trace.lengths.max()) if trace.num_rollouts else 1
    return OpenedTrace(summary=explore_summary(trace),
                       rollout_slider=gr.Slider(minimum=0, maximum=max(trace.num_rollouts - 1, 1), value=rollout,
                                                step=1, interactive=trace.num_rollouts > 1),
                       step_slider=gr.Slider(minimum=0, maximum=max(longest - 1, 1), value=step, step=1),
                       view=explore_view(rollout, step, session))


@visitor_errors
def on_upload(path, settings: Settings, session: Session) -> OpenedTrace:
    """Explore: open an uploaded Trace file (written by Trace.save: the CLI, a notebook or Compare)."""
    if not path:
        raise ValueError("no file received")
    if not os.path.isfile(path):
        raise ValueError("the uploaded file is no longer on the server; upload it again")
    size_mb = os.path.getsize(path) / 2**20
    if size_mb > settings.max_upload_mb:
        raise ValueError(f"the file has {size_mb:.1f} MB; this server accepts traces up to {settings.max_upload_mb} MB")
    try:
        trace = Trace.load(path)
    except ValueError as err:  # name the file as the visitor knows it, not by where the server keeps it
        raise ValueError(str(err).replace(str(Path(path)), Path(path).name)) from None
    return open_trace(trace, session)


@visitor_errors
def on_pick(label, session: Session) -> OpenedTrace:
    """Explore: open one of the traces of this visitor's last comparison."""
    traces = (session.compare or {}).get("traces", {})
    if label not in traces:
        raise ValueError("run a comparison first, then pick one of its modes here")
    return open_trace(traces[label], session)


@visitor_errors
def on_explore_rollout(rollout, step, session: Session) -> ExploreView:
    """Explore's rollout slider: that rollout's soft text and figures with the step marked, and what was mixed at
    the step and where the fed input landed."""
    return explore_view(rollout, step, session)


@visitor_errors
def on_explore_step(rollout, step, session: Session) -> StepChange:
    """Explore's step slider: the soft text with the step outlined, what was mixed there and where the fed input
    landed (no figure is redrawn: this stays fast)."""
    at = explore_step(rollout, step, session)
    trace = session.explore
    b = clamped("rollout", rollout, 0, trace.num_rollouts - 1)
    t = clamped("CoT step", step, 0, max(int(trace.lengths[b]) - 1, 0)) if int(trace.lengths[b]) else None
    return StepChange(soft_text=viz.soft_text_html(trace, rollout=b, k=3, selected_step=t), step=at)
