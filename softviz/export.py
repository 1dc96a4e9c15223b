"""A comparison as files to send: one self-contained HTML page that opens offline (the figures with plotly.js
inlined, every rollout's soft text, the settings and the seed) and the same content as JSON.

    comparison = compare_modes(model, tok, task, "What is 17 times 3?", ["hard", "soft", "fuzzy"], trace=True)
    write_comparison(comparison, "out.html", settings={"model": "embedded", "seed": 0})   # or out.json

`softviz compare --html out.html --json out.json` and the app's Compare tab write the same files.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
from pathlib import Path

from softviz.compare import Comparison
from softviz.files import atomic_file

FORMAT = "softviz-comparison/1"


def _finite(x):
    """JSON has no NaN or infinity: such values become None."""
    return x if isinstance(x, (int, str)) or x is None or math.isfinite(x) else None


def comparison_dict(comparison: Comparison, settings: dict | None = None) -> dict:
    """Everything a comparison shows, as plain JSON-able values: the prompt, the gold answer, the settings, and per
    mode its decoding (τ, γ, σ), summary and every rollout (CoT text, shadow tokens, entropy per step, answer)."""
    modes = []
    for s in comparison.summaries:
        r = s.rollouts
        tr = r.trace
        rollouts = []
        for b in range(len(r)):
            T = int(r.cot_lengths[b])
            row = {"cot_text": r.cot_texts[b], "answer_text": r.answer_texts[b], "answer": r.answers[b],
                   "cot_end": r.cot_end[b], "cot_length": T,
                   "entropy": [round(float(v), 4) for v in r.cot_entropy[b, :T]]}
            if tr is not None and "correct" in tr.meta:
                row["correct"] = bool(tr.meta["correct"][b])
            if tr is not None:
                row["top_weights"] = [[round(float(w), 4) for w in step] for step in tr.topk_weights[b, :T]]
                row["top_ids"] = [[int(i) for i in step] for step in tr.topk_ids[b, :T]]
            rollouts.append(row)
        modes.append({"label": s.label, "mode": dataclasses.asdict(r.mode), "sigma": r.sigma, "seed": r.seed,
                      "accuracy": s.accuracy, "mean_entropy": _finite(s.mean_entropy),
                      "mean_cot_length": s.mean_cot_length, "distinct_answers": s.distinct_answers,
                      "answer_counts": dict(s.answer_counts.most_common()), "rollouts": rollouts})
    return {"format": FORMAT, "prompt": comparison.prompt, "gold": comparison.gold,
            "settings": dict(settings or {}), "modes": modes}


def comparison_html(comparison: Comparison, settings: dict | None = None, *, title: str | None = None) -> str:
    """One HTML page holding the comparison: the summary table, the figures across modes (entropy profiles,
    answers), per mode the entropy heatmap, the mixture weights of rollout 0 and every rollout's soft text, and
    the settings; plotly.js is inlined once, so the file opens offline. Needs the comparison's Traces
    (compare_modes(..., trace=True))."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    from softviz import viz

    traces = {s.label: s.rollouts.trace for s in comparison.summaries}
    if any(t is None for t in traces.values()):
        raise ValueError("comparison_html needs the rollouts' Traces: call compare_modes(..., trace=True)")
    data = comparison_dict(comparison, settings)

    def fig(f) -> str:
        return pio.to_html(f, full_html=False, include_plotlyjs=False, config={"displaylogo": False})

    esc = html.escape
    def row(m: dict) -> str:
        acc = "–" if m["accuracy"] is None else f"{100 * m['accuracy']:.1f}%"
        ent = "–" if m["mean_entropy"] is None else f"{m['mean_entropy']:.3f}"
        answers = ", ".join(f"{a} ×{c}" for a, c in list(m["answer_counts"].items())[:6])
        cells = (m["label"], f"{m['mode']['cot_temperature']:g}", f"{m['mode']['noise_scale']:g}", f"{m['sigma']:.4f}",
                 acc, m["distinct_answers"], f"{m['mean_cot_length']:.1f}", ent, answers)
        return "<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in cells) + "</tr>"

    rows = "".join(row(m) for m in data["modes"])
    parts = [
        "<h2>Summary</h2>",
        "<table><tr><th>mode</th><th>CoT τ</th><th>γ</th><th>σ</th><th>correct</th><th>distinct answers</th>"
        "<th>mean CoT tokens</th><th>mean entropy (nats, τ = 1)</th><th>answers</th></tr>" + rows + "</table>",
        "<h2>Across modes</h2>", fig(viz.entropy_profiles(traces)), fig(viz.diversity(traces)),
        "<h2>Entropy per step</h2>", fig(viz.side_by_side(viz.entropy_heatmap, traces)),
        "<h2>Mixture weights, rollout 0</h2>", fig(viz.side_by_side(viz.mixture_topk, traces, rollout=0)),
    ]
    for label, tr in traces.items():
        parts.append(f"<h2>{esc(label)}: every rollout's text</h2>")
        parts += [f"<h3>rollout {b}</h3>" + viz.soft_text_html(tr, rollout=b, k=3) for b in range(len(tr.lengths))]
    settings_text = "\n".join(f"{k}: {json.dumps(v, default=str)}" for k, v in data["settings"].items())
    page_title = esc(title or "softviz comparison")
    gold = "" if comparison.gold is None else f"<p><b>Gold answer:</b> {esc(str(comparison.gold))}</p>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{page_title}</title><style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:auto;"
        "padding:1em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        "pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em}</style>"
        f"<script>{get_plotlyjs()}</script></head><body>"
        f"<h1>{page_title}</h1><h2>Prompt</h2><pre>{esc(comparison.prompt)}</pre>{gold}"
        f"<h2>Settings</h2><pre>{esc(settings_text)}</pre>"
        + "".join(parts)
        # the same content as data, for a script or a colleague's notebook
        + "<script type='application/json' id='softviz-data'>"
        + json.dumps(data).replace("</", "<\\/") + "</script></body></html>")


def write_comparison(comparison: Comparison, path: str | os.PathLike, settings: dict | None = None) -> Path:
    """Write the comparison to `path`: HTML for a .html/.htm name, JSON for .json; whole or not at all."""
    path = Path(path)
    kind = path.suffix.lower()
    if kind in (".html", ".htm"):
        text = comparison_html(comparison, settings)
    elif kind == ".json":
        text = json.dumps(comparison_dict(comparison, settings), indent=1) + "\n"
    else:
        raise ValueError(f"{path}: write a comparison as .html (a page that opens offline) or .json")
    if path.parent and not path.parent.exists():
        raise ValueError(f"{path}: the folder {path.parent} does not exist; create it or choose another path")
    with atomic_file(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path
