"""RL for soft-token CoTs: advantages, teacher-forced sequence log-probs, and the policy-gradient loss.

The paper's objective (Butt et al. 2025, eq. 7-10, App. A): REINFORCE with a leave-one-out baseline (RLOO),
    L = −(1/(B·G)) Σ_b Σ_g A_bg · ( Σ_t log π(h̃_t | h̃_<t) + Σ_j log π(a_j | h̃, a_<j) ),
with log π(h̃_t | ·) = −‖h̃_t − p_{t−1}E‖²/(2σ²) for a soft or fuzzy CoT step (the stored noisy input is the
action, p_{t−1}E is recomputed by the current model), the categorical log-prob for a hard CoT token, and
the categorical log-prob of each sampled answer token. Prefilled tokens carry no term.

Where softviz departs from the paper, or fills a gap it leaves:
 1. GRPO advantages (group mean and std) are offered besides RLOO; RLOO is the default.
 2. Optional PPO-style per-token ratio clipping (`epsilon`) and a KL penalty to a frozen reference (`beta`,
    k3 estimator); the paper uses neither (both off by default). With one update per batch the clipped
    objective equals the plain one.
 3. Gradient-norm clipping at 1.0 by default (the paper does not say; the authors' next paper, arXiv 2602.03979,
    uses 1.0).
 4. Answers are sampled at temperature 1.0 in training (the paper says "sampled in a standard way").
 5. σ is computed once from the base model's embedding matrix and kept fixed while E trains: rollouts are
    drawn with it and record it (Rollouts.sigma), and the loss scores them with the σ they record.
 6. Rollouts use the engine's per-row generators; the paper's batch is 2 prompts x 32 samples, ours is set
    by `RLConfig` (small defaults for CPU).
 7. Every trainable method of softviz.policies trains here, each with its own density: besides the paper's
    Gaussian one, SofT-GRPO's Gumbel density of its perturbed top-k log-probs (preset "soft-grpo") and
    Multiplex Thinking's sum of K categorical log-probs (preset "multiplex"). The per-step log-prob is the
    policy's `log_prob`, the very function that scored the step at rollout time.
"""

from __future__ import annotations

import dataclasses
import inspect

import torch
from torch import Tensor

from softviz import mixing
from softviz.config import Mode
from softviz.generate import Rollouts, embedding_matrix
from softviz.policies import trainable_presets
from softviz.prefill import distinct_prompts, forward_kwargs


# ---- advantages --------------------------------------------------------------------------------------

def _grouped(rewards, group_size: int) -> Tensor:
    """(B·G,) rewards as (B, G) fp32, or ValueError when they do not split into groups of `group_size`."""
    r = torch.as_tensor(rewards, dtype=torch.float32).flatten()
    if r.numel() == 0 or r.numel() % group_size:
        raise ValueError(f"{r.numel()} rewards do not split into groups of {group_size} (prompt-major, one group "
                         "per prompt)")
    return r.view(-1, group_size)


def rloo_advantages(rewards: Tensor, group_size: int, valid: Tensor | None = None) -> Tensor:
    """A_bg = r_bg − mean of the other G−1 rewards of the group (Kool et al. 2019; paper App. A).

    Args: rewards (B·G,) grouped contiguously (prompt-major); valid (B·G,) bool, optional: False marks a
    rollout whose reward function returned None ("not applicable"): it gets advantage 0 and is left out of
    the others' baselines. Returns (B·G,); each group sums to zero.
    """
    if group_size < 2:
        raise ValueError("RLOO needs group_size >= 2: the baseline is the mean of the *other* samples")
    r = _grouped(rewards, group_size)  # (B, G)
    v = torch.ones_like(r) if valid is None else valid.view(-1, group_size).float()
    r = torch.where(v > 0, r, 0.0)
    others = v.sum(1, keepdim=True) - v  # (B, G) how many valid rewards the baseline averages (G - 1 when all are)
    baseline = (r.sum(1, keepdim=True) - r) / others.clamp_min(1)
    return torch.where((v > 0) & (others > 0), r - baseline, 0.0).view(-1)


def grpo_advantages(rewards: Tensor, group_size: int, scale: bool = True, eps: float = 1e-4,
                    valid: Tensor | None = None) -> Tensor:
    """A_bg = (r_bg − mean_g r) / (std_g r + eps) (Shao et al. 2024); `scale=False` keeps only the centring
    (Dr. GRPO). Args: rewards (B·G,); valid as in rloo_advantages (mean and std over the valid rewards).
    Returns (B·G,)."""
    if group_size < 2:
        raise ValueError("GRPO needs group_size >= 2 to normalise within a group")
    r = _grouped(rewards, group_size)
    if valid is None or bool(valid.all()):
        a = r - r.mean(1, keepdim=True)
        if scale:
            a = a / (r.std(1, keepdim=True) + eps)
        return a.view(-1)
    v = valid.view(-1, group_size).float()
    count = v.sum(1, keepdim=True)
    r = torch.where(v > 0, r, 0.0)
    mean = r.sum(1, keepdim=True) / count.clamp_min(1)
    a = (r - mean) * v
    if scale:
        std = ((a**2).sum(1, keepdim=True) / (count - 1).clamp_min(1)).sqrt()  # unbiased, as torch.std
        a = a / (std + eps)
    return torch.where((v > 0) & (count > 1), a, 0.0).view(-1)


# ---- teacher-forced log-probs ----------------------------------------------------------------------------

@dataclasses.dataclass
class SequenceLogProbs:
    """Per-action log-probs of a batch of rollouts under the current model (with grad)."""

    cot: Tensor  # (B, T): Gaussian (soft/fuzzy) or categorical (hard) term per CoT step
    answer: Tensor  # (B, A): categorical log-prob of each sampled answer token
    cot_mask: Tensor  # (B, T) bool
    answer_mask: Tensor  # (B, A) bool
    cot_entropy: Tensor  # (B, T) entropy of softmax(logits) at CoT positions (no grad), nats


def check_trainable(mode: Mode) -> None:
    """Only policies with a density can be trained by policy gradient; others get a ValueError naming why and
    the trainable presets."""
    policy = mode.policy
    if not policy.trainable:
        raise ValueError(f"mode {mode.label!r} cannot be trained by policy gradient: {policy.why_not_trainable()}. "
                         f"Trainable presets: {', '.join(trainable_presets())}")


def _layout(r: Rollouts):
    """Per row: prompt length P, CoT length T, prefill length F, answer length A; and the padded width."""
    P = torch.tensor([len(p) for p in r.prompt_ids])
    T = r.cot_lengths
    F = torch.tensor([len(p) for p in r.prefill_ids])
    A = r.answer_lengths
    return P, T, F, A, int((P + T + F + A).max())


def build_inputs(model, r: Rollouts, E: Tensor | None = None, prompt: bool = True):
    """inputs_embeds (B, L, d) for [prompt | CoT | prefill | answer], right-padded, and the attention mask.
    prompt=False leaves the prompt out: [CoT | prefill | answer], to follow a cached prompt.

    CoT positions hold the policy's replay of each stored action (softviz.policies.Policy.replay): the stored
    noisy input for soft and fuzzy (a constant: the action), a token's embedding for hard tokens, the mean of
    the K embeddings for multiplex. Gradients reach E wherever the replay reads it.
    """
    P, T, F, A, L = _layout(r)
    if not prompt:
        P, L = torch.zeros_like(P), int((T + F + A).max())
    B = len(P)
    device = next(model.parameters()).device
    ids = torch.zeros((B, L), dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.long)
    cot = torch.zeros((B, L), dtype=torch.bool)
    for b in range(B):
        p, t, a = int(P[b]), int(T[b]), int(A[b])
        row = (list(r.prompt_ids[b]) if prompt else []) + r.cot_tokens[b, :t].tolist() + list(r.prefill_ids[b]) + r.answer_ids[b, :a].tolist()
        ids[b, : len(row)] = torch.tensor(row)
        mask[b, : len(row)] = 1
        cot[b, p : p + t] = True
    emb = model.get_input_embeddings()(ids.to(device))  # (B, L, d), with grad into E
    valid = torch.arange(r.cot_tokens.shape[1])[None, :] < T[:, None]
    if bool(valid.any()):
        E = embedding_matrix(model) if E is None else E
        action = {k: v[valid].to(device) for k, v in r.cot_actions.items()}
        fed = r.mode.policy.replay(action, E)  # (N, d); policies index E first, then compute in fp32
        emb = emb.masked_scatter(cot.to(device)[..., None], fed.to(emb.dtype))
    return emb, mask.to(device)


def _shared_prompt_hidden(model, r: Rollouts, E: Tensor) -> Tensor | None:
    """The last hidden states of the teacher-forced pass with each distinct prompt run once: the prompts (left-
    padded) fill a KV cache, which every row of the prompt reuses for its [CoT | prefill | answer]. Returns
    (B, 1 + L', d), where index 0 is the prompt's last position (it predicts CoT step 0) and index j the
    continuation's j-th input: the layout of the full pass with the prompt cut to its last token. None when no
    two rows share a prompt, or the model takes no cache. The gradient flows through the cache into the prompt
    pass, so this equals the full pass (within float rounding) at a fraction of its cost when a group of G
    rollouts shares a long prompt (a chat template: about 250 of 320 tokens)."""
    from transformers import DynamicCache

    base = model.base_model
    if base is model or "use_cache" not in inspect.signature(base.forward).parameters:
        return None
    device = E.device
    ids, pmask, pos, rows = distinct_prompts(r.prompt_ids, 0, device)
    if len(ids) == len(rows):
        return None
    cache_name, _ = forward_kwargs(base)
    cache = DynamicCache(config=model.config)
    h_prompt = base(input_ids=ids, attention_mask=pmask, position_ids=pos, use_cache=True,
                    **{cache_name: cache}).last_hidden_state[:, -1]  # (U, d)
    cache.batch_select_indices(rows)  # indexing: differentiable, so gradients reach the prompt pass
    emb, cmask = build_inputs(model, r, E, prompt=False)
    P = torch.tensor([len(p) for p in r.prompt_ids], device=device)
    cpos = P[:, None] + torch.arange(emb.shape[1], device=device)[None]
    h = base(inputs_embeds=emb, attention_mask=torch.cat([pmask[rows], cmask], 1), position_ids=cpos,
             use_cache=True, **{cache_name: cache}).last_hidden_state
    return torch.cat([h_prompt[rows][:, None], h], 1)


def sequence_logprobs(model, r: Rollouts, *, chunk: int = 1024, mixture_embedding_grad: bool = True,
                      share_prompts: bool = True) -> SequenceLogProbs:
    """Recompute every action's log-prob in one teacher-forced pass (paper eq. 7-10; docs/method.md), with the
    rollout's own policy (r.mode.policy) and σ (r.sigma): what generate scored at rollout time, now under the
    current weights.

    Args:
        model: the policy (its current weights); r: rollouts it (or an earlier version) produced.
        chunk: positions per chunk when applying the LM head and the policy's density (bounds memory on large
            vocabularies).
        mixture_embedding_grad: False stops the Gaussian term's gradient into E through the mean p·E (it
            still reaches E through p, i.e. the LM head when tied, and through replayed token inputs).
        share_prompts: run each distinct prompt once and reuse its KV cache for the rows that share it (the G
            rollouts of a group); False runs every row's prompt (the same values, within float rounding).
    """
    policy = r.mode.policy
    check_trainable(r.mode)
    P, T, F, A, L = _layout(r)
    B = len(P)
    E = embedding_matrix(model)
    hidden = _shared_prompt_hidden(model, r, E) if share_prompts else None
    if hidden is None:
        emb, mask = build_inputs(model, r, E)
        hidden = model.base_model(inputs_embeds=emb, attention_mask=mask).last_hidden_state  # (B, L, d)
    else:  # the prompt cut to its last position: the same index arithmetic with P = 1
        P, L = torch.ones_like(P), hidden.shape[1]
    head = model.get_output_embeddings()
    device = hidden.device
    Tm, Am = r.cot_tokens.shape[1], r.answer_ids.shape[1]
    # position predicting CoT step t is P + t − 1; answer token j is predicted at P + T + F + j − 1
    t_idx = (P[:, None] + torch.arange(Tm)[None, :] - 1).clamp_max(L - 1)
    a_idx = ((P + T + F)[:, None] + torch.arange(Am)[None, :] - 1).clamp_max(L - 1)
    cot_mask = torch.arange(Tm)[None, :] < T[:, None]
    ans_mask = torch.arange(Am)[None, :] < A[:, None]
    rows = torch.arange(B)[:, None]
    E_density = E if mixture_embedding_grad else E.detach()  # in the model's dtype: p·E upcasts the rows it reads
    ans_temp = r.mode.answer_temperature or 1.0

    sel = cot_mask
    h_cot = hidden[rows.expand_as(t_idx)[sel], t_idx[sel].to(device)]  # (N, d)
    action = {k: v[sel].to(device) for k, v in r.cot_actions.items()}
    lps, Hs = [], []
    for s in range(0, len(h_cot), chunk):
        logits = mixing.fp32(head(h_cot[s : s + chunk]))
        Hs.append(mixing.entropy(torch.softmax(logits.detach(), -1)))
        lps.append(policy.log_prob(logits, {k: v[s : s + chunk] for k, v in action.items()}, E_density, r.sigma))
    cot = torch.zeros((B, Tm), device=device, dtype=lps[0].dtype if lps else torch.float32)
    cot_H = torch.zeros((B, Tm))
    if lps:  # boolean-mask assignment keeps the graph: gradients flow into the log-probs
        cot[sel.to(device)] = torch.cat(lps)
        cot_H[sel] = torch.cat(Hs).float().cpu()

    sel = ans_mask
    h_ans = hidden[rows.expand_as(a_idx)[sel], a_idx[sel].to(device)]
    tok_ans = r.answer_ids[sel].to(device)
    ans_lps = [torch.log_softmax(mixing.fp32(head(h_ans[s : s + chunk])) / ans_temp, -1)
               .gather(-1, tok_ans[s : s + chunk, None]).squeeze(-1) for s in range(0, len(h_ans), chunk)]
    answer = torch.zeros((B, Am), device=device, dtype=ans_lps[0].dtype if ans_lps else torch.float32)
    if ans_lps:
        answer[sel.to(device)] = torch.cat(ans_lps)
    # fresh masks: the ones above index the graph, and callers may edit what they get back
    return SequenceLogProbs(cot, answer, cot_mask.clone().to(device), ans_mask.clone().to(device), cot_H)


# ---- the loss ------------------------------------------------------------------------------------------------

def policy_loss(logp: SequenceLogProbs, advantages: Tensor, *, old: SequenceLogProbs | None = None,
                epsilon: float | None = None, ref: SequenceLogProbs | None = None,
                beta: float = 0.0) -> tuple[Tensor, dict]:
    """The paper's loss −mean_b(A_b · Σ_t log π_t), optionally with per-action ratio clipping and a KL penalty.

    Args:
        logp: current log-probs (with grad); advantages (B,) constants.
        old, epsilon: log-probs at rollout time and the PPO clip range; the ratio is per action.
        ref, beta: a frozen reference's log-probs and the KL weight (k3 estimator per action, summed).
    Returns: (loss, metrics) with metrics as floats.
    """
    A = advantages.detach().to(logp.cot.device).float()
    lp = torch.cat([logp.cot, logp.answer], 1)  # (B, T + A)
    mask = torch.cat([logp.cot_mask, logp.answer_mask], 1).float()
    metrics = {}
    if epsilon is not None:
        if old is None:
            raise ValueError("ratio clipping (epsilon) needs the rollout-time log-probs `old`")
        old_lp = torch.cat([old.cot, old.answer], 1).detach()
        ratio = torch.exp(lp - old_lp)
        clipped = ratio.clamp(1 - epsilon, 1 + epsilon)
        surrogate = torch.minimum(ratio * A[:, None], clipped * A[:, None])
        pg = -((surrogate * mask).sum(1)).mean()
        metrics["clip_ratio"] = float((((ratio - clipped).abs() > 0).float() * mask).sum() / mask.sum().clamp_min(1))
    else:
        pg = -(A * (lp * mask).sum(1)).mean()
    loss = pg
    if beta:
        if ref is None:
            raise ValueError("a KL penalty (beta > 0) needs the reference model's log-probs `ref`")
        diff = (torch.cat([ref.cot, ref.answer], 1).detach() - lp).clamp(-20, 20)
        kl = ((torch.exp(diff) - diff - 1) * mask).sum(1).mean()  # k3, summed over actions
        loss = loss + beta * kl
        metrics["kl"] = float(kl.detach())
    metrics["policy_loss"] = float(pg.detach())
    return loss, metrics


# ---- diagnostics -------------------------------------------------------------------------------------------

def gradient_snr(grads: Tensor) -> dict:
    """How much of a policy-gradient estimate is signal: K independent estimates of the same gradient.

    With g_k = g + n_k (n_k zero-mean noise), E[g_i·g_j] = ‖g‖² for i ≠ j and E‖g_k‖² = ‖g‖² + E‖n‖². So
        snr = mean_{i≠j}(g_i·g_j) / mean_k ‖g_k‖²   estimates ‖g‖² / (‖g‖² + E‖n‖²) ∈ [0, 1]
    (1: every batch points the same way; 0: pure noise; small negative values are sampling error). A batch
    of n rollouts with snr s gives, pooled over m batches, m·s / (1 + (m − 1)·s). `cos_halves` is the cosine
    between the means of the first and second halves of the estimates, a second, plainer reading.

    Args: grads (K, P): K >= 2 flattened gradient estimates from independent rollouts. Returns floats.
    Everything is a function of the K x K Gram matrix (`gram_snr`); `GramAccumulator` builds it one estimate
    at a time when K estimates of a large model do not fit in memory.
    """
    g = grads.double()
    return gram_snr(g @ g.T)


def gram_snr(gram: Tensor) -> dict:
    """`gradient_snr` from the Gram matrix G_ij = g_i·g_j of K >= 2 gradient estimates."""
    G = torch.as_tensor(gram, dtype=torch.float64)
    K = G.shape[0]
    if G.ndim != 2 or G.shape[1] != K or K < 2:
        raise ValueError(f"gradient_snr needs at least 2 independent gradient estimates (a K x K Gram matrix, K >= 2); "
                         f"got shape {tuple(G.shape)}")
    total = G.diagonal().mean()
    cross = (G.sum() - G.diagonal().sum()) / (K * (K - 1))
    h = K // 2
    ab = G[:h, h:].mean()  # (mean of the first half) · (mean of the second half)
    aa, bb = G[:h, :h].mean(), G[h:, h:].mean()
    denom = (aa.clamp_min(0) * bb.clamp_min(0)).sqrt()
    return {"snr": float(cross / total) if total > 0 else 0.0,
            "cos_halves": float(ab / denom) if denom > 0 else 0.0,
            "grad_norm": float(total.sqrt()), "signal_norm": float(cross.clamp_min(0).sqrt())}


def snr_interval(gram: Tensor, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of `gram_snr`'s snr: resample the K estimates with replacement; the cross term averages
    only pairs of distinct original estimates (a repeated estimate would count its noise as signal)."""
    G = torch.as_tensor(gram, dtype=torch.float64)
    K = G.shape[0]
    if K < 3:
        raise ValueError(f"snr_interval needs at least 3 gradient estimates; got {K}")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, K, (resamples, K), generator=gen)
    sub = G[idx.unsqueeze(2), idx.unsqueeze(1)]  # (R, K, K)
    distinct = idx.unsqueeze(2) != idx.unsqueeze(1)
    cross = (sub * distinct).sum((1, 2)) / distinct.sum((1, 2)).clamp_min(1)
    total = sub.diagonal(dim1=1, dim2=2).mean(1)
    snr = torch.where(total > 0, cross / total, torch.zeros_like(total))
    q = torch.quantile(snr, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(q[0]), float(q[1])


class GramAccumulator:
    """The Gram matrix of gradient estimates, accumulated as they come (`add`), for `gram_snr`.

    K estimates of a 135M-parameter model are 0.5 GB each in fp32: they are kept in one file per estimate
    under `folder` (a temporary folder by default, removed by `close`), never all in memory; each new estimate
    is dotted in float64 with the stored ones, chunk by chunk.
    """

    def __init__(self, folder: str | None = None, chunk: int = 1 << 24):
        import tempfile

        self._tmp = tempfile.TemporaryDirectory(prefix="softviz-gram-", dir=folder)
        self.folder, self.chunk = self._tmp.name, chunk
        self.rows: list[list[float]] = []
        self.size: int | None = None

    def _stored(self, k: int) -> Tensor:
        return torch.from_file(f"{self.folder}/{k}.f32", size=self.size, dtype=torch.float32)

    def add(self, g: Tensor) -> None:
        g = g.detach().reshape(-1).float().cpu().contiguous()
        if self.size is None:
            self.size = g.numel()
        elif g.numel() != self.size:
            raise ValueError(f"GramAccumulator.add: estimate has {g.numel()} entries, earlier ones {self.size}")
        dots = []
        for k in range(len(self.rows)):
            prev = self._stored(k)
            dots.append(sum(float(g[i:i + self.chunk].double() @ prev[i:i + self.chunk].double())
                            for i in range(0, self.size, self.chunk)))
        self_dot = sum(float(g[i:i + self.chunk].double().square().sum()) for i in range(0, self.size, self.chunk))
        g.numpy().tofile(f"{self.folder}/{len(self.rows)}.f32")
        for row, d in zip(self.rows, dots):
            row.append(d)
        self.rows.append(dots + [self_dot])

    @property
    def gram(self) -> Tensor:
        return torch.tensor(self.rows, dtype=torch.float64)

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
