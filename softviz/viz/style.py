"""Shared look of the figures: colours, the title-and-notes header, escaping of token text, rollout labels.
Private to softviz.viz: the figure modules import these; nothing here builds a whole figure."""

from __future__ import annotations

import functools
import html
import unicodedata
from typing import Sequence

import numpy as np

from softviz import analysis, checks
from softviz.trace import Trace

# Fixed colours for the paper's six settings (greedy = a darker shade of the same hue); others cycle.
MODE_COLOURS = {"hard": "#4C78A8", "hard-greedy": "#1F3F66", "soft": "#F58518", "soft-greedy": "#A35200",
                "fuzzy": "#54A24B", "fuzzy-greedy": "#2A6A24", "soft-grpo": "#B279A2", "multiplex": "#E45756"}
_PALETTE = ["#B279A2", "#E45756", "#72B7B2", "#9D755D", "#EECA3B", "#FF9DA6", "#BAB0AC", "#439894"]
RANK_COLOURS = ["#1F4E79", "#F58518", "#54A24B", "#B279A2", "#E45756", "#72B7B2", "#9D755D", "#EECA3B", "#FF9DA6",
                "#BAB0AC"]  # rank 1 dark; neighbours contrast so thin slices stay visible
_SYMBOLS = ["circle", "diamond", "square", "x", "triangle-up", "cross", "star", "triangle-down"]
ENTROPY_TITLE = {"entropy": "next-token entropy (nats)", "weight_entropy": "entropy of the mixed weights (nats)"}


def _go():
    import plotly.graph_objects as go

    return go


@functools.cache
def template():
    """The figures' look: plotly_white cut to what softviz draws (bar, heatmap and scatter traces; no 3-D, polar or
    map axes). Applying it costs a third of plotly_white's (~3 vs ~9 ms a figure, and every later update_layout
    copies it) and sends a quarter of its bytes to the browser."""
    import plotly.io as pio

    white = pio.templates["plotly_white"].to_plotly_json()
    layout = {k: v for k, v in white["layout"].items() if k not in ("polar", "ternary", "scene", "geo", "mapbox", "map")}
    data = {k: v for k, v in white["data"].items() if k in ("bar", "heatmap", "scatter", "scattergl")}
    return _go().layout.Template(layout=layout, data=data)


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


def visible(s: str) -> str:
    """A token's text as a reader can see it: whitespace marked (␣ space, ⏎ newline, ⇥ tab), and a piece of a
    multi-byte character (a byte-fallback token decodes to U+FFFD, which fonts draw as an empty box) or another
    control character shown as ‹byte›; the empty string as ∅."""
    s = s.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥")
    s = "".join("‹byte›" if c == "\ufffd" or unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn") else c for c in s)
    return s or "∅"


def _tok(s: str) -> str:
    """A token's text for hover labels: made visible (`visible`), then HTML-escaped."""
    return _esc(visible(s))


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
