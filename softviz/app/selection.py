"""Compare's selection: a clicked shadow-text token or heatmap cell, or a branch-point button, selects a (mode,
rollout, step) of the last comparison; every column and Explore show it (SelectionView)."""

from __future__ import annotations

import dataclasses
from typing import Any

import gradio as gr

from softviz import analysis

from .checks import clamped, visitor_errors
from .explore_tab import OpenedTrace, open_trace
from .session import Session
from .settings import Settings
from .views import Outputs, RolloutView, entropy_scale, heatmap, nested, rollout_figures, shadow_entries

SELECT_HINT = ("*Click a token of a shadow text (◆ marks a branch point) or a cell of a heatmap to select that rollout "
               "and step in its column and in Explore; the buttons step through the branch points.*")


@dataclasses.dataclass
class SlotSelection(Outputs):
    """What a selection redraws in a mode's column."""

    entropy_heatmap: Any
    rollout: RolloutView = nested(RolloutView)


@dataclasses.dataclass
class SelectionView(Outputs):
    """A selected (mode, rollout, step): a note on it, the rollout slider, every column's heatmap and rollout
    figures (the step marked in its own column), and Explore opened there."""

    note: Any  # markdown
    rollout_slider: Any
    slots: list[SlotSelection] = nested(SlotSelection, many=True)
    explore_menu: Any
    explore: OpenedTrace = nested(OpenedTrace)


def _token(trace, b: int, t: int) -> str:
    return repr(trace.decode([int(trace.tokens[b, t])])[0])


def selection_note(traces: dict, label: str, b: int, t: int | None) -> str:
    """The selected step in words, and where its rollout first splits from another rollout and the other modes."""
    tr = traces[label]
    if t is None:
        return f"**Selected:** {label}, rollout {b}: it has no CoT steps."
    bp = analysis.branch_points(tr)
    why = [w for w, m in ((f"entropy above {analysis.BRANCH_ENTROPY} nats", bp["uncertain"]),
                          (f"top weight below {analysis.BRANCH_WEIGHT}", bp["blended"])) if m[b, t]]
    k = int((tr.topk_weights[b, t] >= 5e-4).sum()) or 1
    mixed = ", ".join(f"{s!r} {float(w):.3f}" for s, w in zip(tr.decode(tr.topk_ids[b, t, :min(k, 3)]),
                                                               tr.topk_weights[b, t, :min(k, 3)]))
    lines = [f"**Selected:** {label}, rollout {b}, step {t} of {int(tr.lengths[b])}: shadow token {_token(tr, b, t)} · "
             f"entropy {float(tr.entropy[b, t]):.3f} nats (of p at τ = 1) · "
             f"{'sampling probabilities' if tr.weights_name == 'probability' else 'mixture weights'} at τ = "
             f"{tr.mode.cot_temperature:g}: {mixed}" + (f" · **branch point** ({', '.join(why)})" if why else "")]
    if tr.num_rollouts > 1:
        other = 1 if b == 0 else 0
        s = analysis.first_split(tr, b, tr, other)
        lines.append(f"Rollout {b} against rollout {other}: " + (
            "the same shadow tokens all along." if s is None else
            f"first split at **step {s}** ({_token(tr, b, s) if s < int(tr.lengths[b]) else 'end'} vs "
            f"{_token(tr, other, s) if s < int(tr.lengths[other]) else 'end'})."))
    splits = []
    for name, o in traces.items():
        if name != label and b < o.num_rollouts:
            s = analysis.first_split(tr, b, o, b)
            splits.append(f"{name} splits at step {s}" if s is not None else f"{name}: the same shadow tokens")
    if splits:
        lines.append(f"Against rollout {b} of the other modes: " + "; ".join(splits) + ".")
    lines.append("Explore shows this rollout and step.")
    return "  \n".join(lines)


def selection_view(session: Session, settings: Settings, label: str, rollout, step) -> SelectionView:
    """Select (mode `label`, rollout, step) of the last comparison: moved into range, kept in the session."""
    traces = (session.compare or {}).get("traces") or {}
    if label not in traces:
        raise ValueError("press Compare first, then click a token of a shadow text or a cell of a heatmap")
    tr = traces[label]
    b = clamped("rollout", rollout, 0, tr.num_rollouts - 1)
    n = int(tr.lengths[b])
    t = clamped("CoT step", step, 0, n - 1) if n else None
    session.selection = {"mode": label, "rollout": b, "step": t}
    scale = entropy_scale(traces.values())
    slots = []
    for name, trace in list(traces.items())[: settings.max_modes]:
        mine = name == label and t is not None
        slots.append(SlotSelection(entropy_heatmap=heatmap(trace, scale, (b, t) if mine else None),
                                   rollout=rollout_figures(trace, b, step=t if mine else None)))
    slots += [SlotSelection(entropy_heatmap=None, rollout=RolloutView()) for _ in range(settings.max_modes - len(slots))]
    return SelectionView(note=gr.Markdown(selection_note(traces, label, b, t), visible=True),
                         rollout_slider=gr.Slider(value=b), slots=slots,
                         explore_menu=gr.Dropdown(choices=list(traces), value=label),
                         explore=open_trace(tr, session, b, t or 0))


def on_shadow_select(column: int):
    """The handler of column `column`'s shadow text: a click on a token selects its rollout and step."""
    @visitor_errors
    def on_select(settings: Settings, session: Session, evt: gr.SelectData) -> SelectionView:
        traces = list(((session.compare or {}).get("traces") or {}).items())
        if column >= len(traces):
            raise ValueError("press Compare first")
        label, trace = traces[column]
        where = shadow_entries(trace, 1.0)[1]
        i = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not isinstance(i, int) or not 0 <= i < len(where):
            raise ValueError("click a token of the shadow text")
        b, t = where[i]
        return selection_view(session, settings, label, b, 0 if t is None else t)
    return on_select


@visitor_errors
def on_cell(value, settings: Settings, session: Session) -> SelectionView:
    """A click on a heatmap cell, as the page's script reports it: "column:rollout:step[:time]"."""
    parts = str(value or "").split(":")
    try:
        column, b, t = (int(float(p)) for p in parts[:3])
    except ValueError:
        raise ValueError(f"a heatmap cell is 'column:rollout:step', got {value!r}") from None
    traces = list(((session.compare or {}).get("traces") or {}))
    if not 0 <= column < len(traces):
        raise ValueError("press Compare first, then click a cell of a heatmap")
    return selection_view(session, settings, traces[column], b, t)


def on_previous_branch(rollout, settings: Settings, session: Session) -> SelectionView:
    """◀ Previous branch point."""
    return on_branch(-1, rollout, settings, session)


def on_next_branch(rollout, settings: Settings, session: Session) -> SelectionView:
    """Next branch point ▶."""
    return on_branch(1, rollout, settings, session)


@visitor_errors
def on_branch(direction: int, rollout, settings: Settings, session: Session) -> SelectionView:
    """Previous (-1) or next (+1) branch point of the selected mode (the first mode when nothing is selected), in
    rollout-then-step order, from the selected step (or the start of the slider's rollout)."""
    traces = (session.compare or {}).get("traces") or {}
    if not traces:
        raise ValueError("press Compare first: branch points are steps of its rollouts")
    sel = session.selection or {}
    label = sel.get("mode") if sel.get("mode") in traces else next(iter(traces))
    tr = traces[label]
    here = (sel["rollout"], sel["step"] if sel.get("step") is not None else -1) if sel.get("mode") == label else \
        (clamped("rollout", rollout, 0, tr.num_rollouts - 1), -1)
    positions = analysis.branch_points(tr)["positions"]
    if not positions:
        raise ValueError(f"{label} has no branch points: every step's entropy is at most "
                         f"{analysis.BRANCH_ENTROPY} nats and its top weight at least {analysis.BRANCH_WEIGHT}")
    after = [p for p in positions if p > here] if direction > 0 else [p for p in positions if p < here][::-1]
    b, t = (after or (positions if direction > 0 else positions[::-1]))[0]  # past the last one: around again
    return selection_view(session, settings, label, b, t)
