"""Pure tensor math of soft tokens: mixture weights, p·E, noise, σ, Gaussian log-density, entropy, neighbours.

Equations refer to Butt et al. 2025 (arXiv 2509.19170) unless stated: p = softmax(logits/τ) (§3),
h̃⁰_t = p_{t−1}E + σε (eq. 6), σ = γ·RMS(E) (§4), log π(h̃⁰_t) = −‖h̃⁰_t − p_{t−1}E‖²/(2σ²) + c (eq. 9).
Shapes: B rows (rollouts), V vocabulary, d embedding size, k kept entries. All math runs in fp32.
"""

from __future__ import annotations

import math
import threading
from typing import Sequence

import torch
from torch import Tensor


Generators = Sequence[torch.Generator]  # one generator per row: a rollout replays alone or in any batch


def fp32(x: Tensor) -> Tensor:
    """At least fp32: bf16/fp16 go up to fp32, fp64 stays (so gradient checks can run in double)."""
    return x if x.dtype == torch.float64 else x.float()


# ---- distributions ---------------------------------------------------------------------------------

def cot_probs(logits: Tensor, temperature: float) -> Tensor:
    """p = softmax(logits / τ) in fp32 (paper §3); τ = 0 is the argmax one-hot, by continuity.

    Args: logits (B, V). Returns: (B, V) fp32, rows sum to 1.
    """
    logits = fp32(logits)
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    return torch.softmax(logits / temperature, dim=-1)


def filter_probs(probs: Tensor, top_k: int | None = None, top_p: float | None = None,
                 min_p: float | None = None) -> Tensor:
    """Soft Thinking's filters (Zhang et al. 2025), in its code's order: top-k, then top-p, then min-p, renormalised.

    Args: probs (B, V). Returns: (B, V) with the dropped entries set to 0, rows summing to 1.
    """
    if top_k is None and top_p is None and min_p is None:
        return probs
    keep = torch.ones_like(probs, dtype=torch.bool)
    if top_k is not None and top_k < probs.shape[-1]:
        kth = probs.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        keep &= probs >= kth
    if top_p is not None and top_p < 1:
        p = probs * keep
        p = p / p.sum(-1, keepdim=True)
        sorted_p, order = p.sort(-1, descending=True)
        # keep a token if the mass strictly before it is < top_p (so the top token is always kept)
        before = sorted_p.cumsum(-1) - sorted_p
        keep &= torch.zeros_like(keep).scatter(-1, order, before < top_p)
    if min_p is not None and min_p > 0:
        keep &= probs >= min_p * probs.max(-1, keepdim=True).values
    p = probs * keep
    return p / p.sum(-1, keepdim=True)


def entropy(probs: Tensor) -> Tensor:
    """H(p) = −Σ p log p in nats, with 0·log 0 = 0. probs (..., V) -> (...)."""
    p = fp32(probs)
    return -(p * torch.log(p.clamp_min(1e-30))).sum(-1)


# ---- randomness, one generator per row -------------------------------------------------------------

def row_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """A torch.Generator per row, seeded from `seeds` (see generate.rollout_seed)."""
    gens = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(s))
        gens.append(g)
    return gens


def _rand(gens: Generators, n: int, device, normal: bool = False) -> Tensor:
    draw = torch.randn if normal else torch.rand
    return torch.stack([draw(n, generator=g, device=device) for g in gens])  # (B, n)


def sample_categorical(probs: Tensor, gens: Generators) -> Tensor:
    """One token per row from probs (B, V), by inverse CDF with one uniform draw per row. Returns (B,) long."""
    return sample_tokens(probs, gens, 1)[:, 0]


def sample_tokens(probs: Tensor, gens: Generators, k: int) -> Tensor:
    """k independent tokens per row from probs (B, V), by inverse CDF on one cumulative sum: k uniform draws per
    row, one at a time, so the first token is the one sample_categorical would draw. Returns (B, k) long."""
    u = torch.cat([_rand(gens, 1, probs.device) for _ in range(k)], dim=1)  # (B, k)
    cdf = probs.cumsum(-1)  # (B, V)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return idx.clamp_max(probs.shape[-1] - 1)


def gaussian_noise(shape_d: int, sigma: float, gens: Generators, device) -> Tensor:
    """σ·ε with ε ~ N(0, I_d) drawn per row (paper eq. 6: fresh noise at every step and rollout). (B, d)."""
    return sigma * _rand(gens, shape_d, device, normal=True)


# ---- embeddings ------------------------------------------------------------------------------------

def embedding_rms(E: Tensor) -> float:
    """Per-coordinate RMS of the whole input-embedding matrix: sqrt(mean_ij E_ij²) (the paper's RMS, read per
    coordinate over all V rows; docs/method.md says why).

    Cached on the tensor until it is modified in place (a 150k x 896 matrix takes ~0.4 s on a CPU).
    """
    return _per_version(E, "_softviz_rms", lambda: E.detach().float().pow(2).mean().sqrt().item())


def _per_version(E: Tensor, name: str, compute):
    """compute(), cached as an attribute of E until E is modified in place (its _version changes)."""
    hit = getattr(E, name, None)
    if hit is None or hit[0] != E._version:
        hit = (E._version, compute())
        setattr(E, name, hit)
    return hit[1]


def noise_std(E: Tensor, gamma: float) -> float:
    """σ = γ·RMS(E) (paper §4: "0.33 times the root-mean-square norm of the token embeddings")."""
    return gamma * embedding_rms(E)


TINY_WEIGHT = 1e-12  # weights below this are skipped in p·E: together at most V·1e-12 of the mass, below fp32 rounding


def mixture_embedding(weights: Tensor, E: Tensor) -> Tensor:
    """The clean soft input h⁰ = p·E (paper eq. 5), in fp32 (fp64 stays fp64).

    Only the vocabulary columns where some row has a weight above TINY_WEIGHT are read: for fuzzy, top-k
    and peaked soft mixtures that is a few rows of E instead of all V. The skipped mass is at most
    V·1e-12 (1.5e-7 for a 150k vocabulary), below the rounding error of the dense fp32 sum, so the result
    is the full-vocabulary mixture of the paper to fp32 precision.

    Args: weights (B, V), E (V, d). Returns: (B, d).
    """
    weights = fp32(weights)
    cols = (weights > TINY_WEIGHT).any(0).nonzero().squeeze(-1)  # (K,)
    if len(cols) * 4 <= weights.shape[-1]:
        return weights[:, cols] @ E[cols].to(weights.dtype)
    return weights @ E.to(weights.dtype)


def gaussian_log_prob(x: Tensor, mean: Tensor, sigma: float, include_constant: bool = False) -> Tensor:
    """log N(x; mean, σ²I) = −‖x − mean‖²/(2σ²) [− (d/2)·log(2πσ²)] (paper eq. 9). (..., d) -> (...).

    The constant does not depend on the model and cancels in the gradient, so it is dropped by default.
    """
    if sigma <= 0:
        raise ValueError("gaussian_log_prob needs σ > 0: a noiseless soft token has no density")
    diff = fp32(x) - fp32(mean)
    lp = -diff.pow(2).sum(-1) / (2 * sigma**2)
    if include_constant:
        lp = lp - 0.5 * x.shape[-1] * math.log(2 * math.pi * sigma**2)
    return lp


def nearest_tokens(x: Tensor, E: Tensor, k: int, metric: str = "cosine", chunk: int = 256):
    """The k vocabulary rows of E nearest to each vector of x.

    Args: x (N, d), E (V, d); metric "cosine" (similarity, higher is nearer) or "l2" (distance, lower).
    Returns: ids (N, k) long, scores (N, k) fp32, nearest first.
    """
    if metric not in ("cosine", "l2"):
        raise ValueError(f"metric must be 'cosine' or 'l2', got {metric!r}")
    Ef = E.detach().float()
    e_norm2 = _per_version(E, "_softviz_norm2", lambda: Ef.pow(2).sum(-1))  # (V,) squared row norms
    ids, scores = [], []
    for xc in x.float().split(chunk):
        dots = xc @ Ef.T  # (n, V)
        if metric == "cosine":
            s = dots / (xc.norm(dim=-1, keepdim=True) * e_norm2.sqrt()).clamp_min(1e-12)
            v, i = s.topk(k, dim=-1)
        else:
            d2 = (xc.pow(2).sum(-1, keepdim=True) - 2 * dots + e_norm2).clamp_min(0)
            v, i = d2.topk(k, dim=-1, largest=False)
            v = v.sqrt()
        ids.append(i)
        scores.append(v)
    return torch.cat(ids), torch.cat(scores)


# ---- the weights of each mode ------------------------------------------------------------------------

def moi_weights(probs: Tensor, token: Tensor, beta: float) -> Tensor:
    """Mixture of Inputs (Zhuang et al. 2025, eq. 5): w = (H·p + (β + 1 − H)·onehot(y)) / (β + 1).

    H is the entropy of p normalised by the log of its support size (MoI uses the top-20 logprobs and
    log 20), so H ∈ [0, 1]. probs (B, V), token (B,) -> (B, V).
    """
    support = (probs > 0).sum(-1).float()
    H = (entropy(probs) / torch.log(support).clamp_min(1e-12)).clamp(0, 1).unsqueeze(-1)  # (B, 1)
    onehot = torch.nn.functional.one_hot(token, probs.shape[-1]).float()
    return (H * probs + (beta + 1 - H) * onehot) / (beta + 1)


def gumbel_log_prob(noisy: Tensor, log_probs: Tensor) -> Tensor:
    """log density of perturbed log-probs g' around log p: Σ_i −ε_i − exp(−ε_i), ε_i = g'_i − log p_i.

    The Gumbel(0, 1) density per coordinate (SofT-GRPO's policy log-prob, Zheng et al. 2025). Coordinates where
    g' is −inf (outside the support) carry no term. Its gradient in log p_i is 1 − exp(−ε_i): zero mean, unit
    variance, like a hard token's score. (..., k) -> (...), fp32.
    """
    on = torch.isfinite(noisy)
    eps = torch.where(on, fp32(noisy) - fp32(log_probs), 0.0).clamp(min=-30.0)
    return torch.where(on, -eps - torch.exp(-eps), 0.0).sum(-1)


_GLOBAL_RNG_LOCK = threading.Lock()  # threads (e.g. the app's concurrent requests) take turns with the global RNG


def dirichlet_weights(probs: Tensor, alpha: float, gens: Generators) -> Tensor:
    """Dirichlet resampling over the support of probs (Wu et al. 2025): w ~ Dir(α·p)."""
    rows = []
    for p, g in zip(probs, gens):
        idx = (p > 0).nonzero().squeeze(-1)
        conc = (alpha * p[idx]).clamp_min(1e-6)
        # Dir(c) = normalised Gamma(c_i, 1) draws. torch's Gamma sampler takes no generator, so we seed the
        # global RNG from this row's generator inside fork_rng (which restores the global state after).
        seed = int(torch.randint(0, 2**62, (1,), generator=g, device=p.device).item())
        with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[p.device] if p.is_cuda else []):
            torch.manual_seed(seed)
            gam = torch._standard_gamma(conc)
        w = torch.zeros_like(p)
        w[idx] = gam / gam.sum().clamp_min(1e-30)
        rows.append(w)
    return torch.stack(rows)
