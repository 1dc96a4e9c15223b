"""Several modes on one problem, side by side: the rollouts and a summary per mode. The CLI's `compare`
and the app's Compare tab both call `compare_modes`, so they report the same numbers."""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Sequence

from softviz.config import Mode, TraceConfig
from softviz.generate import Rollouts, generate
from softviz.stats import mean_over_steps
from softviz.tasks.base import Task

NO_ANSWER = "(none)"  # how a rollout without a \boxed{} answer is counted


@dataclasses.dataclass
class ModeSummary:
    """One mode's rollouts on the problem and what the comparison reports of them."""

    label: str
    rollouts: Rollouts  # with .trace when compare_modes was asked for traces
    accuracy: float | None  # share of rollouts whose answer is correct; None without a gold answer
    mean_entropy: float  # mean entropy of p over every CoT step of every rollout, nats (stats.mean_over_steps)
    mean_cot_length: float  # CoT steps per rollout
    answer_counts: collections.Counter  # answer -> rollouts; NO_ANSWER for rollouts without one

    @property
    def distinct_answers(self) -> int:
        return len(self.answer_counts)


@dataclasses.dataclass
class Comparison:
    prompt: str  # what the model saw
    gold: str | None
    summaries: list[ModeSummary]


def compare_modes(model, tokenizer, task: Task, text: str, modes: Sequence[Mode | str], *, n: int = 8,
                  gold: str | None = None, max_cot_tokens: int = 96, max_answer_tokens: int = 16, seed: int = 0,
                  trace: bool | TraceConfig = False,
                  progress: Callable[[int, int, str], None] | None = None) -> Comparison:
    """Roll out `n` CoTs of one problem under each mode (same seed for every mode) and summarise them.

    Args:
        text: a question, or a full prompt (task.as_prompt decides).
        gold: the gold answer, when known: accuracy, and with traces meta "golds" and "correct".
        trace: record a Trace per mode (True or a TraceConfig).
        progress: progress(i, len(modes), label) before each mode.
    """
    prompt = task.as_prompt(text, tokenizer)
    gold = (gold.strip() or None) if isinstance(gold, str) else gold
    if not modes:
        raise ValueError("modes is empty: give at least one mode or preset name")
    summaries = []
    for i, mode in enumerate(modes):
        mode = mode if isinstance(mode, Mode) else Mode.preset(mode)
        if progress is not None:
            progress(i, len(modes), mode.label)
        r = generate(model, tokenizer, [prompt], mode, n=n, max_cot_tokens=max_cot_tokens,
                     max_answer_tokens=max_answer_tokens, seed=seed, trace=trace, answer_cue=task.answer_cue)
        correct = [task.is_correct(a, gold) for a in r.answers] if gold is not None else None
        if r.trace is not None:
            r.trace.meta["golds"] = [gold] * len(r) if gold is not None else None
            if correct is not None:
                r.trace.meta["correct"] = correct
        summaries.append(ModeSummary(
            label=mode.label, rollouts=r, accuracy=None if correct is None else sum(correct) / len(correct),
            mean_entropy=mean_over_steps(r.cot_entropy, r.cot_lengths),
            mean_cot_length=float(r.cot_lengths.float().mean()),
            answer_counts=collections.Counter(a if a is not None else NO_ANSWER for a in r.answers)))
    return Comparison(prompt, gold, summaries)
