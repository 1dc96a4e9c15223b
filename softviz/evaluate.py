"""Evaluation: pass@k with the unbiased estimator, and accuracy of a model under a decoding mode on a task split."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Sequence

from softviz.config import Mode
from softviz.generate import generate
from softviz.tasks.base import Example, Task


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021): 1 − C(n−c, k) / C(n, k).

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 4), pass_at_k(4, 0, 2)
    (0.25, 1.0, 0.0)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # product form avoids huge binomials: C(n-c, k)/C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i)
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


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

    def summary(self) -> str:
        ks = ", ".join(f"pass@{k} {100 * v:.1f}%" for k, v in self.pass_at.items())
        return (f"{self.mode}: {self.problems} problems x {self.samples} samples: {ks}; "
                f"boxed {100 * self.boxed_rate:.0f}%, mean CoT {self.mean_cot_length:.1f} tokens, {self.seconds:.0f}s")


def evaluate(model, tokenizer, task: Task, examples: Sequence[Example], mode: Mode | str, *, n: int = 1,
             ks: Sequence[int] = (1,), max_cot_tokens: int = 128, max_answer_tokens: int = 32, seed: int = 0,
             batch_rows: int = 256, progress=None) -> EvalResult:
    """Roll out `n` samples per example under `mode` and score them with the task's checker."""
    mode = Mode.preset(mode) if isinstance(mode, str) else mode
    ks = [k for k in ks if k <= n]
    per_batch = max(1, batch_rows // n)
    correct, rewards, boxed, lengths = [], [], 0, []
    t0 = time.time()
    for start in range(0, len(examples), per_batch):
        chunk = examples[start : start + per_batch]
        r = generate(model, tokenizer, [task.prompt(e) for e in chunk], mode, n=n, max_cot_tokens=max_cot_tokens,
                     max_answer_tokens=max_answer_tokens, seed=seed + start, answer_cue=task.answer_cue)
        golds = [chunk[i].answer for i in r.prompt_index.tolist()]
        scores = task.reward(completions=r.answer_texts, answer=golds)
        rewards += scores
        boxed += sum(a is not None for a in r.answers)
        lengths += r.cot_lengths.tolist()
        for i in range(len(chunk)):
            correct.append(sum(task.is_correct(a, chunk[i].answer) for a in r.answers[i * n : (i + 1) * n]))
        if progress:
            progress(min(start + per_batch, len(examples)), len(examples))
    pass_at = {k: sum(pass_at_k(n, c, k) for c in correct) / len(correct) for k in ks}
    return EvalResult(mode.label, len(examples), n, correct, pass_at, sum(rewards) / len(rewards),
                      boxed / len(rewards), sum(lengths) / len(lengths), time.time() - t0)
