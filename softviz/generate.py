"""The one batched, KV-cached decode loop: prompt prefill, CoT (hard tokens or mixtures), cue prefill, hard answer.

Every rollout row moves through four phases, one input vector per loop step:
  COT     feed a hard token's embedding, or a mixture p·E + σε (paper eq. 6); the CoT ends when the greedy
          shadow text ends with the answer cue (paper App. C), at max_cot_tokens, or at a Cold Stop;
  PREFILL feed `\\boxed{` after the cue, or the whole cue and `\\boxed{` when the CoT was cut (paper App. C);
  ANSWER  sample (or argmax) hard answer tokens until EOS or max_answer_tokens;
  DONE    feed padding that nothing reads.
All rows start the CoT at step 0, so CoT step t is loop step t for every row still in its CoT.
Each row owns a torch.Generator seeded from (seed, prompt, sample): a rollout replays alone or in any batch.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import os
from typing import Callable, Sequence

import torch
from torch import Tensor

from softviz import checks, mixing
from softviz.prefill import distinct_prompts, forward_kwargs
from softviz.config import PRESETS, Mode, TraceConfig
from softviz.tasks.base import ANSWER_CUE, BOX_OPEN, extract_boxed
from softviz.trace import Trace

COT, PREFILL, ANSWER, DONE = 0, 1, 2, 3
Progress = Callable[[int, int], None]  # progress(step, max_steps)
MAX_ROLLOUT_GB = 16.0  # default cap on what one generate() call may allocate (KV cache + records)


@dataclasses.dataclass
class Rollouts:
    """The result of `generate`: B = len(prompts) × n rows, prompt-major (row = prompt_index * n + sample), or the
    slice of them asked for (`rows`).

    Tensors are on CPU. CoT tensors are (B, T) or (B, T, d), padded past `cot_lengths`; answer tensors
    (B, A), padded past `answer_lengths`. `cot_inputs` are the inputs actually fed (noise included): the
    actions that training scores (None for hard tokens, whose actions are `cot_tokens`).
    """

    prompts: list[str]
    prompt_index: Tensor  # (B,) long
    sample_index: Tensor  # (B,) long
    prompt_ids: list[list[int]]  # per row, without padding
    cot_tokens: Tensor  # (B, T) long: sampled hard tokens, or the shadow tokens of mixtures
    cot_inputs: Tensor | None  # (B, T, d) fp32: the inputs fed (noise included); None when each is one token
    cot_lengths: Tensor  # (B,) long
    cot_logprobs: Tensor  # (B, T) fp32: log-prob of each CoT action at rollout time (0 when deterministic)
    cot_entropy: Tensor  # (B, T) fp32: entropy of softmax(logits) at each CoT step, nats
    cot_end: list[str]  # per row: "cue", "max_tokens" or "cold_stop"
    prefill_ids: list[list[int]]  # per row: the forced tokens between CoT and answer
    answer_ids: Tensor  # (B, A) long, EOS included when it was generated
    answer_lengths: Tensor  # (B,) long
    answer_logprobs: Tensor  # (B, A) fp32 at mode.answer_temperature (1.0 when greedy)
    cot_texts: list[str]
    answer_texts: list[str]  # prefill + answer, decoded
    answers: list[str | None]  # extracted from \boxed{...}
    mode: Mode
    seed: int
    sigma: float  # the noise standard deviation σ actually used (0 without Gaussian noise); training scores with it
    cot_actions: dict[str, Tensor] = dataclasses.field(default_factory=dict)  # name -> (B, T, ...) per policy
    trace: Trace | None = None

    def __len__(self) -> int:
        return len(self.prompt_index)

    def rows(self, sl: slice) -> "Rollouts":
        """Rows `sl` (a slice) as Rollouts of their own, sharing storage; `prompts` and the mode are kept whole.
        Training scores micro-batches of rows this way (RLConfig.micro_batch)."""
        if not isinstance(sl, slice):
            raise TypeError(f"Rollouts.rows takes a slice of rows, got {type(sl).__name__}")
        pick = lambda v: v[sl] if v is not None else None  # noqa: E731
        lists = ("prompt_ids", "cot_end", "prefill_ids", "cot_texts", "answer_texts", "answers")
        tensors = ("prompt_index", "sample_index", "cot_tokens", "cot_inputs", "cot_lengths", "cot_logprobs",
                   "cot_entropy", "answer_ids", "answer_lengths", "answer_logprobs")
        return dataclasses.replace(self, **{f: pick(getattr(self, f)) for f in lists + tensors},
                                   cot_actions={k: v[sl] for k, v in self.cot_actions.items()}, trace=None)


# Under FSDP every forward gathers each block's weights from all processes, so every process must run the same
# number of forwards. lock_step(fn) makes the decode loop ask fn(this process still has a running row) -> whether
# any process does: a process whose rows have all ended keeps stepping (on padding) until every process is done.
_STILL_RUNNING: contextvars.ContextVar[Callable[[bool], bool] | None] = contextvars.ContextVar(
    "softviz_still_running", default=None)


@contextlib.contextmanager
def lock_step(any_running: Callable[[bool], bool]):
    """Within the block, generate() runs its decode loop in lock-step with the other processes: it stops when
    `any_running(local_running)` (e.g. an all-reduced max) says that no process has a running row."""
    token = _STILL_RUNNING.set(any_running)
    try:
        yield
    finally:
        _STILL_RUNNING.reset(token)


def rollout_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """A stable 63-bit seed for one rollout, derived from (seed, prompt, sample), so any rollout replays alone."""
    digest = hashlib.sha256(f"softviz:{seed}:{prompt_index}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def embedding_matrix(model) -> Tensor:
    """The effective input-embedding matrix E (V, d): the weight times any scale the embedding module applies
    (Gemma scales by √d inside its embedding module, which `inputs_embeds` would bypass)."""
    emb = model.get_input_embeddings()
    if type(emb.weight).__name__ == "DTensor":
        raise ValueError("the model's input embedding is sharded (FSDP), but softviz reads the whole E outside the "
                         "forward (p·E, σ, nearest tokens): shard it with softviz.sharding.shard, which keeps the "
                         "embedding, LM head and final norm whole, or train under accelerate launch with an FSDP "
                         "config (configs/accelerate/fsdp_*.yaml)")
    scale = getattr(emb, "embed_scale", None)
    E = emb.weight
    return E * scale.to(E.dtype) if isinstance(scale, Tensor) else (E * scale if scale else E)


def _validate(tokenizer, prompts, n, max_cot_tokens, max_answer_tokens, context: int | None, prefill_len: int):
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of strings")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"prompt {i} is empty or not a string: {p!r}")
    n = checks.integer("n", n, 1, checks.MAX_ROLLOUTS)
    max_cot_tokens = checks.integer("max_cot_tokens", max_cot_tokens, 1, checks.MAX_TOKENS)
    max_answer_tokens = checks.integer("max_answer_tokens", max_answer_tokens, 1, checks.MAX_TOKENS)
    # a chat-formatted prompt already starts with the BOS token its template writes: add it only to raw text
    bos = getattr(tokenizer, "bos_token", None)
    ids = [tokenizer.encode(p, add_special_tokens=not (bos and p.startswith(bos))) for p in prompts]
    if context is not None:
        budget = context - max_cot_tokens - prefill_len - max_answer_tokens
        for i, row in enumerate(ids):
            if len(row) > budget:
                raise ValueError(
                    f"prompt {i} has {len(row)} tokens, but the model's context is {context} tokens and "
                    f"max_cot_tokens={max_cot_tokens} + prefill {prefill_len} + max_answer_tokens="
                    f"{max_answer_tokens} leave room for {max(budget, 0)}. Shorten the prompt or lower the limits.")
    return list(prompts), ids, n, max_cot_tokens, max_answer_tokens


def _check_options(mode, seed, trace, answer_cue, prompt_index_offset):
    """The non-size arguments of generate(): each wrong type gets a ValueError naming the argument."""
    if isinstance(mode, str) or mode is None:
        mode = Mode.preset(mode)
    elif not isinstance(mode, Mode):
        raise ValueError(f"mode = {mode!r} is invalid: allowed a Mode or a preset name ({', '.join(PRESETS)})")
    seed = checks.integer("seed", seed)
    if trace is True:
        trace = TraceConfig()
    elif trace is False or trace is None:
        trace = None
    elif not isinstance(trace, TraceConfig):
        raise ValueError(f"trace = {trace!r} is invalid: allowed True, False or a TraceConfig")
    if not isinstance(answer_cue, str) or not answer_cue.strip():
        raise ValueError(f"answer_cue = {answer_cue!r} is invalid: allowed a non-empty string, the text that ends the "
                         f"CoT (the paper's is {ANSWER_CUE!r}); an empty cue would end every CoT after one token")
    prompt_index_offset = checks.integer("prompt_index_offset", prompt_index_offset, 0)
    return mode, seed, trace, prompt_index_offset


def _env_float(name: str, default: float):
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"the environment variable {name}={raw!r} is not a number (GiB)") from None


def _check_memory(model, E: Tensor, B: int, prompt_len: int, steps: int, trace_cfg, max_gb: float) -> None:
    """Refuse a call whose KV cache and per-step records would take more than `max_gb` GiB, before allocating."""
    cfg = getattr(model, "config", None)
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None) or 1
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None) or 1
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or E.shape[1] // heads
    positions = prompt_len + steps
    kv = 2 * layers * kv_heads * head_dim * positions * E.element_size()  # keys and values, per row
    per_step = 4 * E.shape[1] * 2 + 64  # fed input (fp32, kept for training) + its recorded copy + scalars
    if trace_cfg:
        per_step += 12 * (trace_cfg.top_k + trace_cfg.nearest_k)
    need = B * (kv + steps * per_step + 4 * E.shape[0])  # + one row of fp32 probabilities per row
    if need > max_gb * 2**30:
        raise ValueError(f"this call would allocate about {need / 2**30:.1f} GiB ({B} rollouts x {positions} positions "
                         f"on a {layers}-layer model), above the cap of {max_gb:g} GiB: lower n, the number of prompts "
                         "or the token limits, or raise the cap (generate(..., max_memory_gb=...) or the environment "
                         "variable SOFTVIZ_MAX_MEMORY_GB)")


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[str] | str, mode: Mode | str = "soft", *, n: int = 1,
             max_cot_tokens: int = 128, max_answer_tokens: int = 32, seed: int = 0,
             trace: bool | TraceConfig = False, answer_cue: str = ANSWER_CUE,
             progress: Progress | None = None, prompt_index_offset: int = 0,
             max_memory_gb: float | None = None, sigma: float | None = None,
             rows: slice | None = None) -> Rollouts:
    """Roll out a CoT and a hard answer for each prompt, `n` times, under `mode`.

    Args:
        model, tokenizer: any Hugging Face causal LM with an input-embedding matrix (see load_model).
        prompts: prompt strings (a single string is one prompt).
        mode: a Mode or a preset name ("hard", "soft", "fuzzy-greedy", ...).
        n: rollouts per prompt.
        max_cot_tokens: CoT length limit L (paper: 128 for GSM8K training, 512 at evaluation).
        max_answer_tokens: answer length limit (paper: 32).
        seed: same seed, same rollouts, whatever the batch.
        trace: True or a TraceConfig to record a Trace (top-k weights, entropy, noise, nearest tokens...).
        answer_cue: the text whose appearance in the shadow text ends the CoT.
        progress: optional callback(step, max_steps).
        prompt_index_offset: the index of prompts[0] in a larger batch, for the rollout seeds: a shard of a
            batch then rolls out exactly as it would in the whole batch (used by multi-process training).
        max_memory_gb: refuse (ValueError) a call whose KV cache and records would need more memory than this;
            default SOFTVIZ_MAX_MEMORY_GB or 16 GiB.
        sigma: σ of the Gaussian noise, for modes that add it; default γ·RMS(E) of the model as it is now.
            Training passes σ₀ of the starting model, so rollouts are drawn and scored with one σ.
        rows: a slice of the len(prompts) × n rows (prompt-major) to roll out, e.g. one process's share when the
            samples of a step are split across processes; each row rolls out as it would in the whole batch
            (its seed is its prompt's and sample's). Default: all of them.

    Returns: Rollouts (with `.trace` when asked).

    Example:
        >>> model, tok = load_model()
        >>> r = generate(model, tok, ["User: Tom has 3 apples. ... Assistant:"], "soft", n=4, seed=0)
        >>> r.answers
    """
    mode, seed, trace_cfg, prompt_index_offset = _check_options(mode, seed, trace, answer_cue, prompt_index_offset)
    device = next(model.parameters()).device
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    pad_id = eos_id if pad_id is None else pad_id
    cue_core = answer_cue.rstrip()
    early_prefill = tokenizer.encode(answer_cue[len(cue_core):] + BOX_OPEN, add_special_tokens=False)
    late_prefill = tokenizer.encode(" " + cue_core + " " + BOX_OPEN, add_special_tokens=False)
    context = getattr(model.config, "max_position_embeddings", None)
    prompts, prompt_tok, n, max_cot_tokens, max_answer_tokens = _validate(
        tokenizer, prompts, n, max_cot_tokens, max_answer_tokens, context, len(late_prefill))

    E = embedding_matrix(model)  # (V, d) in the model's dtype
    cap = max_memory_gb if max_memory_gb is not None else _env_float("SOFTVIZ_MAX_MEMORY_GB", MAX_ROLLOUT_GB)
    every = [(pi, j) for pi in range(len(prompts)) for j in range(n)]  # prompt-major
    if rows is not None:
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise ValueError(f"rows = {rows!r} is invalid: give a slice of the {len(every)} rows (prompts x n)")
        every = every[rows]
        if not every:
            raise ValueError(f"rows = {rows!r} selects none of the {len(prompts)} x {n} rows")
    rows = every
    _check_memory(model, E, len(rows), max(map(len, prompt_tok)),
                  max_cot_tokens + len(late_prefill) + max_answer_tokens, trace_cfg,
                  checks.real("max_memory_gb", cap, 0, low_open=True))
    gens = mixing.row_generators([rollout_seed(seed, prompt_index_offset + pi, j) for pi, j in rows], device)
    row_ids = [prompt_tok[pi] for pi, _ in rows]
    policy = mode.policy
    if not policy.uses_noise:
        sigma = 0.0
    elif sigma is None:
        sigma = mixing.noise_std(E, mode.noise_scale)
    else:
        sigma = checks.real("sigma", sigma, 0, low_open=True, why="the noise std of a mode with γ > 0, or None")
    state = _RowState(len(rows))
    cue = _CueRule(tokenizer, answer_cue, early_prefill, late_prefill, max_cot_tokens, mode)
    with contextlib.ExitStack() as stack:
        recorder = None
        if trace_cfg and trace_cfg.layers:
            from softviz.hooks import recording
            recorder = stack.enter_context(recording(model, trace_cfg.layers))
        per_step = _decode(model, row_ids, pad_id, eos_id, E, sigma, policy, gens, state, cue, trace_cfg,
                           max_cot_tokens + len(late_prefill) + max_answer_tokens, max_answer_tokens, progress)
    return _assemble(tokenizer, model, prompts, rows, row_ids, per_step, state, policy, seed, sigma, trace_cfg, E,
                     recorder.outputs if recorder else None, pad_id)


class _RowState:
    """Per-row bookkeeping of the decode loop (plain lists: B is small and the work is per row)."""

    def __init__(self, B: int):
        self.phase = torch.full((B,), COT, dtype=torch.long)
        self.queue: list[list[int]] = [[] for _ in range(B)]  # forced tokens still to feed
        self.prefills: list[list[int]] = [[] for _ in range(B)]
        self.cot_end = [""] * B
        self.shadow: list[list[int]] = [[] for _ in range(B)]  # CoT text tokens
        self.answers: list[list[int]] = [[] for _ in range(B)]
        self.answer_lp: list[list[float]] = [[] for _ in range(B)]
        self.cold = [0] * B  # consecutive low-entropy steps (Cold Stop)


class _CueRule:
    """Where a row's CoT ends (paper App. C): its shadow text ends with the cue, a Cold Stop, or the limit."""

    def __init__(self, tokenizer, answer_cue, early_prefill, late_prefill, max_cot_tokens, mode):
        self.tokenizer, self.mode = tokenizer, mode
        self.core = answer_cue.rstrip()  # tokenizers attach the cue's trailing space to the next token
        ids = tokenizer.encode(" " + self.core, add_special_tokens=False)
        self.window = len(ids) + 2
        # the CoT ends when the decoded shadow text ends with the cue, so the tokenizer must be able to spell it
        back = tokenizer.decode(ids, skip_special_tokens=False)
        if self.core.strip() and " ".join(back.split()) != " ".join(self.core.split()):
            raise ValueError(f"the tokenizer cannot express the answer cue {self.core.strip()!r} (encoding then "
                             f"decoding it gives {back.strip()!r}), so no CoT could ever end on it. Use a task whose "
                             "cue the tokenizer can spell, or a tokenizer with byte fallback.")
        self.early, self.late, self.max_cot = early_prefill, late_prefill, max_cot_tokens

    def update(self, state: _RowState, b: int, token: int, cold_entropy: float) -> None:
        state.shadow[b].append(token)
        threshold = self.mode.cold_stop_entropy
        low = threshold is not None and cold_entropy < threshold
        state.cold[b] = state.cold[b] + 1 if low else 0
        tail = self.tokenizer.decode(state.shadow[b][-self.window:], skip_special_tokens=True)
        if tail.rstrip().endswith(self.core):
            end, prefill = "cue", self.early
        elif low and state.cold[b] >= self.mode.cold_stop_steps:
            end, prefill = "cold_stop", self.late
        elif len(state.shadow[b]) >= self.max_cot:
            end, prefill = "max_tokens", self.late
        else:
            return
        # this step's CoT input is still fed; the prefill follows from the next step
        state.cot_end[b], state.prefills[b], state.queue[b] = end, list(prefill), list(prefill)
        state.phase[b] = PREFILL


def _decode(model, row_ids, pad_id, eos_id, E, sigma, policy, gens, state: _RowState, cue: _CueRule, trace_cfg,
            max_steps: int, max_answer_tokens: int, progress) -> list[dict]:
    """The loop: prefill the prompts, then one input vector per row per step until every row is DONE."""
    from transformers import DynamicCache

    device = E.device
    embed = model.get_input_embeddings()
    E32 = mixing.fp32(E)  # p·E in fp32 (a no-op for fp32 models)
    cache_name, has_keep = forward_kwargs(model)
    # each distinct prompt is prefilled once and its cache copied to the rows that share it (the n samples)
    ids, mask, pos, row_to_prompt = distinct_prompts(row_ids, pad_id, device)
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                **{cache_name: cache}, **({"logits_to_keep": 1} if has_keep else {}))
    logits = out.logits[:, -1]
    if len(ids) < len(row_ids):
        cache.batch_select_indices(row_to_prompt)
        logits, mask, pos = logits[row_to_prompt], mask[row_to_prompt], pos[row_to_prompt]
    next_pos = pos[:, -1] + 1
    B, per_step = len(row_ids), []
    still_running = _STILL_RUNNING.get()
    for step in range(max_steps):
        if not bool(torch.isfinite(logits[(state.phase != DONE).to(device)]).all()):
            raise ValueError(f"the model returned non-finite logits (inf or NaN) at decode step {step} in "
                             f"{logits.dtype}: half precision overflows on some models. Load it in float32 or "
                             "bfloat16 (load_model(..., dtype=torch.bfloat16)).")
        inp = torch.zeros((B, E.shape[1]), dtype=E.dtype, device=device)
        cur = state.phase.clone()  # each row acts on its phase at the start of the step
        cot_rows = (cur == COT).nonzero().squeeze(-1)
        if len(cot_rows):
            fed, rec = _cot_step(logits[cot_rows.to(device)], policy, [gens[i] for i in cot_rows], E32, sigma,
                                 trace_cfg)
            inp[cot_rows.to(device)] = fed
            cold_H = rec.pop("cold_entropy").tolist()
            per_step.append(_scatter(rec, cot_rows, B))
            for j, (b, t) in enumerate(zip(cot_rows.tolist(), rec["tokens"].tolist())):
                cue.update(state, b, t, cold_H[j])
        hard_rows, hard_ids = [], []
        for b in (cur == PREFILL).nonzero().squeeze(-1).tolist():
            hard_rows.append(b)
            hard_ids.append(state.queue[b].pop(0))
            if not state.queue[b]:
                state.phase[b] = ANSWER
        ans_rows = (cur == ANSWER).nonzero().squeeze(-1).tolist()
        if ans_rows:
            tok, lp = _answer_step(logits[torch.tensor(ans_rows, device=device)], policy.mode.answer_temperature,
                                   [gens[b] for b in ans_rows])
            for b, t, l in zip(ans_rows, tok.tolist(), lp.tolist()):
                state.answers[b].append(t)
                state.answer_lp[b].append(l)
                if t == eos_id or len(state.answers[b]) >= max_answer_tokens:
                    state.phase[b] = DONE
                else:
                    hard_rows.append(b)
                    hard_ids.append(t)
        if hard_rows:
            inp[torch.tensor(hard_rows, device=device)] = embed(torch.tensor(hard_ids, device=device))
        if progress:
            progress(step + 1, max_steps)
        running = not bool((state.phase == DONE).all())
        if still_running is not None:
            running = still_running(running)
        if not running:
            break
        mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=device)], dim=1)
        out = model(inputs_embeds=inp[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                    use_cache=True, **{cache_name: out.cache if hasattr(out, "cache") else out.past_key_values})
        logits = out.logits[:, -1]
        next_pos = next_pos + 1
    return per_step


def _cot_step(logits: Tensor, policy, gens, E32: Tensor, sigma: float, trace_cfg: TraceConfig | None):
    """One CoT decision for the rows in its CoT, by the mode's policy. Returns (the input to feed, fp32;
    per-row records)."""
    mode = policy.mode
    step = policy.act(logits.float(), gens, E32, sigma)
    H = mixing.entropy(torch.softmax(logits.float(), -1))  # the model's own uncertainty, at τ = 1 (paper Fig. 4)
    # an action named "input" is the fed input: recorded once, as "inputs" (a zero-width marker stands for it)
    rec = {"tokens": step.token, "entropy": H, "logprob": step.log_prob,
           **{f"action/{k}": v if k != "input" else v[:, :0] for k, v in step.action.items()}}
    if mode.cold_stop_entropy is not None:  # Soft Thinking measures it after temperature, before filters
        rec["cold_entropy"] = mixing.entropy(mixing.cot_probs(logits, mode.cot_temperature))
    else:
        rec["cold_entropy"] = torch.zeros_like(H)
    if policy.feeds_mixtures or trace_cfg or "input" in step.action:
        rec["inputs"] = step.input
    if trace_cfg:
        w = step.weights if step.weights is not None else step.probs
        k = min(trace_cfg.top_k, w.shape[-1])
        rec["topk_weights"], rec["topk_ids"] = w.topk(k, dim=-1)
        rec["weight_entropy"] = mixing.entropy(step.weights) if step.weights is not None else torch.zeros_like(H)
        rec["noise_norm"] = step.noise.norm(dim=-1) if step.noise is not None else torch.zeros_like(H)
    return step.input, rec  # the caller's buffer casts it to the model's dtype


def _scatter(rec: dict, rows: Tensor, B: int) -> dict:
    """Per-row records of the CoT rows (n, ...) -> (B, ...) tensors with zeros for the other rows."""
    out = {}
    idx = rows.to(next(iter(rec.values())).device)
    for key, t in rec.items():
        full = torch.zeros((B, *t.shape[1:]), dtype=t.dtype, device=t.device)
        full[idx] = t
        out[key] = full
    return out


def _answer_step(logits: Tensor, temperature: float, gens):
    """Hard answer tokens: argmax (temperature 0) or a sample; log-probs at the sampling temperature (1 if greedy)."""
    logits = logits.float()
    if temperature == 0:
        tok = logits.argmax(-1)
        lp = torch.log_softmax(logits, -1)
    else:
        lp = torch.log_softmax(logits / temperature, -1)
        tok = mixing.sample_categorical(lp.exp(), gens)
    return tok, lp.gather(-1, tok[:, None]).squeeze(-1)


def _pad(seqs: list[list], fill, dtype) -> Tensor:
    width = max([len(s) for s in seqs] + [1])
    out = torch.full((len(seqs), width), fill, dtype=dtype)
    for i, s in enumerate(seqs):
        if s:
            out[i, : len(s)] = torch.tensor(s, dtype=dtype)
    return out


def _assemble(tokenizer, model, prompts, rows, row_ids, per_step, state: _RowState, policy, seed, sigma, trace_cfg,
              E, layer_outputs, pad_id) -> Rollouts:
    mode = policy.mode
    shadow, cot_end, prefills, answers, answer_lp = (state.shadow, state.cot_end, state.prefills, state.answers,
                                                     state.answer_lp)
    lengths = torch.tensor([len(s) for s in shadow])
    steps = {k: torch.stack([r[k] for r in per_step], dim=1).cpu() for k in per_step[0]}  # (B, T, ...)
    valid = torch.arange(lengths.max())[None, :] < lengths[:, None]  # (B, T)
    cot_tokens = steps["tokens"].masked_fill(~valid, pad_id)
    answer_texts = [tokenizer.decode(p + a, skip_special_tokens=True) for p, a in zip(prefills, answers)]
    out = Rollouts(
        prompts=prompts,
        prompt_index=torch.tensor([pi for pi, _ in rows]),
        sample_index=torch.tensor([j for _, j in rows]),
        prompt_ids=row_ids,
        cot_tokens=cot_tokens,
        cot_inputs=steps["inputs"] * valid[..., None] if policy.feeds_mixtures else None,
        cot_lengths=lengths,
        cot_logprobs=steps["logprob"] * valid,
        cot_entropy=steps["entropy"] * valid,
        cot_end=cot_end,
        prefill_ids=prefills,
        answer_ids=_pad(answers, pad_id, torch.long),
        answer_lengths=torch.tensor([len(a) for a in answers]),
        answer_logprobs=_pad(answer_lp, 0.0, torch.float32),
        cot_texts=[tokenizer.decode(s, skip_special_tokens=True) for s in shadow],
        answer_texts=answer_texts,
        answers=[extract_boxed(t) for t in answer_texts],
        mode=mode, seed=seed, sigma=sigma,
    )
    for key, t in steps.items():
        if key == "action/input":
            out.cot_actions["input"] = out.cot_inputs if out.cot_inputs is not None else steps["inputs"] * valid[..., None]
        elif key.startswith("action/"):
            name = key[len("action/"):]
            inside = valid.view(*valid.shape, *[1] * (t.dim() - 2))
            out.cot_actions[name] = torch.where(inside, t, torch.tensor(policy.action_fill.get(name, 0), dtype=t.dtype))
    if trace_cfg:
        out.trace = _build_trace(out, steps, valid, trace_cfg, tokenizer, model, E, layer_outputs)
    return out


def _build_trace(r: Rollouts, steps: dict, valid: Tensor, cfg: TraceConfig, tokenizer, model, E, layer_outputs):
    B, T = valid.shape
    inputs = steps["inputs"]  # (B, T, d) fp32
    kn = min(cfg.nearest_k, E.shape[0])
    near_ids = torch.zeros((B, T, kn), dtype=torch.long)
    near_scores = torch.zeros((B, T, kn))
    if kn:
        # One batched search over all valid steps after the loop: E is read once, not once per step.
        ids, scores = mixing.nearest_tokens(inputs[valid].to(E.device), E, kn, cfg.nearest_metric)
        near_ids[valid], near_scores[valid] = ids.cpu(), scores.cpu()
    layers = {}
    for name, outs in (layer_outputs or {}).items():
        layers[name] = torch.stack(outs[1 : T + 1], dim=1) * valid[..., None]  # output at CoT input t: call t+1
    tokens = r.cot_tokens
    used = torch.cat([tokens[valid], steps["topk_ids"][valid].flatten(), near_ids[valid].flatten()]).unique()
    token_strings = {int(i): tokenizer.decode([int(i)]) for i in used.tolist()}
    meta = {
        "mode": dataclasses.asdict(r.mode), "mode_label": r.mode.label, "seed": r.seed, "sigma": r.sigma,
        "weights_name": r.mode.policy.weights_name,  # what topk_weights are: mixture weights or probabilities
        "model": getattr(model, "name_or_path", None) or model.config.model_type,
        "prompts": r.prompts, "prompt_index": r.prompt_index.tolist(), "sample_index": r.sample_index.tolist(),
        "cot_texts": r.cot_texts, "answer_texts": r.answer_texts, "answers": r.answers, "cot_end": r.cot_end,
        "nearest_metric": cfg.nearest_metric,
    }
    return Trace(tokens=tokens, topk_ids=steps["topk_ids"], topk_weights=steps["topk_weights"] * valid[..., None],
                 entropy=r.cot_entropy, weight_entropy=steps["weight_entropy"] * valid,
                 noise_norm=steps["noise_norm"] * valid, nearest_ids=near_ids, nearest_scores=near_scores,
                 lengths=r.cot_lengths, meta=meta, token_strings=token_strings,
                 inputs=inputs * valid[..., None] if cfg.keep_inputs else None, layers=layers)
