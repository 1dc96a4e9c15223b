"""What the handlers show, by name: `Outputs` (a handler's values as named fields, flattened in the order the
layout wires its components), and the text and figures drawn from Traces that more than one tab shows."""

from __future__ import annotations

import dataclasses
import functools
import html
import inspect
from typing import Any

from softviz import Trace, analysis, viz
from softviz.stats import mean_over_steps

from .checks import clamped
from .settings import MODE_HELP


# ---- named outputs -----------------------------------------------------------------------------------------

def nested(cls: type, many: bool = False):
    """A field of an Outputs that holds another Outputs of type `cls` (or, `many`, a list of them): flat() lists
    their values in its place."""
    return dataclasses.field(metadata={"nested": cls, "many": many})


def unsent(**field):
    """A field Gradio sends an API client no value for: a layout block (a column) or a gr.State."""
    return dataclasses.field(metadata={"sent": False}, **field)


@dataclasses.dataclass
class Outputs:
    """A handler's values by name. The layout builds the same structure with a component in every field, so
    `flat()` of both lists each value in the place of its component (what Gradio wants from a handler)."""

    def flat(self) -> list:
        out = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if "nested" not in f.metadata:
                out.append(value)
            else:
                out += [v for item in (value if f.metadata["many"] else [value]) for v in item.flat()]
        return out

    @classmethod
    def from_api(cls, values):
        """What an API client got (gradio_client's tuple: flat() less the unsent fields), by name; the unsent
        fields are None. A list of nested views takes the values left once the fields after it have theirs."""
        values = list(values)
        view = cls._take(values)
        if values:
            raise ValueError(f"{len(values)} values more than a {cls.__name__} holds")
        return view

    @classmethod
    def _take(cls, values: list):
        """One view from the front of `values` (taken off it)."""
        fields, kwargs = dataclasses.fields(cls), {}
        for i, f in enumerate(fields):
            if "nested" not in f.metadata:
                kwargs[f.name] = values.pop(0) if f.metadata.get("sent", True) else None
            elif not f.metadata["many"]:
                kwargs[f.name] = f.metadata["nested"]._take(values)
            else:
                count, extra = divmod(len(values) - sum(map(_width, fields[i + 1:])), f.metadata["nested"]._width())
                if extra or count < 0:
                    raise ValueError(f"{len(values)} values do not make a {cls.__name__}")
                kwargs[f.name] = [f.metadata["nested"]._take(values) for _ in range(count)]
        return cls(**kwargs)

    @classmethod
    def _width(cls) -> int:
        return sum(map(_width, dataclasses.fields(cls)))


def _width(f: dataclasses.Field) -> int:
    """How many values an API client gets for a field (a list of nested views: none, they have no set length)."""
    if "nested" in f.metadata:
        return 0 if f.metadata["many"] else f.metadata["nested"]._width()
    return int(f.metadata.get("sent", True))


def flat_outputs(fn):
    """`fn` (which returns or yields Outputs, or a list of them) as Gradio calls it: each result a flat list of
    values, in the order of the wired components. Name and signature stay fn's (api names, gr.Progress)."""
    def flat(result) -> list:
        return result.flat() if isinstance(result, Outputs) else [v for item in result for v in item.flat()]

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            for result in fn(*args, **kwargs):
                yield flat(result)
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return flat(fn(*args, **kwargs))
    return wrapper


# ---- figures and text ----------------------------------------------------------------------------------------

def responsive(fig, narrow: bool = False):
    """Let the page size a figure to its container (viz figures may carry a fixed width for notebooks).

    `narrow`: for a mode's column (~450 px): a smaller title and no grey note lines (viz's "notes" annotation),
    which would run off the figure; the column's gr.Plot labels say what they said. Margins are fixed, not found
    by plotly: its automargin draws a figure twice (once to measure the tick labels), which doubled the time a
    column's figures take to redraw on every rollout or step change. The changes go in one update_layout (each
    costs plotly a few ms of validation, and a rollout change draws six of these figures)."""
    if fig is None:
        return None
    if not narrow:
        return fig.update_layout(width=None, autosize=True)
    layout = fig.layout
    kept = [a for a in layout.annotations if a.name != "notes"]
    pad_b, margin_t = layout.title.pad.b or 0, layout.margin.t or 0
    if len(kept) < len(layout.annotations):
        below = 26 if kept else 8  # subplot titles sit between the title and the plot area
        fig.layout.annotations = kept
        pad_b, margin_t = below + 4, 52 + below
    title = layout.title.text or ""
    if " — " in title:  # "what — which rollout" on two lines: one line runs off a column. The title anchors on its
        # first line, so the second needs the room of one line above the plot area
        title = title.replace(" — ", "<br>", 1)
        pad_b, margin_t = pad_b + 17, margin_t + 17
    axes = [k for k in layout.to_plotly_json() if k.startswith(("xaxis", "yaxis"))] or ["xaxis", "yaxis"]
    fig.update_layout({"width": None, "autosize": True, "title_text": title or None, "title_font_size": 13,
                       "title_pad_b": pad_b, "margin_t": max(margin_t, label_room(title, pad_b)),
                       "margin_l": left_margin(fig), "margin_r": 10, **{f"{a}_automargin": False for a in axes}})
    return fig


def left_margin(fig) -> int:
    """Pixels left of the plot area for the y axes' tick labels and title (12 px font: ~7 px a character)."""
    longest = max((len(str(t)) for k, v in fig.layout.to_plotly_json().items() if k.startswith("yaxis")
                   for t in (v.get("ticktext") or ())), default=0)
    return 30 + 7 * max(4, longest)  # numbers: "0.25", "> 5"


def label_room(title: str, pad_b: float) -> int:
    """The top margin a titled figure needs to clear the gr.Plot label drawn across its top (about 40 px): the
    title, which ends pad_b above the plot area, starts below the label."""
    return int(pad_b + 17 * (1 + title.count("<br>")) + 48)


def clear_label(fig) -> None:
    """Room over a titled figure for the gr.Plot label (label_room)."""
    need = label_room(fig.layout.title.text or "", fig.layout.title.pad.b or 0)
    if (fig.layout.margin.t or 0) < need:
        fig.update_layout(margin_t=need)


def accuracy(trace: Trace) -> tuple[int, int] | None:
    ok = analysis.rollout_correct(trace)
    return None if any(c is None for c in ok) else (sum(ok), len(ok))


def mean_entropy(trace: Trace) -> float:
    return mean_over_steps(trace.entropy, trace.lengths)  # the library's one definition (as `softviz compare`)


def _mode_caption(trace: Trace) -> str:
    m = trace.meta["mode"]
    label = trace.meta["mode_label"]
    parts = [f"feeds back {MODE_HELP[label]}" if label in MODE_HELP else f"kind {m['kind']}"]
    parts.append(trace.mode.policy.caption(trace.meta.get("sigma") or 0.0))
    return " · ".join(parts)


def column_header(trace: Trace) -> str:
    """Markdown over a mode's column: what the mode feeds, accuracy and distinct answers."""
    acc = accuracy(trace)
    answers = analysis.distinct_answers(trace)
    shown = ", ".join(f"**{html.escape(a)}** ×{c}" for a, c in list(answers.items())[:5])
    more = f", … ({len(answers) - 5} more)" if len(answers) > 5 else ""
    acc_s = f"**{acc[0]}/{acc[1]} correct** ({100 * acc[0] / acc[1]:.0f}%) · " if acc else ""
    texts = trace.meta.get("cot_texts")
    same = (trace.num_rollouts > 1 and texts is not None and len(set(texts)) == 1
            and len(set(trace.meta.get("answers") or [None])) == 1)
    note = (f"*Deterministic: all {trace.num_rollouts} rollouts are identical.*\n\n" if same and trace.mode.is_greedy
            else f"*All {trace.num_rollouts} rollouts wrote the same CoT text and answer.*\n\n" if same else "")
    return (f"### {trace.meta['mode_label']}\n{_mode_caption(trace)}\n\n{note}"
            f"{acc_s}{len(answers)} distinct answer{'s' if len(answers) != 1 else ''}: {shown}{more}  \n"
            f"mean entropy {mean_entropy(trace):.3f} nats · "
            f"mean CoT {float(trace.lengths.float().mean()):.1f} tokens")


BRANCH_MARK = "◆"  # before a branch point's token in the shadow text


def shadow_entries(trace: Trace, scale: float) -> tuple[list[tuple[str, float | None]], list[tuple[int, int | None]]]:
    """Every rollout's shadow text as (token, entropy / scale) pairs for gr.HighlightedText (redder = less sure),
    each rollout on its own line, headed by its number and answer (✓ right, ✗ wrong), a ◆ before each branch
    point (softviz.analysis.branch_points); and, for each entry, the (rollout, CoT step) it stands for (step None
    for a rollout's heading), so a click on an entry selects that step."""
    ok = analysis.rollout_correct(trace)
    answers = trace.meta.get("answers") or [None] * trace.num_rollouts
    bp = analysis.branch_points(trace)
    branch = bp["uncertain"] | bp["blended"]
    out: list[tuple[str, float | None]] = []
    where: list[tuple[int, int | None]] = []
    for b in range(trace.num_rollouts):
        n = int(trace.lengths[b])
        mark = {True: " ✓", False: " ✗"}.get(ok[b], "")
        answer = analysis.NO_ANSWER if answers[b] is None else answers[b]
        out.append((f"{'' if b == 0 else chr(10)}#{b} → {answer}{mark}:", None))
        where.append((b, None))
        for t, (tok, h) in enumerate(zip(trace.decode(trace.tokens[b, :n]), trace.entropy[b, :n].tolist())):
            if branch[b, t]:
                out.append((BRANCH_MARK, None))
                where.append((b, t))
            out.append((visible_text(tok), round(min(h / scale, 1.0), 3) if scale > 0 else 0.0))
            where.append((b, t))
    return out, where


def visible_text(tok: str) -> str:
    """A shadow token as running text: spaces and newlines kept, byte pieces (U+FFFD) shown as ‹byte›."""
    return tok.replace("\ufffd", "‹byte›")


def entropy_scale(traces) -> float:
    """The largest CoT entropy of a comparison: shadow texts of every column share one colour scale."""
    return max((float(t.entropy[t.mask].max()) for t in traces if bool(t.mask.any())), default=0.0)


def summary_markdown(result: dict) -> str:
    """The table above the columns: one line per mode."""
    gold = result["gold"]
    lines = [f"**Prompt** ({html.escape(str(result['model']))}): {html.escape(result['prompt'])}  ",
             f"**Gold answer:** {html.escape(gold)}" if gold else
             "**Gold answer:** not given, so answers are not marked right or wrong.",
             "", f"{len(result['traces'])} modes × {result['n']} rollouts in {result['seconds']:.1f} s.", "",
             "| mode | correct | distinct answers | most common answer | mean entropy (nats) | mean CoT length |",
             "|---|---|---|---|---|---|"]
    for label, tr in result["traces"].items():
        acc = accuracy(tr)
        answers = analysis.distinct_answers(tr)
        top, count = next(iter(answers.items()))
        acc_s = f"{acc[0]}/{acc[1]}" if acc else "–"
        lines.append(f"| {label} | {acc_s} | {len(answers)} | {html.escape(top)} (×{count}) | "
                     f"{mean_entropy(tr):.3f} | {float(tr.lengths.float().mean()):.1f} |")
    return "\n".join(lines)


@dataclasses.dataclass
class RolloutView(Outputs):
    """One rollout step by step, in a mode's column (Compare): its soft text (top-3 tokens per step), the mixture
    weights, and how far each fed input is from the nearest vocabulary (the noise shift)."""

    soft_text: Any = ""  # HTML
    mixture: Any = None  # figures
    noise: Any = None


def rollout_figures(trace: Trace, rollout, step: int | None = None) -> RolloutView:
    """Rollout `rollout` of `trace` (moved into range; not a whole number: a ValueError) as a RolloutView, with
    CoT step `step` (if any) marked in each of its figures."""
    b = clamped("rollout", rollout, 0, trace.num_rollouts - 1)
    n = int(trace.lengths[b])
    # in a ~450 px column, labels inside the bars and a row of tokens over more than 24 steps overlap (hover
    # names every token); leaving them out also halves the browser's drawing time
    mixture = responsive(viz.mixture_topk(trace, rollout=b, k=5, selected_step=step, bar_labels=False,
                                          token_row=n <= 24), narrow=True)
    # the row of tokens over the bars takes ~25 px under the title; ranks stack bottom-up and hover names them (a
    # legend would fill the column)
    row = 25 if n <= 24 else 0
    pad_b = mixture.layout.title.pad.b + row
    mixture.update_layout(title_pad_b=pad_b, showlegend=False,
                          margin_t=max(mixture.layout.margin.t + row, label_room(mixture.layout.title.text, pad_b)))
    noise = responsive(viz.noise_shift(trace, rollout=b, selected_step=step), narrow=True)
    return RolloutView(soft_text=viz.soft_text_html(trace, rollout=b, k=3, selected_step=step), mixture=mixture,
                       noise=noise)


def heatmap(trace: Trace, scale: float, selected: tuple[int, int] | None = None):
    """A mode's entropy heatmap for its column: the comparison's shared colour scale (`scale`, the largest entropy
    of all modes), branch points marked, and the selected (rollout, step) outlined."""
    return responsive(viz.entropy_heatmap(trace, zmax=scale if scale > 0 else None, branch_points=True,
                                          selected=selected), narrow=True)
