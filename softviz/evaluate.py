"""Evaluation: accuracy and pass@k (unbiased estimator, softviz.stats) of a model under a decoding mode on a
task split, and the NLL of worked solutions."""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import torch

from softviz import checks
from softviz.config import Mode
from softviz.generate import generate
from softviz.stats import pass_at_k  # the estimator lives below the engine; importable from here too
from softviz.tasks.base import Example, Task


@dataclasses.dataclass
class EvalResult:
    mode: str
    problems: int
    samples: int  # per problem
    correct: list[int]  # per problem, out of `samples`
    pass_at: dict[int, float]  # k -> mean pass@k over problems
    mean_reward: float
    boxed_rate: float  # share of rollouts with an extractable \boxed{} answer
    mean_cot_length: float
    seconds: float
    entropy_by_position: list[float] = dataclasses.field(default_factory=list)  # mean CoT entropy of p per step
    mean_cot_entropy: float | None = None  # mean entropy of p (τ = 1) over every CoT step of every rollout
    cue_rate: float | None = None  # share of rollouts whose CoT ended on the answer cue (not at the length limit)

    def summary(self) -> str:
        ks = ", ".join(f"pass@{k} {100 * v:.1f}%" for k, v in self.pass_at.items())
        return (f"{self.mode}: {self.problems} problems x {self.samples} samples: {ks}; "
                f"boxed {100 * self.boxed_rate:.0f}%, "
                + (f"CoT ended on the cue {100 * self.cue_rate:.0f}%, " if self.cue_rate is not None else "")
                + f"mean CoT {self.mean_cot_length:.1f} tokens, {self.seconds:.0f}s")


def evaluate(model, tokenizer, task: Task, examples: Sequence[Example], mode: Mode | str, *, n: int = 1,
             ks: Sequence[int] = (1,), max_cot_tokens: int = 128, max_answer_tokens: int = 32, seed: int = 0,
             batch_rows: int = 256, progress=None, entropy_profile: bool = False) -> EvalResult:
    """Roll out `n` samples per example under `mode` and score them with the task's checker.

    With `entropy_profile`, also the mean entropy of p (nats, at τ = 1) at each CoT position over all
    rollouts that reach it (the paper's Fig. 4 profile).
    """
    from softviz.config import TraceConfig

    mode = mode if isinstance(mode, Mode) else Mode.preset(mode)
    n = checks.integer("n", n, 1, checks.MAX_ROLLOUTS)
    if isinstance(ks, (str, bytes)) or not hasattr(ks, "__iter__"):
        raise ValueError(f"ks = {ks!r} is invalid: allowed a sequence of integers k with 1 <= k <= n = {n}")
    ks = sorted({checks.integer("ks[]", k, 1, n, why=f"pass@k needs k <= n = {n} samples per problem") for k in ks})
    if not ks:
        raise ValueError("ks is empty: allowed a sequence of integers k with 1 <= k <= n, e.g. (1,)")
    if not isinstance(task, Task):
        raise ValueError(f"task = {task!r} is invalid: allowed a softviz Task (softviz.tasks.get_task(name))")
    if isinstance(examples, (str, bytes)) or not all(isinstance(e, Example) for e in examples):
        raise ValueError("examples must be a list of softviz Examples, e.g. task.examples('test', 100)")
    if len(examples) == 0:
        raise ValueError("evaluate() got no examples: pass at least one problem (e.g. task.examples('test', 100))")
    batch_rows = checks.integer("batch_rows", batch_rows, 1)
    per_batch = max(1, batch_rows // n)
    correct, rewards, boxed, cued, lengths = [], [], 0, 0, []
    H_sum = torch.zeros(max_cot_tokens, dtype=torch.float64)
    H_count = torch.zeros(max_cot_tokens, dtype=torch.float64)
    t0 = time.time()
    for start in range(0, len(examples), per_batch):
        chunk = examples[start : start + per_batch]
        r = generate(model, tokenizer, [task.prompt(e, tokenizer) for e in chunk], mode, n=n, max_cot_tokens=max_cot_tokens,
                     max_answer_tokens=max_answer_tokens, seed=seed + start, answer_cue=task.answer_cue,
                     trace=TraceConfig(top_k=1, nearest_k=0) if entropy_profile else False)
        if entropy_profile:
            T = r.trace.entropy.shape[1]
            H_sum[:T] += (r.trace.entropy.double() * r.trace.mask).sum(0)
            H_count[:T] += r.trace.mask.double().sum(0)
        golds = [chunk[i].answer for i in r.prompt_index.tolist()]
        scores = task.reward(completions=r.answer_texts, answer=golds)
        rewards += scores
        boxed += sum(a is not None for a in r.answers)
        cued += r.cot_end.count("cue")
        lengths += r.cot_lengths.tolist()
        for i in range(len(chunk)):
            correct.append(sum(task.is_correct(a, chunk[i].answer) for a in r.answers[i * n : (i + 1) * n]))
        if progress:
            progress(min(start + per_batch, len(examples)), len(examples))
    pass_at = {k: sum(pass_at_k(n, c, k) for c in correct) / len(correct) for k in ks}
    profile = (H_sum[H_count > 0] / H_count[H_count > 0]).tolist() if entropy_profile else []
    mean_H = float(H_sum.sum() / H_count.sum()) if entropy_profile and H_count.sum() > 0 else None
    return EvalResult(mode.label, len(examples), n, correct, pass_at, sum(rewards) / len(rewards),
                      boxed / len(rewards), sum(lengths) / len(lengths), time.time() - t0, profile, mean_H,
                      cued / len(rewards))


@torch.no_grad()
def solution_nll(model, tokenizer, task: Task, examples: Sequence[Example], *, batch: int = 64) -> dict:
    """Per-token NLL (nats) of the correct worked solution, teacher-forced after the prompt: the analogue of
    the paper's "softer touch" measure (Table 2: the NLL of the correct answer under the fine-tuned model).

    Returns {"solution": mean NLL per token of the whole solution, "answer": of the tokens after the answer
    cue (the boxed answer), "problems": n}. Needs examples with a worked `reasoning` that contains the cue.
    """
    if len(examples) == 0:
        raise ValueError("solution_nll() got no examples: pass at least one problem with a worked solution")
    if any(e.reasoning is None or task.answer_cue not in e.reasoning for e in examples):
        raise ValueError(f"solution_nll needs examples whose `reasoning` is a worked solution containing the answer "
                         f"cue {task.answer_cue!r}; task {task.name!r} does not provide them")
    device = next(model.parameters()).device
    sums = {"solution": 0.0, "answer": 0.0}
    counts = {"solution": 0, "answer": 0}
    for s in range(0, len(examples), batch):
        rows, spans = [], []
        for e in examples[s : s + batch]:
            # cut before the cue's trailing space, which the tokenizer attaches to the next word
            cut = e.reasoning.rindex(task.answer_cue) + len(task.answer_cue.rstrip())
            prompt = tokenizer.encode(task.prompt(e, tokenizer), add_special_tokens=False)
            cot = tokenizer.encode(" " + e.reasoning[:cut], add_special_tokens=False)
            answer = tokenizer.encode(e.reasoning[cut:], add_special_tokens=False)
            rows.append(prompt + cot + answer)
            spans.append((len(prompt), len(prompt) + len(cot), len(rows[-1])))
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tokenizer.pad_token_id or 0)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        nll = -torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None].to(device)).squeeze(-1).cpu()
        for i, (a, b, c) in enumerate(spans):  # token j is predicted at position j - 1
            sums["solution"] += float(nll[i, a - 1 : c - 1].sum())
            counts["solution"] += c - a
            sums["answer"] += float(nll[i, b - 1 : c - 1].sum())
            counts["answer"] += c - b
    return {k: sums[k] / max(1, counts[k]) for k in sums} | {"problems": len(examples)}
