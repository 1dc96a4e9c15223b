"""Numbers behind the figures, computed from Traces: entropy per step, nearest-vocabulary summaries, diversity
across rollouts (distinct answers, trajectory distances, 2-D projections) and pass@k curves.

Pure numpy/torch on CPU: no model, no plotting. Steps are 0-based indices into the trace (step 0 = the first
CoT token); every (B, T) array is NaN past each rollout's CoT length.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Mapping, Sequence

import numpy as np
import torch

from softviz.stats import band_stats, pass_at_k
from softviz.trace import Trace

NO_ANSWER = "(no answer)"  # the answer key of rollouts without an extractable \boxed{} answer
EMPTY_ANSWER = '""'  # the answer key of an empty \boxed{}
ENTROPY_FIELDS = ("entropy", "weight_entropy")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def valid_mask(trace: Trace) -> np.ndarray:
    """(B, T) bool: True where the step exists (t < the rollout's CoT length)."""
    return _np(trace.mask)


def entropy_matrix(trace: Trace, field: str = "entropy") -> np.ndarray:
    """(B, T) float64 entropy per rollout and CoT step, in nats, NaN past each rollout's length.

    Args:
        field: "entropy" (of softmax(logits) at temperature 1: the model's uncertainty, paper Fig. 4) or
            "weight_entropy" (of the weights actually mixed; 0 for hard tokens).
    """
    if field not in ENTROPY_FIELDS:
        raise ValueError(f"field must be one of {ENTROPY_FIELDS}, got {field!r}")
    H = _np(getattr(trace, field)).astype(np.float64)  # (B, T)
    return np.where(valid_mask(trace), H, np.nan)


def entropy_profile(trace: Trace, field: str = "entropy", band: str = "ci95") -> dict[str, np.ndarray]:
    """Entropy per CoT step over the rollouts still in their CoT (the paper's Fig. 4 metric: non-pad only).

    Returns: {"step", "mean", "lo", "hi", "count"}, each (T,): step index, mean entropy (nats), the band's
    lower and upper edge (see `band_stats`; entropy is never negative, so lo is clipped at 0) and the number
    of rollouts that reached the step.
    """
    stats = band_stats(entropy_matrix(trace, field), band)
    stats["lo"] = np.maximum(stats["lo"], 0.0)
    return {"step": np.arange(trace.num_steps), **stats}


def nearest_summary(trace: Trace) -> dict[str, np.ndarray]:
    """How close each fed input is to the vocabulary, per rollout and step; all (B, T), NaN past the length.

    Returns:
        top1_score: similarity (cosine) or distance (l2, see trace.meta["nearest_metric"]) of the fed input to its
            nearest vocabulary token.
        top1_cosine: the same when the trace measured cosine, else all NaN.
        shadow_rank: rank of the shadow (argmax) token among the fed input's nearest tokens, 1 = nearest;
            -1 when it is not among the `nearest_k` recorded.
        shadow_score: cosine (or distance) of the fed input to the shadow token; NaN when it is not among them.
        nearest_is_shadow: 1.0 where the nearest token is the shadow token, else 0.0.
        topk_mass: sum of the top-k mixture weights recorded (1 minus the mass left to the rest of the vocabulary).
        top1_weight: the largest mixture weight.
        noise_norm: ‖σε‖ of the noise added at that step.
    """
    valid = valid_mask(trace)
    nan = lambda a: np.where(valid, a, np.nan)  # noqa: E731
    B, T = trace.tokens.shape
    ids, scores = _np(trace.nearest_ids), _np(trace.nearest_scores).astype(np.float64)  # (B, T, kn)
    kn = ids.shape[-1]
    if kn:
        match = ids == _np(trace.tokens)[..., None]  # (B, T, kn)
        found = match.any(-1)
        first = match.argmax(-1)  # (B, T) index of the shadow token among the neighbours
        rank = np.where(found, first + 1, -1).astype(np.float64)
        shadow_score = np.where(found, np.take_along_axis(scores, first[..., None], -1)[..., 0], np.nan)
        top1 = scores[..., 0]
    else:
        rank, shadow_score, top1 = np.full((B, T), -1.0), np.full((B, T), np.nan), np.full((B, T), np.nan)
    cosine = trace.meta.get("nearest_metric", "cosine") == "cosine"
    w = _np(trace.topk_weights).astype(np.float64)  # (B, T, k)
    return {
        "top1_score": nan(top1),
        "top1_cosine": nan(top1) if cosine else np.full((B, T), np.nan),
        "shadow_rank": nan(rank),
        "shadow_score": nan(shadow_score),
        "nearest_is_shadow": nan((rank == 1).astype(np.float64)),
        "topk_mass": nan(w.sum(-1)),
        "top1_weight": nan(w[..., 0] if w.shape[-1] else np.zeros((B, T))),
        "noise_norm": nan(_np(trace.noise_norm).astype(np.float64)),
    }


BRANCH_ENTROPY = 0.672  # nats: the 80th percentile of CoT token entropy in a real reasoning LLM (Wang et al. 2025,
# "Beyond the 80/20 rule"), used as the line above which a step is a "forking" token
BRANCH_WEIGHT = 0.9  # a mixture whose largest weight is below this is visibly a blend of tokens


def branch_points(trace: Trace, entropy_threshold: float = BRANCH_ENTROPY,
                  weight_threshold: float = BRANCH_WEIGHT) -> dict:
    """Where the model is unsure: the CoT steps worth a look, by two measures.

    Args:
        entropy_threshold: a step is uncertain when the entropy of softmax(logits) at temperature 1 exceeds this
            (nats). This is the model's own uncertainty, whatever the mode's temperature.
        weight_threshold: a step is blended when the largest weight actually mixed (at the mode's temperature;
            for hard modes, of the sampling distribution) is below this.

    Returns: {"uncertain": (B, T) bool, "blended": (B, T) bool, False past each rollout's length;
        "steps": the number of CoT steps, "frac_uncertain", "frac_blended": their shares of those steps (NaN when
        there are none); "positions": [(rollout, step), ...] where either holds, in order}.
    """
    if not isinstance(trace, Trace):
        raise ValueError(f"branch_points needs a Trace, got {type(trace).__name__}")
    for name, value in (("entropy_threshold", entropy_threshold), ("weight_threshold", weight_threshold)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or np.isnan(value):
            raise ValueError(f"{name} = {value!r} is invalid: give a number (inf: no step passes)")
    valid = valid_mask(trace)
    uncertain = (_np(trace.entropy) > entropy_threshold) & valid
    w = _np(trace.topk_weights)
    top1 = w[..., 0] if w.shape[-1] else np.ones(valid.shape, dtype=np.float32)
    blended = (top1 < weight_threshold) & valid
    steps = int(valid.sum())
    share = (lambda m: float(m.sum()) / steps) if steps else (lambda m: float("nan"))
    return {"uncertain": uncertain, "blended": blended, "steps": steps, "frac_uncertain": share(uncertain),
            "frac_blended": share(blended), "positions": [tuple(map(int, p)) for p in np.argwhere(uncertain | blended)]}


# ---- answers and correctness ------------------------------------------------------------------------------

def first_split(a: Trace, rollout_a: int, b: Trace | None = None, rollout_b: int = 0) -> int | None:
    """The first CoT step at which rollout `rollout_a` of `a` and rollout `rollout_b` of `b` (default: `a` itself)
    read different shadow tokens (the sampled token for hard modes, the argmax of the mixture otherwise); where
    one CoT is a prefix of the other, the step after the shorter one ends. None: the same tokens all along.
    Two modes' rollouts can agree on every shadow token and still differ in what was fed (the mixture, the noise):
    this compares the text, as the shadow text shows it."""
    b = a if b is None else b
    for t, r in ((a, rollout_a), (b, rollout_b)):
        if not isinstance(t, Trace):
            raise ValueError(f"first_split needs Traces, got {type(t).__name__}")
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 0 <= r < t.num_rollouts:
            raise ValueError(f"rollout {r!r} is out of range: the trace has {t.num_rollouts} rollouts (0-"
                             f"{t.num_rollouts - 1})")
    na, nb = int(a.lengths[rollout_a]), int(b.lengths[rollout_b])
    x, y = a.tokens[rollout_a, : min(na, nb)], b.tokens[rollout_b, : min(na, nb)]
    differ = (x != y).nonzero()
    if len(differ):
        return int(differ[0, 0])
    return None if na == nb else min(na, nb)


def num_prompts(trace: Trace) -> int:
    return len(set(trace.meta.get("prompt_index", [0] * trace.num_rollouts)))


def _answers(trace: Trace) -> list:
    answers = trace.meta.get("answers")
    if answers is None:
        raise ValueError("this trace has no answers in trace.meta['answers']; record it with "
                         "softviz.generate(..., trace=True)")
    return list(answers)


def rollout_correct(trace: Trace, gold: str | Sequence[str] | None = None) -> list[bool | None]:
    """Per rollout: is its answer correct? None when nothing says what the gold answer is.

    Uses, in order: `gold` (one string for every rollout, one per prompt, or one per rollout);
    trace.meta["correct"]; trace.meta["golds"] (one per rollout, see TraceMeta).
    Answers and golds are compared as numbers when they are integers ('1,200' equals '1200').
    """
    from softviz.tasks.base import normalize_number

    answers, B = _answers(trace), trace.num_rollouts
    if gold is None:
        if "correct" in trace.meta:
            return [None if c is None else bool(c) for c in trace.meta["correct"]]
        if "gold" in trace.meta:  # the name before TraceMeta; Trace.load converts old files
            raise ValueError('Trace.meta["gold"] is no longer read: set meta["golds"] (one gold answer per rollout)')
        gold = trace.meta.get("golds")
        if gold is None:
            return [None] * B
    if isinstance(gold, str):
        golds = [gold] * B
    else:
        gold = list(gold)
        pidx = trace.meta.get("prompt_index", [0] * B)
        if len(gold) == B:
            golds = gold
        elif len(gold) == num_prompts(trace):
            golds = [gold[p] for p in pidx]
        else:
            raise ValueError(f"gold has {len(gold)} entries; give one string, one per prompt "
                             f"({num_prompts(trace)}) or one per rollout ({B})")
    return [None if g is None else (a is not None and normalize_number(a) == normalize_number(str(g)))
            for a, g in zip(answers, golds)]


def answer_keys(trace: Trace, prompt: int | None = None) -> list[str | None]:
    """Per rollout, the key its answer is counted under (None for rollouts of other prompts than `prompt`).

    NO_ANSWER for rollouts without a boxed answer, EMPTY_ANSWER for an empty box; "#p: answer" when the trace
    holds several prompts and prompt is None, so answers to different problems stay apart.
    """
    answers = _answers(trace)
    pidx = trace.meta.get("prompt_index", [0] * len(answers))
    if prompt is not None and prompt not in pidx:
        raise ValueError(f"prompt {prompt} is not in this trace (prompt indices {sorted(set(pidx))})")
    many = num_prompts(trace) > 1 and prompt is None
    return [None if prompt is not None and p != prompt else
            (f"#{p}: " if many else "") + (NO_ANSWER if a is None else str(a) or EMPTY_ANSWER)
            for a, p in zip(answers, pidx)]


def distinct_answers(trace: Trace, prompt: int | None = None) -> dict[str, int]:
    """Answer -> number of rollouts that gave it, most frequent first (ties: first seen first).

    Keys as in `answer_keys`: NO_ANSWER for rollouts without a boxed answer; with several prompts in the trace
    and prompt=None, "#p: answer" so answers to different problems stay apart; prompt=p keeps only prompt p.
    """
    return dict(Counter(k for k in answer_keys(trace, prompt) if k is not None).most_common())


def correct_counts(trace: Trace, gold: str | Sequence[str] | None = None) -> tuple[list[int], int]:
    """(correct rollouts per prompt, samples per prompt n): the input of `pass_at_k_curve`."""
    ok = rollout_correct(trace, gold)
    if any(c is None for c in ok):
        raise ValueError("correctness is unknown for some rollouts: pass gold=... (one per prompt) or record "
                         "trace.meta['correct']")
    pidx = trace.meta.get("prompt_index", [0] * len(ok))
    per = Counter()
    sizes = Counter(pidx)
    for c, p in zip(ok, pidx):
        per[p] += int(c)
    ns = set(sizes.values())
    if len(ns) != 1:
        raise ValueError(f"prompts have different numbers of samples {dict(sizes)}; pass@k needs the same n")
    return [per[p] for p in sorted(sizes)], ns.pop()


def pass_at_k_curve(correct_counts: Sequence[int], n: int, ks: Sequence[int] | None = None) -> dict[int, float]:
    """k -> mean over problems of the unbiased pass@k (softviz.stats.pass_at_k), for the ks <= n.

    Args:
        correct_counts: correct samples per problem, each out of n.
        n: samples per problem.
        ks: the k values (default: 1, 2, 4, ... up to n, and n).
    """
    if not correct_counts:
        raise ValueError("correct_counts is empty: give the number of correct samples for at least one problem")
    if ks is None:
        ks = sorted({2**i for i in range(n.bit_length()) if 2**i <= n} | {n})
    ks = [int(k) for k in ks if 1 <= k <= n]
    if not ks:
        raise ValueError(f"no k in 1..n={n}")
    return {k: float(np.mean([pass_at_k(n, int(c), k) for c in correct_counts])) for k in ks}


# ---- trajectories of fed inputs ----------------------------------------------------------------------------

def _inputs(trace: Trace) -> torch.Tensor:
    if trace.inputs is None:
        raise ValueError("this trace has no fed inputs: record it with "
                         "softviz.generate(..., trace=TraceConfig(keep_inputs=True))")
    return trace.inputs.float()


def trajectory_distances(trace: Trace) -> np.ndarray:
    """(B, B) mean L2 distance between two rollouts' fed inputs, averaged over the steps both reached.

    d(a, b) = mean over t < min(len_a, len_b) of ‖x_a,t − x_b,t‖; NaN when the pair shares no step; 0 on the
    diagonal. Needs trace.inputs (TraceConfig(keep_inputs=True)).
    """
    x = _inputs(trace)  # (B, T, d)
    valid = trace.mask.float()  # (B, T)
    sq = x.pow(2).sum(-1)  # (B, T)
    # ‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b per step, without materialising (B, B, T, d)
    dots = torch.einsum("atd,btd->tab", x, x)  # (T, B, B)
    d2 = (sq.T[:, :, None] + sq.T[:, None, :] - 2 * dots).clamp_min(0)  # (T, B, B)
    shared = valid.T[:, :, None] * valid.T[:, None, :]  # (T, B, B)
    n = shared.sum(0)  # (B, B)
    total = (d2.sqrt() * shared).sum(0)
    out = torch.where(n > 0, total / n.clamp_min(1), torch.full_like(total, float("nan")))
    out.fill_diagonal_(0.0)
    return _np(out).astype(np.float64)


def noise_only_distance(trace: Trace) -> float | None:
    """Expected ‖x_a − x_b‖ of two rollouts mixing the same tokens with independent noise: σ·√(2d); None without
    noise (σ = 0) or without inputs."""
    sigma = float(trace.meta.get("sigma") or 0.0)
    if sigma <= 0 or trace.inputs is None:
        return None
    return sigma * float(np.sqrt(2 * trace.inputs.shape[-1]))


def count_points(traces: Mapping[str, Trace]) -> int:
    """Number of (rollout, step) points of all traces: what `project_inputs` projects before downsampling."""
    return int(sum(int(t.lengths.sum()) for t in traces.values()))


def _pca_2d(X: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Project (N, d) onto its two principal components; also their shares of the total variance."""
    X = (X - X.mean(0, keepdims=True)).astype(np.float64)
    vals, vecs = np.linalg.eigh(X.T @ X)  # (d,), (d, d) of the scatter matrix, ascending
    comps = vecs[:, ::-1][:, :2]  # largest two
    comps = comps * np.sign(comps[np.abs(comps).argmax(0), range(comps.shape[1])])  # deterministic signs
    share = (vals[::-1][:2] / max(vals.sum(), 1e-30)).tolist()
    return (X @ comps).astype(np.float32), share


def _umap_2d(X: np.ndarray, seed: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap warns about TensorFlow (ParametricUMAP) and random_state/n_jobs
        import umap  # lazy: importing it (numba) takes ~3-15 s

        if X.shape[1] > 50:  # PCA to 50 dims first: same neighbourhoods, a faster kNN graph
            Xc = X - X.mean(0, keepdims=True)
            _, _, vt = np.linalg.svd(Xc, full_matrices=False)
            X = Xc @ vt[:50].T
        n_neighbors = max(2, min(15, len(X) - 1))
        return umap.UMAP(n_components=2, n_neighbors=n_neighbors, random_state=seed).fit_transform(X).astype(np.float32)


def project_inputs(traces: Mapping[str, Trace] | Trace, method: str = "pca", max_points: int | None = None,
                   seed: int = 0, return_info: bool = False):
    """2-D projection of every fed input (one point per rollout and valid step) of one or several traces.

    All traces share one projection, fitted on the points kept. Above `max_points` points (default 10 000 for
    PCA, 3 000 for UMAP, which takes ~10 s per 3 000 points on 2 cores) a uniform random subset is kept; compare
    len(table["x"]) with count_points(traces) to see whether it was.

    Args:
        traces: label -> Trace (e.g. one per mode), or one Trace (labelled by its mode).
        method: "pca" (default, fast) or "umap" (imported lazily; needs umap-learn).
    Returns: a table as a dict of (N,) arrays: x, y, mode (the label), rollout, step, token (the shadow token's
        text), nearest (the nearest vocabulary token's text). With return_info, (table, info) where info has
        "total" (points before subsampling), "shown" and "explained" (PCA: each axis's share of the variance).
    """
    if method not in ("pca", "umap"):
        raise ValueError(f"method must be 'pca' or 'umap', got {method!r}")
    traces = as_trace_dict(traces)
    if max_points is None:
        max_points = 10_000 if method == "pca" else 3_000
    if max_points < 3:
        raise ValueError(f"max_points must be >= 3, got {max_points}")
    X, mode, rollout, step, token, nearest = [], [], [], [], [], []
    for label, tr in traces.items():
        x = _inputs(tr)
        b, t = torch.nonzero(tr.mask, as_tuple=True)
        X.append(_np(x[b, t]))
        mode += [label] * len(b)
        rollout.append(_np(b))
        step.append(_np(t))
        token += tr.decode(tr.tokens[b, t])
        near = tr.nearest_ids[b, t, 0] if tr.nearest_ids.shape[-1] else tr.tokens[b, t]
        nearest += tr.decode(near)
    dims = {x.shape[-1] for x in X}
    if len(dims) > 1:
        raise ValueError(f"traces have inputs of different sizes {sorted(dims)}: project traces of one model only")
    X = np.concatenate(X)
    N = len(X)
    if N < 3:
        raise ValueError(f"only {N} fed inputs in these traces; a 2-D projection needs at least 3")
    keep = np.arange(N)
    if N > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(N, max_points, replace=False))
    xy, explained = _pca_2d(X[keep]) if method == "pca" else (_umap_2d(X[keep], seed), None)
    table = {"x": xy[:, 0], "y": xy[:, 1], "mode": np.asarray(mode, dtype=object)[keep],
            "rollout": np.concatenate(rollout)[keep], "step": np.concatenate(step)[keep],
            "token": np.asarray(token, dtype=object)[keep], "nearest": np.asarray(nearest, dtype=object)[keep]}
    return (table, {"total": N, "shown": len(keep), "explained": explained}) if return_info else table


def as_trace_dict(traces: Mapping[str, Trace] | Trace) -> dict[str, Trace]:
    """A Trace becomes {its mode label: trace}; a mapping is checked to hold Traces."""
    if isinstance(traces, Trace):
        return {trace_label(traces): traces}
    if not isinstance(traces, Mapping) or not traces:
        raise ValueError("expected a Trace or a non-empty dict {label: Trace}")
    for k, v in traces.items():
        if not isinstance(v, Trace):
            raise ValueError(f"traces[{k!r}] is a {type(v).__name__}, not a softviz Trace")
    return dict(traces)


def trace_label(trace: Trace) -> str:
    return str(trace.meta.get("mode_label") or trace.meta.get("mode", {}).get("name") or "trace")
