"""side_by_side: any per-trace figure for several modes in one row of subplots, axes linked, one colour scale."""

from __future__ import annotations

from typing import Callable, Mapping

from softviz import analysis
from softviz.trace import Trace
from softviz.viz.style import template, _esc, _head


_AXIS_KEEP = ("title", "type", "range", "autorange", "tickmode", "tickvals", "ticktext", "tickformat", "rangemode",
              "categoryorder", "categoryarray")


def side_by_side(fn: Callable, traces: Mapping[str, Trace], *, title: str | None = None, **kw):
    """Any per-trace figure (entropy_heatmap, mixture_topk, noise_shift, trajectory_distance_heatmap, ...) for
    several modes in one row of subplots, with shared axes and one shared colour scale.

    Args:
        fn: a function (trace, **kw) -> Figure whose panels are stacked in one column and share their x axis.
        traces: label -> Trace; one column per label, titled by it.
        **kw: passed to fn.
    Returns: a Figure with len(traces) columns (times fn's rows); every x axis is linked to the top-left one and
        every y axis to the first column's in its row, so the same step or value lines up across modes.
    """
    from plotly.subplots import make_subplots

    traces = analysis.as_trace_dict(traces)
    figs = {lb: fn(tr, **kw) for lb, tr in traces.items()}
    first = next(iter(figs.values()))
    if not hasattr(first, "layout") or not hasattr(first, "data"):
        raise ValueError(f"side_by_side needs a function that returns a plotly Figure; "
                         f"{getattr(fn, '__name__', fn)} returned a {type(first).__name__}")
    R, C = len(_axis_rows(first)), len(figs)
    grid = make_subplots(rows=R, cols=C, column_titles=[_esc(lb) for lb in figs],
                         horizontal_spacing=min(0.09 if _has_y_ticktext(first) else 0.06, 0.3 / C),
                         vertical_spacing=0.1)
    seen_legend, ranges = set(), {}
    for c, (lb, f) in enumerate(figs.items(), start=1):
        refs = _axis_rows(f)
        rows = {ref: r for r, ref in enumerate(refs, start=1)}
        for t in f.data:
            r = rows.get((t.xaxis or "x", t.yaxis or "y"), 1)
            t = type(t)(t)  # a copy
            key = (t.name, t.legendgroup)
            if t.showlegend is not False and key in seen_legend:
                t.showlegend = False
            seen_legend.add(key)
            grid.add_trace(t, row=min(r, R), col=c)
        for r, (xr, yr) in enumerate(refs[:R], start=1):
            for axis, ref in (("xaxis", xr), ("yaxis", yr)):
                src = f.layout[axis + ref[1:]]
                props = {k: src[k] for k in _AXIS_KEEP if src[k] is not None}
                dst = grid.layout[axis + _suffix(r, c, C)]
                dst.update(props)
                group = "x" if axis == "xaxis" else f"y{r}"
                if src.range is not None:
                    ranges.setdefault(group, []).append(tuple(src.range))
                if axis == "xaxis":  # every x axis follows the top-left one: steps line up across modes and rows
                    dst.matches = None if (r, c) == (1, 1) else "x"
                    if r < R:
                        dst.title = None
                else:  # y axes follow the first column's, row by row
                    dst.matches = None if c == 1 else "y" + _suffix(r, 1, C)
                    if c > 1:
                        dst.title = None
                        dst.showticklabels = "ticktext" in props  # each mode's own rollout answers stay readable
    for group, rs in ranges.items():  # linked axes show the union of the panels' ranges
        flip = rs[0][0] > rs[0][1]
        lo, hi = min(min(r) for r in rs), max(max(r) for r in rs)
        union = [hi, lo] if flip else [lo, hi]
        for r in range(1, R + 1):
            for c in range(1, C + 1):
                if group == "x":
                    grid.layout["xaxis" + _suffix(r, c, C)].range = union
                elif group == f"y{r}":
                    grid.layout["yaxis" + _suffix(r, c, C)].range = union
    _share_colour_axis(grid, figs)
    _head(grid, (title or _plain_title(first).split(" — ")[0]) + " — side by side", _merge_notes(figs),
          subplot_titles=True)
    grid.update_layout(template=template(), height=first.layout.height or 450, barmode=first.layout.barmode,
                       bargap=first.layout.bargap, legend=first.layout.legend, uniformtext=first.layout.uniformtext)
    return grid


def _has_y_ticktext(fig) -> bool:
    return any(k.startswith("yaxis") and v.get("ticktext") for k, v in fig.layout.to_plotly_json().items())


def _merge_notes(figs: dict) -> list[str]:
    """Notes every figure shares, once; the others prefixed with their figure's label."""
    per = {lb: _title_notes(f) for lb, f in figs.items()}
    common = [n for n in next(iter(per.values())) if all(n in v for v in per.values())]
    return common + [f"{_esc(lb)}: {n}" for lb, v in per.items() for n in v if n not in common]


def _suffix(r: int, c: int, C: int) -> str:
    i = (r - 1) * C + c
    return "" if i == 1 else str(i)


def _axis_rows(fig) -> list[tuple[str, str]]:
    """The (xref, yref) pairs of a one-column figure's panels, top to bottom (from its layout's y axes)."""
    lay = fig.layout.to_plotly_json()
    pairs = []
    for key in lay:
        if key.startswith("yaxis"):
            y = "y" + key[5:]
            dom = lay[key].get("domain", [0, 1])
            pairs.append((-dom[1], (lay[key].get("anchor") or "x" + key[5:], y)))
    if not pairs:
        return [("x", "y")]
    return [p for _, p in sorted(pairs)]


def _share_colour_axis(grid, figs) -> None:
    ca = next(iter(figs.values())).layout.coloraxis
    if ca is None or (ca.colorscale is None and ca.colorbar.title.text is None):
        return
    lo, hi = [], []
    for f in figs.values():
        c = f.layout.coloraxis
        if c.cmin is not None:
            lo.append(c.cmin)
        if c.cmax is not None:
            hi.append(c.cmax)
    grid.update_layout(coloraxis=ca.to_plotly_json())
    if lo:
        grid.layout.coloraxis.cmin = min(lo)
    if hi:
        grid.layout.coloraxis.cmax = max(hi)


def _plain_title(fig) -> str:
    return (fig.layout.title.text or "").split("<br>")[0]


def _title_notes(fig) -> list[str]:
    return [line for a in fig.layout.annotations if a.name == "notes" for line in (a.text or "").split("<br>")]
