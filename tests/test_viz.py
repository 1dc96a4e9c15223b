"""softviz.viz: every figure built from small real traces of the embedded model, checked on the data it holds."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from softviz import TraceConfig, analysis, generate, viz
from softviz.evaluate import pass_at_k as pass_at_k_estimate
from softviz.tasks import ArithmeticTask
from softviz.viz import training_curves
from softviz.viz.style import _tok

TASK = ArithmeticTask()
EXAMPLES = TASK.examples("test", 8)
PICK = [EXAMPLES[7], EXAMPLES[4]]  # CoTs of different lengths and a mix of right and wrong answers
PROMPTS = [TASK.prompt(e) for e in PICK]
GOLDS = [e.answer for e in PICK]
MODES = ("hard", "soft", "fuzzy")


@pytest.fixture(scope="module")
def traces(embedded):
    model, tok = embedded
    out = {}
    for mode in MODES:
        cfg = TraceConfig(keep_inputs=True)
        t = generate(model, tok, PROMPTS, mode, n=4, max_cot_tokens=48, seed=0, trace=cfg).trace
        t.meta["golds"] = [GOLDS[p] for p in t.meta["prompt_index"]]  # as train() records them
        out[mode] = t
    return out


def _title(fig) -> str:
    notes = " ".join(a.text for a in fig.layout.annotations if a.name == "notes")
    return f"{fig.layout.title.text} {notes}"


def test_training_curves_hold_the_metrics():
    runs = {"soft": [{"step": s, "reward": 10.0 * s, "entropy": 0.1, "cot/mean_length": 20.0,
                      **({"val/greedy_accuracy": 0.5 + 0.01 * s} if s % 2 == 0 else {})} for s in range(1, 7)],
            "hard": [{"step": s, "reward": 5.0, "entropy": 0.2, "cot/mean_length": 25.0} for s in range(1, 4)]}
    fig = training_curves(runs, smooth=1)
    val = [t for t in fig.data if t.name == "soft" and t.xaxis == "x"][0]
    assert list(val.x) == [2, 4, 6] and list(val.y) == [0.52, 0.54, 0.56]  # periodic metric: only where logged
    reward = [t for t in fig.data if t.name == "soft" and t.xaxis == "x2"][0]
    assert list(reward.y) == [10.0 * s for s in range(1, 7)]
    assert not [t for t in fig.data if t.name == "hard" and t.xaxis == "x"]  # the hard run has no validation
    assert [t.xaxis for t in fig.data if t.name == "hard" and t.showlegend] == ["x2"]  # ...but is in the legend
    assert fig.layout.annotations[0].text.startswith("greedy validation")
    smoothed = [t for t in training_curves(runs, smooth=3).data if t.name == "soft" and t.xaxis == "x2"][0]
    assert smoothed.y[2] == (10 + 20 + 30) / 3  # trailing moving average


def test_training_curves_update_live():
    metrics = [{"step": s, "reward": float(s), "entropy": 0.3} for s in range(1, 4)]
    fig = training_curves(metrics, smooth=2)  # a bare list is one run
    metrics += [{"step": s, "reward": float(s), "entropy": 0.3} for s in range(4, 9)]
    same = training_curves(metrics, smooth=2, fig=fig)
    assert same is fig  # updated in place (a FigureWidget on screen keeps its zoom: uirevision)
    reward = [t for t in fig.data if t.name == "run" and t.xaxis == "x2"][0]
    assert list(reward.x) == list(range(1, 9)) and reward.y[-1] == (7 + 8) / 2
    grown = training_curves({"run": metrics, "other": metrics}, fig=fig)  # new curves: traces replaced
    assert grown is fig and {t.name for t in fig.data} >= {"run", "other"}


def test_entropy_heatmap_holds_the_trace_entropy(traces):
    t = traces["soft"]
    fig = viz.entropy_heatmap(t)
    z = np.array(fig.data[0].z, dtype=float)
    H = analysis.entropy_matrix(t)
    assert np.array_equal(np.isnan(z), np.isnan(H)) and np.allclose(z[~np.isnan(z)], H[~np.isnan(H)])
    b, s = 1, 5  # hover: the shadow token and the top-k tokens with their weights
    text = fig.data[0].text[b][s]
    assert _tok(t.decode([t.tokens[b, s]])[0]) in text and f"{t.topk_weights[b, s, 0].item():.3f}" in text
    assert "%{z:.3f}" in fig.data[0].hovertemplate and f"step {s}<br>" in text
    short = int(t.lengths.argmin())
    assert fig.data[0].text[short][t.num_steps - 1] == ""  # no hover where the CoT had ended
    assert "soft" in fig.layout.title.text and "entropy" in fig.layout.coloraxis.colorbar.title.text
    # too big: rollouts cut, steps averaged in bins, and the figure says so
    small = viz.entropy_heatmap(t, max_rollouts=3, max_steps=10)
    zs = np.array(small.data[0].z, dtype=float)
    pool = int(np.ceil(t.num_steps / 10))
    assert zs.shape == (3, int(np.ceil(t.num_steps / pool)))
    assert zs[0, 0] == pytest.approx(np.nanmean(H[0, :pool]))
    assert "first 3 of 8 rollouts" in _title(small) and f"bins of {pool}" in _title(small)


def test_entropy_profiles_share_axes_and_match_the_profile(traces):
    fig = viz.entropy_profiles(traces)
    for mode, t in traces.items():
        line = [d for d in fig.data if d.name == mode][0]
        prof = analysis.entropy_profile(t)
        ok = prof["count"] > 0
        assert np.allclose(line.y, prof["mean"][ok]) and list(line.x) == list(prof["step"][ok])
        assert any(d.fill == "toself" and d.legendgroup == mode for d in fig.data)  # its band
    assert {d.xaxis for d in fig.data} == {"x", "x2"} and fig.layout.xaxis.matches == "x2"  # count panel below
    single = viz.entropy_profiles(traces["hard"], show_count=False, band="iqr")
    assert [d.name for d in single.data if d.fill is None] == ["hard"] and "25th–75th" in _title(single)


def test_mixture_topk_bars_are_the_weights(traces):
    t, b = traces["soft"], 2
    fig = viz.mixture_topk(t, rollout=b)
    n, k = int(t.lengths[b]), t.topk_weights.shape[-1]
    bars = [d for d in fig.data if d.type == "bar"]
    ranks = [d for d in bars if d.name.startswith("rank")]
    assert len(ranks) == k
    W = np.stack([np.asarray(d.y) for d in ranks], 1)  # (n, k)
    assert np.allclose(W, t.topk_weights[b, :n].numpy())
    assert (W.sum(1) <= 1 + 1e-5).all()  # the top-k weights sum to at most 1...
    rest = [d for d in bars if d.name == "rest of vocabulary"][0]
    assert np.allclose(W.sum(1) + np.asarray(rest.y), 1, atol=1e-5)  # ...and the rest tops them up to 1
    assert ranks[0].customdata[0][0] == _tok(t.decode([t.topk_ids[b, 0, 0]])[0])
    assert "rollout 2" in fig.layout.title.text
    hard = viz.mixture_topk(traces["hard"], k=3)
    assert len([d for d in hard.data if (d.name or "").startswith("rank")]) == 3
    assert "sampling distribution" in _title(hard)
    with pytest.raises(ValueError, match="rollout 9 is out of range"):
        viz.mixture_topk(t, rollout=9)


def test_noise_shift_shows_cosine_and_rank(traces):
    t, b = traces["fuzzy"], 0
    fig = viz.noise_shift(t, rollout=b)
    n = int(t.lengths[b])
    near = [d for d in fig.data if d.name == "nearest token"][0]
    assert np.allclose(near.y, t.nearest_scores[b, :n, 0].numpy())
    rank = [d for d in fig.data if d.name == "shadow token's rank"][0]
    assert np.array_equal(np.asarray(rank.y), np.where(analysis.nearest_summary(t)["shadow_rank"][b, :n] > 0,
                                                       analysis.nearest_summary(t)["shadow_rank"][b, :n], 6))
    assert (np.asarray(near.y) < 0.99).all()  # the noise moved every fed input off the vocabulary
    assert "σ =" in _title(fig)
    hard = viz.noise_shift(traces["hard"], rollout=b)
    assert np.allclose([d for d in hard.data if d.name == "nearest token"][0].y, 1.0, atol=1e-5)


def test_soft_text_is_escaped_html(traces):
    t = traces["soft"]
    html = viz.soft_text_html(t, rollout=1, k=3)
    n = int(t.lengths[1])
    shown = int(((t.topk_weights[1, :n, :3] >= 5e-4) | (torch.arange(3) == 0)).sum())  # weight-0 ranks left out
    assert html.count("flex-direction:column") == n and html.count("opacity:") == shown
    evil = dataclasses.replace(t, token_strings={**t.token_strings, int(t.topk_ids[1, 0, 0]): "<script>x</script>"})
    out = viz.soft_text_html(evil, rollout=1)
    assert "<script>" not in out and "&lt;script&gt;" in out
    # stronger where the weight is larger: the top token's opacity is the highest in its column
    first = html.split("flex-direction:column")[1]
    opac = [float(s.split(";")[0]) for s in first.split("opacity:")[1:4]]
    assert opac == sorted(opac, reverse=True)


def test_diversity_counts_answers(traces):
    fig = viz.diversity(traces)
    for mode, t in traces.items():
        bar = [d for d in fig.data if d.name == mode][0]
        counts = analysis.distinct_answers(t)
        got = {x.rstrip(" ✓✗"): y for x, y in zip(bar.x, bar.y) if y}
        assert got == counts
    ok = {m: sum(analysis.rollout_correct(t)) for m, t in traces.items()}
    correct = [d for d in fig.data if d.name == "correct rollouts"][0]
    assert list(correct.y) == [ok[m] for m in MODES]
    distinct = [d for d in fig.data if d.name == "distinct answers"][0]
    assert list(distinct.y) == [len(analysis.distinct_answers(traces[m])) for m in MODES]
    gold_tick = f"#0: {GOLDS[0]} ✓"
    if any(a == GOLDS[0] for t in traces.values() for a in t.meta["answers"][:4]):
        assert gold_tick in list(fig.data[0].x)
    union = {a for t in traces.values() for a in analysis.distinct_answers(t, prompt=0)}
    assert len(union) > 2  # prompt 0's rollouts disagree
    one = viz.diversity(traces, prompt=0, max_answers=2)
    assert "pooled" in _title(one) and len(one.data[0].x) == 2
    assert all(sum(d.y) == 4 for d in one.data if d.name in MODES)  # every rollout still counted once


def test_trajectory_distance_heatmap(traces):
    fig = viz.trajectory_distance_heatmap(traces["soft"])
    assert np.allclose(np.array(fig.data[0].z, dtype=float), analysis.trajectory_distances(traces["soft"]))
    assert "σ√(2d)" in _title(fig)
    with pytest.raises(ValueError, match=r"keep_inputs=True"):
        viz.trajectory_distance_heatmap(dataclasses.replace(traces["soft"], inputs=None))


def test_projection_one_point_per_rollout_and_step(traces):
    fig = viz.projection(traces)
    for mode, t in traces.items():
        pts = [d for d in fig.data if d.name == mode][0]
        assert len(pts.x) == int(t.lengths.sum())
        steps = [(int(r), int(s)) for r, s, *_ in pts.customdata]
        assert sorted(steps) == sorted((b, s) for b in range(t.num_rollouts) for s in range(int(t.lengths[b])))
    by_step = viz.projection(traces, color_by="step")
    assert by_step.data[0].marker.coloraxis == "coloraxis" and "step" in by_step.layout.coloraxis.colorbar.title.text
    small = viz.projection(traces, max_points=40)
    assert sum(len(d.x) for d in small.data) == 40 and "random 40 of" in _title(small)
    with pytest.raises(ValueError, match="color_by must be"):
        viz.projection(traces, color_by="answer")


def test_projection_is_svg_up_to_svg_points_then_webgl(traces, monkeypatch):
    import softviz.viz.across as across

    total = sum(int(t.lengths.sum()) for t in traces.values())
    assert {d.type for d in viz.projection(traces).data} == {"scatter"}  # a comparison's few hundred points
    monkeypatch.setattr(across, "SVG_POINTS", total - 1)
    fig = viz.projection(traces)
    assert {d.type for d in fig.data} == {"scattergl"} and sum(len(d.x) for d in fig.data) == total


def test_figures_share_the_light_template(traces):
    import plotly.io as pio

    fig = viz.entropy_heatmap(traces["soft"])
    white = pio.templates["plotly_white"].layout
    assert fig.layout.template.layout.plot_bgcolor == white.plot_bgcolor
    assert fig.layout.template.layout.xaxis.gridcolor == white.xaxis.gridcolor
    assert set(fig.layout.template.data.to_plotly_json()) == {"bar", "heatmap", "scatter", "scattergl"}


def test_pass_at_k_figure_uses_the_unbiased_estimator(traces):
    curves = {m: analysis.pass_at_k_curve(*analysis.correct_counts(t)) for m, t in traces.items()}
    fig = viz.pass_at_k(curves)
    for mode, t in traces.items():
        line = [d for d in fig.data if d.name.split(" (= ")[0] == mode][0]
        counts, n = analysis.correct_counts(t)
        assert list(line.x) == [1, 2, 4]
        assert np.allclose(line.y, [np.mean([pass_at_k_estimate(n, c, k) for c in counts]) for k in (1, 2, 4)])
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.tickformat == ".0%"


def test_equal_pass_at_k_curves_stay_visible():
    fig = viz.pass_at_k({"hard": {1: 0.5, 2: 0.75}, "soft": {1: 0.5, 2: 0.75}, "fuzzy": {1: 0.25, 2: 0.5}})
    hard, soft, fuzzy = fig.data
    assert (hard.name, soft.name, fuzzy.name) == ("hard", "soft (= hard)", "fuzzy")
    assert hard.line.dash is None and soft.line.dash is not None and fuzzy.line.dash is None
    assert len({hard.marker.symbol, soft.marker.symbol, fuzzy.marker.symbol}) == 3


def test_entropy_before_after(traces):
    fig = viz.entropy_before_after(traces["hard"], traces["soft"])
    lines = {d.name: d for d in fig.data if d.fill is None and d.showlegend is not False}
    assert set(lines) == {"hard · before RL", "soft · after RL"}
    assert lines["hard · before RL"].line.dash == "dash" and lines["soft · after RL"].line.dash == "solid"
    both = viz.entropy_before_after({"soft": traces["soft"], "fuzzy": traces["fuzzy"]},
                                    {"soft": traces["hard"], "fuzzy": traces["fuzzy"]}, labels=("base", "trained"))
    names = {d.name for d in both.data if d.fill is None and d.showlegend is not False}
    assert names == {"soft · base", "fuzzy · base", "soft · trained", "fuzzy · trained"} and "Fig. 4" in _title(both)


def test_side_by_side_one_column_per_mode_with_shared_axes(traces):
    fig = viz.side_by_side(viz.entropy_heatmap, traces)
    assert [a.text for a in fig.layout.annotations if a.name != "notes"] == list(MODES)
    heat = [d for d in fig.data if d.type == "heatmap"]
    assert [d.xaxis for d in heat] == ["x", "x2", "x3"] and [d.yaxis for d in heat] == ["y", "y2", "y3"]
    assert fig.layout.xaxis2.matches == "x" and fig.layout.xaxis3.matches == "x"
    assert fig.layout.yaxis2.matches == "y" and fig.layout.yaxis3.matches == "y"
    assert np.allclose(np.array(heat[2].z, dtype=float), analysis.entropy_matrix(traces["fuzzy"]), equal_nan=True)
    top = max(np.nanmax(analysis.entropy_matrix(t)) for t in traces.values())
    assert fig.layout.coloraxis.cmax == pytest.approx(top)  # one colour scale for all modes
    two_rows = viz.side_by_side(viz.noise_shift, traces, rollout=1)
    assert {(d.xaxis, d.yaxis) for d in two_rows.data} == {(f"x{i or ''}", f"y{i or ''}") for i in ("", 2, 3, 4, 5, 6)}
    assert two_rows.layout.yaxis5.matches == "y4" and two_rows.layout.xaxis6.matches == "x"
    assert sum(1 for d in two_rows.data if d.showlegend is not False and d.name == "nearest token") == 1
    with pytest.raises(ValueError, match="non-empty dict"):
        viz.side_by_side(viz.mixture_topk, {})
    with pytest.raises(ValueError, match="returns a plotly Figure"):
        viz.side_by_side(viz.soft_text_html, traces)


def test_figures_serialise_small_and_render_in_gradio(traces):
    figs = [viz.entropy_heatmap(traces["soft"]), viz.entropy_profiles(traces), viz.mixture_topk(traces["soft"]),
            viz.noise_shift(traces["soft"]), viz.diversity(traces), viz.trajectory_distance_heatmap(traces["soft"]),
            viz.projection(traces), viz.side_by_side(viz.entropy_heatmap, traces)]
    for fig in figs:
        assert len(fig.to_json()) < 3_000_000 and json.loads(fig.to_json())["data"]
    gr = pytest.importorskip("gradio")
    out = gr.Plot().postprocess(figs[0])
    assert out is not None and "heatmap" in json.dumps(out.model_dump() if hasattr(out, "model_dump") else out)


@pytest.mark.slow
def test_projection_with_umap(traces):
    fig = viz.projection(traces, color_by="step", method="umap", max_points=300)
    assert sum(len(d.x) for d in fig.data) == 300 and fig.layout.xaxis.title.text == "UMAP 1"
    assert "random 300 of" in _title(fig)


def test_method_curves_draw_the_seed_mean_and_a_clipped_band_from_three_seeds():
    from softviz.viz.training import MIN_BAND_SEEDS

    def entry(seeds, halves):
        return {"learning_rate": 1e-4, "seeds": seeds,
                "curve": {"step": [0, 50], "mean_ci": [(0.5, halves[0]), (0.9, halves[1])]}}

    summary = {"config": {"validation": "hard-greedy", "eval_size": 256},
               "methods": {"hard": entry([0, 1, 2], (0.02, 0.3)), "soft": entry([0, 1], (0.5, 0.5)),
                           "fuzzy": {"learning_rate": 5e-5, "seeds": []}}}
    fig = viz.method_curves(summary)
    lines = {d.name.split(" ")[0]: d for d in fig.data if d.fill is None}
    assert set(lines) == {"hard", "soft"}  # a method with no finished seed is left out
    assert list(lines["hard"].y) == pytest.approx([50, 90]) and "3 seeds" in lines["hard"].name
    bands = {d.legendgroup: d for d in fig.data if d.fill == "toself"}
    assert MIN_BAND_SEEDS == 3 and set(bands) == {"hard"}  # two seeds: no band (their t-interval is ±12.7 sd)
    # upper edge then lower edge reversed, clipped to 0-100%
    assert list(bands["hard"].y) == pytest.approx([52, 100, 60, 48])
    # the gain view: each run's own step 0 subtracted (points), the band not clipped
    summary["methods"]["hard"]["gain_curve"] = {"step": [0, 50], "mean_ci": [(0.0, 0.0), (0.4, 0.7)]}
    fig = viz.method_curves(summary, gain=True)
    lines = {d.name.split(" ")[0]: d for d in fig.data if d.fill is None}
    assert set(lines) == {"hard"} and list(lines["hard"].y) == pytest.approx([0, 40])
    band = next(d for d in fig.data if d.fill == "toself")
    assert list(band.y) == pytest.approx([0, 110, -30, 0])
    assert "gain" in fig.layout.yaxis.title.text


def test_training_curves_tick_whole_steps_only():
    short = viz.training_curves({"a": [{"step": 0, "val/greedy_accuracy": 0.5},
                                       {"step": 1, "reward": 3.0, "val/greedy_accuracy": 0.6}, {"step": 2, "reward": 4.0}]})
    assert all(short.layout[f"xaxis{i}"].dtick == 1 and short.layout[f"xaxis{i}"].tickformat == "d"
               for i in ("", "2"))
    long = viz.training_curves({"a": [{"step": s, "reward": float(s), "val/greedy_accuracy": 0.5} for s in range(31)]})
    assert long.layout.xaxis.dtick == long.layout.xaxis2.dtick == 4


def test_soft_text_marks_branch_points_and_the_selected_step(traces):
    t = traces["soft"]
    bp = analysis.branch_points(t)
    n = int(t.lengths[1])
    html = viz.soft_text_html(t, rollout=1, selected_step=2)
    assert html.count("border-top:3px solid #F58518") == int((bp["uncertain"] | bp["blended"])[1, :n].sum())
    assert html.count("outline:2px solid #E45756") == 1 and 'data-step="2" style="display:inline-flex;flex-direction:' \
        'column;margin:0 1px 4px 0;border-left:1px solid #eee;outline:2px solid #E45756' in html
    # a byte piece (U+FFFD when decoded alone) is named, not drawn as an empty box
    byte = dataclasses.replace(t, token_strings={**t.token_strings, int(t.topk_ids[1, 0, 0]): "\ufffd"})
    assert "‹byte›" in viz.soft_text_html(byte, rollout=1) and "\ufffd" not in viz.soft_text_html(byte, rollout=1)


def test_heatmap_marks_branch_points_and_selection_on_a_shared_scale(traces):
    t = traces["soft"]
    fig = viz.entropy_heatmap(t, branch_points=True, selected=(1, 4), zmax=3.0)
    bp = analysis.branch_points(t)
    marks = [d for d in fig.data if d.name == "branch points"][0]
    want = sorted(bp["positions"])
    assert sorted(zip(marks.y.tolist(), marks.x.tolist())) == want
    rect = [s for s in fig.layout.shapes if s.name == "selected"][0]
    assert (rect.x0, rect.x1, rect.y0, rect.y1) == (3.5, 4.5, 0.5, 1.5)
    assert fig.layout.coloraxis.cmax == 3.0
    for f in (viz.mixture_topk(t, 1, selected_step=4), viz.noise_shift(t, 1, selected_step=4)):
        bands = [s for s in f.layout.shapes if s.name == "selected"]
        assert bands and all((s.x0, s.x1) == (3.5, 4.5) for s in bands)


def test_first_split_finds_the_first_different_shadow_token(traces):
    t = traces["hard"]
    for a in range(t.num_rollouts):
        for b in range(t.num_rollouts):
            s = analysis.first_split(t, a, t, b)
            na, nb = int(t.lengths[a]), int(t.lengths[b])
            x, y = t.tokens[a, :na].tolist(), t.tokens[b, :nb].tolist()
            if s is None:
                assert x == y
            else:
                assert x[:s] == y[:s] and (s == min(na, nb) or x[s] != y[s])
    assert analysis.first_split(t, 0) is None  # against itself
    with pytest.raises(ValueError, match="out of range"):
        analysis.first_split(t, t.num_rollouts)
