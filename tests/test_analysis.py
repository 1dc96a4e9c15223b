"""softviz.analysis on small real traces of the embedded model: each number against a direct computation."""

import dataclasses
import math
from collections import Counter

import numpy as np
import pytest
import torch

from softviz import TraceConfig, analysis, generate
from softviz.evaluate import pass_at_k
from softviz.tasks import ArithmeticTask

TASK = ArithmeticTask()
EXAMPLES = TASK.examples("test", 8)
PICK = [EXAMPLES[7], EXAMPLES[4]]  # CoTs of different lengths (~37 and ~17 tokens) and a mix of right and wrong
PROMPTS = [TASK.prompt(e) for e in PICK]
GOLDS = [e.answer for e in PICK]


@pytest.fixture(scope="module")
def traces(embedded):
    model, tok = embedded
    cfg = TraceConfig(keep_inputs=True)
    return {mode: generate(model, tok, PROMPTS, mode, n=4, max_cot_tokens=48, seed=0, trace=cfg).trace
            for mode in ("hard", "soft", "fuzzy")}


def test_entropy_matrix_is_the_trace_entropy_with_nan_padding(traces):
    t = traces["soft"]
    H = analysis.entropy_matrix(t)
    valid = t.mask.numpy()
    assert H.shape == tuple(t.entropy.shape)
    assert np.array_equal(H[valid], t.entropy.numpy()[valid].astype(np.float64))
    assert np.isnan(H[~valid]).all() and (~valid).any()  # the two prompts' CoTs end at different steps
    assert np.allclose(np.nan_to_num(analysis.entropy_matrix(traces["hard"], "weight_entropy")), 0)  # hard: one token
    with pytest.raises(ValueError, match="field must be one of"):
        analysis.entropy_matrix(t, "logits")


def test_entropy_profile_counts_only_rollouts_still_thinking(traces):
    t = traces["soft"]
    p = analysis.entropy_profile(t)
    lengths = t.lengths.numpy()
    for s in (0, int(lengths.min()), t.num_steps - 1):
        alive = lengths > s
        assert p["count"][s] == alive.sum()
        assert p["mean"][s] == pytest.approx(t.entropy[torch.from_numpy(alive), s].double().mean().item())
    assert np.all(p["lo"] <= p["mean"] + 1e-12) and np.all(p["mean"] <= p["hi"] + 1e-12) and np.all(p["lo"] >= 0)
    assert list(p["step"]) == list(range(t.num_steps))


def test_band_stats_by_hand():
    # column 0: values 1 and 3 -> mean 2, sd sqrt(2), standard error 1, ci95 half-width 1.96
    v = np.array([[1.0, 5.0], [3.0, np.nan]])
    ci = analysis.band_stats(v, "ci95")
    assert ci["mean"].tolist() == [2.0, 5.0] and ci["count"].tolist() == [2, 1]
    assert ci["lo"][0] == pytest.approx(2 - 1.96) and ci["hi"][0] == pytest.approx(2 + 1.96)
    assert ci["lo"][1] == ci["hi"][1] == 5.0  # a single value has no spread
    sd = analysis.band_stats(v, "std")
    assert sd["hi"][0] == pytest.approx(2 + math.sqrt(2))
    iqr = analysis.band_stats(np.array([[0.0], [1.0], [2.0], [3.0], [4.0]]), "iqr")
    assert (iqr["lo"][0], iqr["hi"][0]) == (1.0, 3.0)
    with pytest.raises(ValueError, match="band must be"):
        analysis.band_stats(v, "minmax")


def test_nearest_summary(traces):
    t = traces["fuzzy"]
    s = analysis.nearest_summary(t)
    valid = t.mask.numpy()
    assert set(s) >= {"top1_score", "top1_cosine", "shadow_rank", "topk_mass"}
    assert all(a.shape == tuple(t.tokens.shape) and np.isnan(a[~valid]).all() for a in s.values())
    assert np.allclose(s["top1_cosine"][valid], t.nearest_scores[..., 0].numpy()[valid])
    # the rank is where the shadow token sits among the recorded neighbours (1-based), -1 when absent
    ids, tok = t.nearest_ids.numpy(), t.tokens.numpy()
    for b, step in zip(*np.nonzero(valid)):
        hit = np.nonzero(ids[b, step] == tok[b, step])[0]
        assert s["shadow_rank"][b, step] == (hit[0] + 1 if len(hit) else -1)
    assert (s["topk_mass"][valid] <= 1 + 1e-5).all() and (s["topk_mass"][valid] > 0.99).all()  # fuzzy ≈ one-hot
    # a hard token's fed input IS its embedding: cosine 1 to itself, the nearest token
    h = analysis.nearest_summary(traces["hard"])
    hv = traces["hard"].mask.numpy()
    assert np.allclose(h["top1_cosine"][hv], 1.0, atol=1e-5) and (h["shadow_rank"][hv] == 1).all()
    # absent shadow token -> rank -1 and no shadow score
    t2 = dataclasses.replace(t, nearest_ids=torch.full_like(t.nearest_ids, -5))
    s2 = analysis.nearest_summary(t2)
    assert (s2["shadow_rank"][valid] == -1).all() and np.isnan(s2["shadow_score"]).all()


def test_distinct_answers_and_correctness(traces):
    t = traces["soft"]
    answers, pidx = t.meta["answers"], t.meta["prompt_index"]
    counts = analysis.distinct_answers(t)
    want = Counter(f"#{p}: {analysis.NO_ANSWER if a is None else a}" for a, p in zip(answers, pidx))
    assert counts == dict(want) and list(counts.values()) == sorted(counts.values(), reverse=True)
    first = analysis.distinct_answers(t, prompt=0)
    assert first == dict(Counter(analysis.NO_ANSWER if a is None else a for a, p in zip(answers, pidx) if p == 0))
    assert sum(first.values()) == 4
    with pytest.raises(ValueError, match="prompt 5 is not in this trace"):
        analysis.distinct_answers(t, prompt=5)
    assert analysis.rollout_correct(t) == [None] * t.num_rollouts  # plain generate() records no gold
    ok = analysis.rollout_correct(t, GOLDS)
    assert ok == [a is not None and a.strip() == GOLDS[p] for a, p in zip(answers, pidx)]
    per_row = [GOLDS[p] for p in pidx]
    t_meta = dataclasses.replace(t, meta={**t.meta, "golds": per_row})  # as train() records them
    assert analysis.rollout_correct(t_meta) == ok
    with pytest.raises(ValueError, match="one per prompt"):
        analysis.rollout_correct(t, ["1", "2", "3"])
    counts_c, n = analysis.correct_counts(t, GOLDS)
    assert n == 4 and counts_c == [sum(ok[:4]), sum(ok[4:])]
    with pytest.raises(ValueError, match="pass gold="):
        analysis.correct_counts(t)


def test_pass_at_k_curve_is_the_unbiased_estimator():
    # n=4, c=1: pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5; c=2: 1 - C(2,2)/C(4,2) = 5/6; mean 2/3
    curve = analysis.pass_at_k_curve([1, 2], 4, ks=[1, 2, 4, 8])
    assert list(curve) == [1, 2, 4]  # k > n is dropped
    assert curve[2] == pytest.approx((0.5 + 5 / 6) / 2)
    assert curve[1] == pytest.approx((1 / 4 + 2 / 4) / 2) and curve[4] == 1.0
    default = analysis.pass_at_k_curve([3, 0, 7], 12)
    assert list(default) == [1, 2, 4, 8, 12]
    assert default[8] == pytest.approx(np.mean([pass_at_k(12, c, 8) for c in (3, 0, 7)]))
    with pytest.raises(ValueError, match="empty"):
        analysis.pass_at_k_curve([], 4)


def test_trajectory_distances_match_a_direct_loop(traces):
    t = traces["soft"]
    D = analysis.trajectory_distances(t)
    B = t.num_rollouts
    assert D.shape == (B, B) and np.allclose(D, D.T) and np.all(np.diag(D) == 0)
    x, lengths = t.inputs.double(), t.lengths.tolist()
    for a, b in [(0, 1), (0, 5), (3, 6)]:
        s = min(lengths[a], lengths[b])
        direct = (x[a, :s] - x[b, :s]).norm(dim=-1).mean().item()
        assert D[a, b] == pytest.approx(direct, rel=1e-4)


def test_noise_alone_separates_identical_mixtures_by_sigma_sqrt_2d(traces):
    # step 0 of two rollouts of one prompt mixes the same p, so only the noise differs: ‖σε_a − σε_b‖ ≈ σ√(2d)
    t = traces["fuzzy"]
    ref = analysis.noise_only_distance(t)
    d0 = (t.inputs[0, 0] - t.inputs[1, 0]).norm().item()
    assert ref == pytest.approx(t.meta["sigma"] * math.sqrt(2 * t.inputs.shape[-1]))
    assert d0 == pytest.approx(ref, rel=0.25)
    assert analysis.noise_only_distance(traces["hard"]) is None


def test_missing_inputs_name_the_setting(traces):
    bare = dataclasses.replace(traces["soft"], inputs=None)
    for fn in (analysis.trajectory_distances, analysis.project_inputs):
        with pytest.raises(ValueError, match=r"TraceConfig\(keep_inputs=True\)"):
            fn(bare)


def test_project_inputs_has_one_point_per_rollout_and_step(traces):
    table = analysis.project_inputs(traces)
    n = sum(int(t.lengths.sum()) for t in traces.values())
    assert len(table["x"]) == n == analysis.count_points(traces)
    assert set(table) == {"x", "y", "mode", "rollout", "step", "token", "nearest"}
    for label, t in traces.items():
        sel = table["mode"] == label
        got = sorted(zip(table["rollout"][sel].tolist(), table["step"][sel].tolist()))
        assert got == sorted((b, s) for b in range(t.num_rollouts) for s in range(int(t.lengths[b])))
        b, s = int(table["rollout"][sel][3]), int(table["step"][sel][3])
        assert table["token"][sel][3] == t.decode([t.tokens[b, s]])[0]
    # the PCA axes are sklearn's principal components, up to sign
    from sklearn.decomposition import PCA

    X = np.concatenate([t.inputs[t.mask].numpy() for t in traces.values()])
    ref = PCA(2).fit_transform(X)
    for i, col in enumerate(("x", "y")):
        assert abs(np.corrcoef(ref[:, i], table[col])[0, 1]) > 0.999
    small, info = analysis.project_inputs(traces, max_points=50, return_info=True)
    assert len(small["x"]) == 50 and info == {"total": n, "shown": 50, "explained": info["explained"]}
    assert 0 < info["explained"][1] <= info["explained"][0] < 1
    single = analysis.project_inputs(traces["hard"])
    assert set(single["mode"]) == {"hard"}
    with pytest.raises(ValueError, match="method must be"):
        analysis.project_inputs(traces, method="tsne")


@pytest.mark.slow
def test_project_inputs_umap(traces):
    table = analysis.project_inputs(traces, method="umap", max_points=300)
    assert len(table["x"]) == 300 and np.isfinite(table["x"]).all() and np.isfinite(table["y"]).all()


def test_branch_points_count_the_uncertain_and_blended_steps(traces):
    t = traces["soft"]
    bp = analysis.branch_points(t)
    valid = t.mask.numpy()
    H, top1 = t.entropy.numpy(), t.topk_weights[..., 0].numpy()
    assert bp["steps"] == valid.sum()
    assert np.array_equal(bp["uncertain"], (H > 0.672) & valid) and np.array_equal(bp["blended"], (top1 < 0.9) & valid)
    assert bp["frac_uncertain"] == pytest.approx(((H > 0.672) & valid).sum() / valid.sum())
    assert bp["frac_blended"] == pytest.approx(((top1 < 0.9) & valid).sum() / valid.sum())
    assert bp["positions"] == sorted({(int(b), int(s)) for b, s in zip(*np.nonzero((H > 0.672) | (top1 < 0.9)))
                                      if valid[b, s]})
    # thresholds move the count the right way, and the extremes are all or nothing
    everything = analysis.branch_points(t, entropy_threshold=-1.0, weight_threshold=2.0)
    assert everything["frac_uncertain"] == everything["frac_blended"] == 1.0
    nothing = analysis.branch_points(t, entropy_threshold=math.inf, weight_threshold=0.0)
    assert nothing["positions"] == [] and nothing["frac_uncertain"] == 0.0
    # hard rollouts record the sampling distribution's top weight: with τ = 1 it is p's, so blended <-> uncertain-ish
    hard = analysis.branch_points(traces["hard"])
    assert 0.0 <= hard["frac_blended"] <= 1.0 and hard["steps"] == traces["hard"].mask.sum()
    with pytest.raises(ValueError, match="entropy_threshold"):
        analysis.branch_points(t, entropy_threshold=float("nan"))
    with pytest.raises(ValueError, match="needs a Trace"):
        analysis.branch_points(t.entropy)
