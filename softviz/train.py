"""train(): RL fine-tuning with soft, fuzzy or hard CoTs, as a generator of per-step metrics.

    for m in train(model, tok, RLConfig(mode="soft", steps=60), output_dir="runs/soft"):
        print(m["step"], m["reward"], m.get("val/greedy_accuracy"))

Each step: B prompts x G rollouts (softviz.generate) -> rewards (the task's, TRL signature) -> advantages
(RLOO or GRPO) -> one teacher-forced pass (softviz.rl.sequence_logprobs) -> loss -> AdamW step with a
cosine schedule. Checkpoints hold model, optimizer, scheduler, RNG state and step, so a run resumes exactly;
greedy validation keeps the best model (paper §4, "model selection"). The math lives in softviz.rl.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

from softviz import checks, mixing, rl, sharding
from softviz.checkpoint import CHECKPOINT, load_checkpoint, load_sharded_checkpoint, save_checkpoint
from softviz.config import RLConfig, TraceConfig
from softviz.evaluate import evaluate
from softviz.files import atomic_file, make_folder
from softviz.generate import embedding_matrix, generate
from softviz.models import model_fingerprint, save_model
from softviz.parallel import Parallel
from softviz.tasks import get_task
from softviz.tasks.base import Task

BEST = "best"
FINAL = "final"  # the model after the last step, always written when a run finishes
METRICS = "metrics.jsonl"
RUN_INFO = "run.json"  # the config and the starting model's name and sha256 (models.model_fingerprint)


class NonFiniteError(ValueError):
    """A step's loss or gradient is inf or NaN: the step is not applied and the run stops."""


def step_seed(seed: int, step: int) -> int:
    digest = hashlib.sha256(f"softviz-train:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def cosine_schedule(optimizer, warmup: int, total: int):
    """Linear warm-up, then cosine decay to 0 (paper App. D: AdamW, cosine, 20 warm-up steps)."""
    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the records up to the checkpoint's step; drop later ones and a line torn by a kill mid-write."""
    if not path.exists():
        return

    def keep(line: str) -> bool:
        try:
            return json.loads(line)["step"] <= last_step
        except (json.JSONDecodeError, KeyError, TypeError):
            return False

    lines = [l for l in path.read_text().splitlines() if l.strip() and keep(l)]
    with atomic_file(path) as tmp:
        Path(tmp).write_text("".join(l + "\n" for l in lines))


def _rollout_metrics(r, rewards: torch.Tensor, every: torch.Tensor, G: int, task: Task, golds) -> dict:
    """Metrics of this process's rollouts `r` (rewards `rewards`); the group statistics from `every`, the rewards
    of the whole step (whole groups, wherever their samples ran)."""
    # rewards that the reward function called not applicable (None, NaN here) are left out of these
    stds = torch.stack([g[~g.isnan()].std() if int((~g.isnan()).sum()) > 1 else g.new_zeros(())
                        for g in every.view(-1, G)])
    valid = torch.arange(r.cot_tokens.shape[1])[None, :] < r.cot_lengths[:, None]
    correct = [task.is_correct(a, g) for a, g in zip(r.answers, golds)]
    m = {
        "reward": float(every.nanmean()) if bool((~every.isnan()).any()) else 0.0,
        "reward_std": float(stds.mean()),  # TRL: mean over groups of the within-group std
        "frac_reward_zero_std": float((stds == 0).float().mean()),
        "frac_reward_none": float(every.isnan().float().mean()),
        "accuracy": sum(correct) / len(correct),
        "cot/mean_length": float(r.cot_lengths.float().mean()),
        "cot/clipped_ratio": sum(e != "cue" for e in r.cot_end) / len(r.cot_end),
        "completions/mean_length": float(r.answer_lengths.float().mean()),
        "entropy": float(r.cot_entropy[valid].mean()),  # entropy of softmax(logits) over CoT steps, nats
    }
    lp = r.cot_logprobs[valid]
    m["logprob/cot_mean"], m["logprob/cot_std"] = float(lp.mean()), float(lp.std())  # per step, the policy's density
    return m


def train(model, tokenizer, cfg: RLConfig, *, output_dir: str | os.PathLike | None = None,
          reward_fn: Callable[..., list] | None = None, task: Task | None = None, resume: bool = True,
          progress: bool = True) -> Iterator[dict]:
    """Run RL on `model` in place, yielding one metrics dict per step (TRL's names where they mean the same).

    With validation on (cfg.eval_every > 0), a fresh run first yields a step-0 record holding only the
    greedy validation accuracy of the starting model, which is also the first `best/` model. Under
    `accelerate launch` the step's prompts are split across processes (see Parallel).

    Args:
        model, tokenizer: the policy (e.g. from load_model) and its tokenizer.
        cfg: RLConfig.
        output_dir: where checkpoints, the best model (`best/`), metrics.jsonl and traces go; None keeps
            nothing on disk. With `resume`, an existing checkpoint there is continued exactly.
        reward_fn: TRL-style `reward_fn(prompts=..., completions=..., answer=...) -> list[float]`;
            default: the task's reward (the paper's 100 / 10 / 0).
        task: default get_task(cfg.task).
        progress: show a tqdm bar (terminal or notebook).
    """
    if not isinstance(cfg, RLConfig):
        raise ValueError(f"cfg = {cfg!r} is invalid: allowed an RLConfig, e.g. RLConfig(mode='soft', steps=60)")
    if reward_fn is not None and not callable(reward_fn):
        raise ValueError(f"reward_fn = {reward_fn!r} is invalid: allowed a function "
                         "reward_fn(prompts=..., completions=..., answer=..., **kwargs) -> list of floats")
    task = task or get_task(cfg.task, chat_template=cfg.chat_template)
    if not isinstance(task, Task):
        raise ValueError(f"task = {task!r} is invalid: allowed a softviz Task (softviz.tasks.get_task(name))")
    if not task.answer_cue:
        raise ValueError(f"task {task.name!r} has no answer cue: the CoT could never end before its length limit")
    reward_fn = reward_fn or task.reward
    mode = cfg.rollout_mode
    rl.check_trainable(mode)
    par = Parallel()
    if par.fsdp and cfg.beta > 0:
        raise ValueError(f"RLConfig.beta = {cfg.beta}: the KL term's frozen reference model is not sharded under FSDP "
                         "yet; use beta = 0 (the paper's setting) or a DDP config")
    shard = par.rows(cfg.prompts_per_step, cfg.group_size)
    val = task.examples("validation", cfg.eval_size, seed=cfg.seed)[par.shard(cfg.eval_size, "RLConfig.eval_size")]
    if par.acc is not None and not par.fsdp:
        model.to(par.acc.device)
    out = Path(output_dir) if output_dir is not None else None
    if out is not None:
        make_folder(out)
    # the checkpoint to resume from: the kind this run writes where both are left (a kill between the two writes)
    whole = out / CHECKPOINT if out is not None and (out / CHECKPOINT).exists() else None
    sharded = sharding.latest_sharded(out) if out is not None and resume else None
    found = (sharded or whole) if par.sharded_checkpoints else (whole or sharded)
    fresh = not resume or found is None
    # the starting model's digest for run.json, read before FSDP shards it (the main process holds it whole)
    fingerprint = model_fingerprint(model) if fresh and out is not None and par.main else None
    model = par.prepare(model)  # FSDP: sharded in place; the optimizer's state follows the shards
    optimizer = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = cosine_schedule(optimizer, cfg.warmup_steps, cfg.steps)
    # σ₀ of the starting E (paper: σ is fixed): rollouts are drawn with it and the loss scores with what they record
    sigma = mixing.noise_std(embedding_matrix(model).detach(), mode.noise_scale) if mode.policy.uses_noise else 0.0
    ref = copy.deepcopy(model).eval().requires_grad_(False) if cfg.beta > 0 else None
    start, best = 0, -1.0
    if not fresh:
        if found == whole:
            ck = load_checkpoint(whole, model, optimizer, scheduler, config=dataclasses.asdict(cfg),
                                 need_ref=ref is not None, par=par)
        else:
            ck = load_sharded_checkpoint(sharded, model, optimizer, scheduler, config=dataclasses.asdict(cfg),
                                         need_ref=ref is not None)
        start, best, sigma = ck["step"], ck["best"], ck["sigma"]
        if par.main:
            _truncate_metrics(out / METRICS, start)  # steps after the checkpoint will be run again
        if ref is not None:
            ref.load_state_dict(ck["ref"])
    writes = out is not None and par.main
    bar = None
    if progress and par.main:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, initial=start, desc=f"RL {cfg.mode}/{cfg.algorithm}", unit="step")

    def validate() -> float:
        model.eval()
        with par.lock_step():
            acc = evaluate(model, tokenizer, task, val, cfg.greedy_mode, max_cot_tokens=cfg.max_cot_tokens,
                           max_answer_tokens=cfg.max_answer_tokens, seed=cfg.seed).pass_at[1]
        return par.mean({"acc": acc})["acc"]

    if start == 0 and writes:  # which run this is: its config and the model it started from
        with atomic_file(out / RUN_INFO) as tmp:
            Path(tmp).write_text(json.dumps({"config": dataclasses.asdict(cfg), "model": str(model.name_or_path),
                                             "model_sha256": fingerprint}, indent=1) + "\n")

    def save(folder: str) -> None:
        """The model as an ordinary Hugging Face folder (under FSDP gathered from the shards first)."""
        state = par.full_state(model)[0] if par.fsdp else None
        if writes:
            save_model(model, tokenizer, out / folder, state_dict=state)

    if start == 0 and cfg.eval_every:  # the starting point of the curve, and the first "best" model
        best = validate()
        if out is not None:
            save(BEST)
            with open(out / METRICS, "w") as f:
                f.write(json.dumps({"step": 0, "val/greedy_accuracy": best}) + "\n")
        yield {"step": 0, "val/greedy_accuracy": best, "val/best_greedy_accuracy": best}

    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        want_trace = writes and (step + 1) in cfg.trace_steps
        m, r, extra = _rl_step(model, tokenizer, cfg, task, reward_fn, mode, sigma, optimizer, scheduler, ref, par,
                               shard, step, want_trace)
        if cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            m["val/greedy_accuracy"] = acc = validate()
            if acc > best:
                best = acc
                if out is not None:
                    save(BEST)
            m["val/best_greedy_accuracy"] = best
        if want_trace:
            r.trace.meta.update({"train_step": step + 1, **extra})
            r.trace.save(out / "traces" / f"step{step + 1:05d}.safetensors")
        m["step_time"] = time.perf_counter() - t0
        if writes:
            with open(out / METRICS, "a") as f:
                f.write(json.dumps(m) + "\n")
        if out is not None and ((cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == cfg.steps):
            state = {"step": step + 1, "best": best, "sigma": sigma, "config": dataclasses.asdict(cfg)}
            if ref is not None:
                state["ref"] = ref.state_dict()
            save_checkpoint(out, model, optimizer, scheduler, state, par=par)
        par.barrier()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(reward=f"{m['reward']:.1f}", acc=f"{m['accuracy']:.2f}")
        yield m
    if bar is not None:
        bar.close()
    if out is not None:  # whatever eval_every and save_every were: the finished model, loadable by load_model
        save(FINAL)


def _param_groups(model, cfg: RLConfig) -> list[dict]:
    """AdamW groups: the embedding matrix (shared with the LM head when tied) at embedding_lr_scale x lr. Under
    FSDP the sharded parameters (DTensors) and the whole ones go in separate groups of the same settings
    (optimizers' multi-tensor kernels take one kind at a time)."""
    E = model.get_input_embeddings().weight
    rest = [p for p in model.parameters() if p is not E]
    kinds = [[p for p in rest if type(p).__name__ == "DTensor"], [p for p in rest if type(p).__name__ != "DTensor"]]
    groups = [{"params": kind} for kind in kinds if kind]
    if cfg.embedding_lr_scale > 0:
        groups.append({"params": [E], "lr": cfg.learning_rate * cfg.embedding_lr_scale})
    else:
        E.requires_grad_(False)
    return groups


def rollout_rewards(model, tokenizer, cfg: RLConfig, task: Task, examples, mode, seed: int, reward_fn=None, *,
                    trace: bool = False, prompt_index_offset: int = 0, step: int | None = None,
                    sigma: float | None = None, rows: slice | None = None, gather=None):
    """Roll out cfg.group_size samples per example and score them: (rollouts, rewards, advantages, golds).
    `sigma`: the run's fixed σ₀ (None: γ·RMS of the current E).

    Several processes: `rows` is this process's slice of the step's rows (global row indices, prompt-major;
    `examples` are the prompts those rows belong to, the first being prompt `prompt_index_offset`), and `gather`
    concatenates every process's rewards in row order, so each group's baseline is over the whole group.

    A reward of None means "not applicable to this completion" (TRL's convention): that rollout gets
    advantage 0 and stays out of its group's baseline; `rewards` holds NaN there. Anything else that is
    not a finite number stops the run with an error naming the step and the prompt (see check_rewards).
    """
    reward_fn = reward_fn or task.reward
    prompts = [task.prompt(e, tokenizer) for e in examples]
    model.eval()
    G = cfg.group_size
    local = None if rows is None else slice(rows.start - prompt_index_offset * G, rows.stop - prompt_index_offset * G)
    r = generate(model, tokenizer, prompts, mode, n=G, max_cot_tokens=cfg.max_cot_tokens,
                 max_answer_tokens=cfg.max_answer_tokens, seed=seed, answer_cue=task.answer_cue,
                 trace=TraceConfig() if trace else False, prompt_index_offset=prompt_index_offset,
                 sigma=sigma or None, rows=local)
    golds = [examples[i].answer for i in r.prompt_index.tolist()]
    row_prompts = [prompts[i] for i in r.prompt_index.tolist()]
    raw = reward_fn(prompts=row_prompts, completions=r.answer_texts, answer=golds)
    rewards = check_rewards(raw, row_prompts, r.answer_texts, step=step)
    every = gather(rewards) if gather is not None else rewards  # whole groups
    valid = ~every.isnan()
    adv = (rl.rloo_advantages(every, G, valid) if cfg.algorithm == "rloo"
           else rl.grpo_advantages(every, G, scale=cfg.scale_rewards, valid=valid))
    if gather is not None:
        adv = adv[rows]
    return r, rewards, adv, golds


def check_rewards(raw, prompts: list[str], completions: list[str], *, step: int | None = None) -> torch.Tensor:
    """A reward function's output as a float tensor (NaN where it returned None), or ValueError naming the
    step, the prompt and the completion of the first bad value: wrong type or length, bool, inf or NaN."""
    where = f"step {step}" if step is not None else "this batch"

    def fail(i: int | None, problem: str):
        at = "" if i is None else (f"; rollout {i}, prompt {_clip(prompts[i])}, completion {_clip(completions[i])}")
        raise ValueError(f"the reward function {problem} at {where}{at}. No update was made. A reward function "
                         "returns one finite float (or None: not applicable) per completion.")

    if isinstance(raw, torch.Tensor):
        raw = raw.tolist()
    if isinstance(raw, (str, bytes, dict)) or not hasattr(raw, "__len__"):
        fail(None, f"returned {type(raw).__name__} {_clip(repr(raw), quote=False)} instead of a list")
    raw = list(raw)
    if len(raw) != len(completions):
        fail(None, f"returned {len(raw)} rewards for {len(completions)} completions")
    values = []
    for i, v in enumerate(raw):
        if v is None:
            values.append(math.nan)
        elif not checks.is_real(v):
            fail(i, f"returned {v!r}, not a finite number")
        else:
            values.append(float(v))
    return torch.tensor(values, dtype=torch.float32)


def _clip(text: str, width: int = 80, quote: bool = True) -> str:
    text = " ".join(str(text).split())
    text = text if len(text) <= width else text[: width - 3] + "..."
    return repr(text) if quote else text


def rl_loss(model, cfg: RLConfig, r, adv, ref=None):
    """The policy-gradient loss of rollouts `r` under the current model (train mode, with grad): (loss, metrics).
    Each action is scored by the rollout's policy with the σ the rollout records."""
    model.train()
    logp = rl.sequence_logprobs(model, r, mixture_embedding_grad=cfg.mixture_embedding_grad)
    ref_lp = None
    if ref is not None:
        with torch.no_grad():
            ref_lp = rl.sequence_logprobs(ref, r)
    old = None
    if cfg.epsilon is not None:
        old = dataclasses.replace(logp, cot=r.cot_logprobs.to(logp.cot.device),
                                  answer=r.answer_logprobs.to(logp.answer.device))
    if cfg.cot_weight != 1.0:
        logp = dataclasses.replace(logp, cot=logp.cot * cfg.cot_weight)
    return rl.policy_loss(logp, adv, old=old, epsilon=cfg.epsilon, ref=ref_lp, beta=cfg.beta)


def rl_backward(model, cfg: RLConfig, r, adv, ref=None) -> tuple[float, dict]:
    """Backpropagate `rl_loss` of rollouts `r` into the parameters' .grad (added to what is there), in micro-batches
    of cfg.micro_batch rollouts (None: all at once). The loss is a mean over rollouts, so each micro-batch's loss
    weighted by its share of the rollouts sums to the same gradient, while only one micro-batch's activations are
    held: a 135M-parameter model's 64 rollouts of 300 tokens need about 23 GB in one pass, 3 GB in eight.
    Returns (loss, metrics) of the whole batch."""
    B = len(r)
    size = cfg.micro_batch or B  # one pass when unset: share 1, the plain loss and metrics
    actions = (r.cot_lengths + r.answer_lengths).float()
    total, out = 0.0, {}
    for s in range(0, B, size):
        sl = slice(s, min(s + size, B))
        loss, metrics = rl_loss(model, cfg, r.rows(sl), adv[sl], ref)
        share = (sl.stop - sl.start) / B
        (loss * share).backward()
        total += float(loss.detach()) * share
        for k, v in metrics.items():  # clip_ratio is a share of actions; the other metrics means over rollouts
            w = float(actions[sl].sum() / actions.sum().clamp_min(1)) if k == "clip_ratio" else share
            out[k] = out.get(k, 0.0) + v * w
    return total, out


def _rl_step(model, tokenizer, cfg: RLConfig, task: Task, reward_fn, mode, sigma, optimizer, scheduler, ref,
             par: Parallel, shard: slice, step: int, want_trace: bool):
    """One RL step on this process's share of the rollouts (`shard`: its rows and their prompts): rollouts,
    rewards, advantages, loss, update."""
    t0 = time.perf_counter()
    rows, prompts = shard
    # Prompts of step s are train examples [s·B, (s+1)·B): fixed per step, so a resumed run sees the same.
    examples = task.examples("train", cfg.prompts_per_step, seed=cfg.seed, start=step * cfg.prompts_per_step)[prompts]
    with par.lock_step():
        r, rewards, adv, golds = rollout_rewards(model, tokenizer, cfg, task, examples, mode,
                                                 step_seed(cfg.seed, step), reward_fn, trace=want_trace,
                                                 prompt_index_offset=prompts.start, step=step + 1, sigma=sigma,
                                                 rows=rows, gather=par.gather)
    t1 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss_value, loss_metrics = rl_backward(model, cfg, r, adv, ref)
    par.mean_grads(sharding.replicated(model) if par.fsdp else model.parameters())
    grad_norm = par.clip_grad_norm(model.parameters(), cfg.max_grad_norm)
    if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
        optimizer.zero_grad(set_to_none=True)  # this step's update is dropped; the weights are untouched
        raise NonFiniteError(f"step {step + 1}: the loss ({loss_value}) or the gradient norm ({grad_norm}) "
                             "is not finite, so no update was made and the model holds the weights of step "
                             f"{step}. Lower the learning rate or check the reward function and the model's dtype.")
    t2 = time.perf_counter()
    lr = scheduler.get_last_lr()[0]
    par.reshard(model)
    optimizer.step()
    scheduler.step()
    model.eval()
    t3 = time.perf_counter()
    m = {"step": step + 1, **_rollout_metrics(r, rewards, par.gather(rewards), cfg.group_size, task, golds),
         "loss": loss_value, **loss_metrics, "grad_norm": grad_norm, "learning_rate": lr,
         "advantage_abs_mean": float(adv.abs().mean()), "time/rollout": t1 - t0, "time/loss_backward": t2 - t1,
         "time/optimizer": t3 - t2,
         "memory/param_mb": sharding.local_parameter_bytes(model) / 2**20}  # this process's (its shards under FSDP)
    return par.mean(m), r, {"rewards": rewards.tolist(), "golds": golds}
