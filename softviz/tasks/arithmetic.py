"""The embedded task: multi-step arithmetic word problems in the paper's prompt format.

`User: <question> Assistant: <reasoning steps> The final answer is: \\boxed{<n>}`. Three families:
"story" (word problems; the embedded model is trained on it and RL trains on it by default), "plain"
(arithmetic questions as people type them, e.g. "What is 17 times 3?", softviz/tasks/plain.py; also in the
embedded model's training mix) and "puzzle" (the story's arithmetic in held-out wording, for out-of-domain
measurements). Every example is a pure function of (family, split, seed, index), so splits are reproducible; the
train split skips every problem of the validation and test splits (plain: the same arithmetic in any wording).
"""

from __future__ import annotations

import functools
import hashlib
import random
import re

from softviz import checks
from softviz.tasks import plain
from softviz.tasks.base import ANSWER_CUE, BOX_OPEN, Example, Task

NAMES = ["Tom", "Anna", "Ben", "Lily", "Sam", "Mia", "Max", "Emma", "Leo", "Zoe", "Jack", "Lucy",
         "Noah", "Ella", "Omar", "Ruby", "Ivan", "Nina", "Carl", "Rosa"]
ITEMS = ["apples", "pens", "books", "cards", "marbles", "stickers", "coins", "eggs", "shells",
         "stamps", "cookies", "toys", "pencils", "candies", "balls", "flowers"]

# Story family (in-domain). Each op: (symbol, sentence templates). {p} person, {q} other person,
# {i} item, {n} operand.
STORY_OPS = {
    "+": ["{p} buys {n} more {i}.", "{p} finds {n} more {i}.", "{q} gives {p} {n} more {i}.",
          "{p} wins {n} more {i}."],
    "-": ["{p} gives {n} {i} to {q}.", "{p} loses {n} {i}.", "{p} sells {n} {i}.",
          "{p} eats {n} of the {i}."],
    "*": ["The number of {i} that {p} has grows {n} times.", "{p} makes it {n} times as many {i}."],
    "/": ["{p} splits the {i} into {n} equal groups and keeps one group.",
          "{p} shares the {i} equally with friends, {n} people in all, and keeps one share."],
}
STORY_START = ["{p} has {x} {i}.", "{p} starts with {x} {i}."]
STORY_QUESTION = ["How many {i} does {p} have now?", "How many {i} does {p} have at the end?"]

# Puzzle family (out-of-domain): same arithmetic, different words and sentence shapes.
PUZZLE_OPS = {
    "+": ["Add {n} to it.", "Increase it by {n}."],
    "-": ["Take away {n}.", "Decrease it by {n}."],
    "*": ["Multiply it by {n}.", "Scale it up {n} times."],
    "/": ["Divide it by {n}.", "Cut it into {n} equal parts and keep one part."],
}
PUZZLE_START = ["Think of the number {x}.", "Begin with the number {x}."]
PUZZLE_QUESTION = ["What number do you get?", "What is the result?"]

SPLITS = ("train", "validation", "test")
MAX_VALUE = 200  # every intermediate value stays in [0, MAX_VALUE]


def _rng(*key) -> random.Random:
    # A stable seed from the key (Python's hash() is salted per process, so use sha256).
    digest = hashlib.sha256(repr(key).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def _operand(rng: random.Random, op: str, x: int) -> int | None:
    """An operand for `x op n` that keeps the value a small non-negative integer, or None if impossible."""
    if op == "+":
        return rng.randint(1, min(20, MAX_VALUE - x)) if x < MAX_VALUE else None
    if op == "-":
        return rng.randint(1, min(20, x)) if x >= 1 else None
    if op == "*":
        ks = [k for k in (2, 3, 4, 5) if x * k <= MAX_VALUE and x >= 1]
        return rng.choice(ks) if ks else None
    ks = [k for k in (2, 3, 4, 5) if x % k == 0 and x >= k]
    return rng.choice(ks) if ks else None


def _apply(op: str, x: int, n: int) -> int:
    return {"+": x + n, "-": x - n, "*": x * n, "/": x // n}[op]


def make_problem(rng: random.Random, family: str = "story", mistake_rate: float = 0.0):
    """One problem: (question, reasoning, answer). With `mistake_rate` > 0 some steps of the *reasoning*
    carry a plausible arithmetic slip that the rest of the chain follows; the gold answer stays correct."""
    ops_t, start_t, question_t = ((STORY_OPS, STORY_START, STORY_QUESTION) if family == "story"
                                  else (PUZZLE_OPS, PUZZLE_START, PUZZLE_QUESTION))
    p, q = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    x = rng.randint(2, 30)
    n_ops = rng.randint(2, 4)
    sentences = [rng.choice(start_t).format(p=p, x=x, i=item)]
    steps = []  # (op, operand)
    value = x
    while len(steps) < n_ops:
        op = rng.choice("+-*/")
        n = _operand(rng, op, value)
        if n is None:
            continue
        steps.append((op, n))
        sentences.append(rng.choice(ops_t[op]).format(p=p, q=q, i=item, n=n))
        value = _apply(op, value, n)
    sentences.append(rng.choice(question_t).format(p=p, i=item))
    # Reasoning: one equation per step, following the (possibly slipped) running value.
    lines, shown = [], x
    for op, n in steps:
        result = _apply(op, shown, n)
        if mistake_rate and rng.random() < mistake_rate:
            result = max(0, result + rng.choice([-10, -2, -1, 1, 2, 10]))
        lines.append(f"{shown} {op} {n} = {result}.")
        shown = result
    reasoning = " ".join(lines) + f" {ANSWER_CUE}{BOX_OPEN}{shown}}}"
    return " ".join(sentences), reasoning, str(value)


FAMILIES = ("story", "plain", "puzzle")


class ArithmeticTask(Task):
    """Multi-step arithmetic problems in the paper's prompt format (an instruct model's chat format when its tokenizer
    has a chat template: `chat = True`, see Task).

    Args:
        family: "story" (word problems, 2 to 4 of +, -, *, / on small integers), "plain" (typed questions with
            1 to 3 operations, see softviz/tasks/plain.py) or "puzzle" (the story's arithmetic in held-out wording,
            for out-of-domain measurements).
    """

    chat = True

    def __init__(self, family: str = "story"):
        if family not in FAMILIES:
            raise ValueError(f"family = {family!r} is unknown: choose one of {', '.join(FAMILIES)}")
        self.family = family
        self.name = f"arithmetic-{family}"

    def example(self, split: str, index: int, *, seed: int = 0, mistake_rate: float = 0.0) -> Example:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        rng = _rng(self.family, split, seed, index)
        meta = {"split": split, "index": index, "family": self.family}
        if self.family == "plain":
            question, reasoning, answer, tree = plain.make_problem(rng, mistake_rate)
            meta.update(expression=plain.key(tree), ops=plain.num_ops(tree))
        else:
            question, reasoning, answer = make_problem(rng, self.family, mistake_rate)
        return Example(question, answer, reasoning, meta)

    def examples(self, split: str, n: int, *, seed: int = 0, start: int = 0,
                 mistake_rate: float = 0.0) -> list[Example]:
        """`n` examples of `split`; train examples that also occur in validation or test are skipped."""
        n, start = checks.integer("n", n, 0, checks.MAX_ROLLOUTS), checks.integer("start", start, 0)
        if split not in ("train", "validation", "test"):
            raise ValueError(f"split = {split!r} is invalid: allowed 'train', 'validation' or 'test'")
        if split != "train":
            return [self.example(split, i, seed=seed) for i in range(start, start + n)]
        held_out = _held_out(self.family, seed)
        out, i = [], start
        while len(out) < n:
            ex = self.example("train", i, seed=seed, mistake_rate=mistake_rate)
            if _identity(ex) not in held_out:
                out.append(ex)
            i += 1
        return out


_HELD_OUT_SIZE = 2000  # validation and test are read from their first 2000 indices


def _identity(ex: Example) -> str:
    """What makes two problems the same: the question (story, puzzle) or the arithmetic in any wording (plain)."""
    return ex.meta.get("expression", ex.question)


@functools.lru_cache(maxsize=8)
def _held_out(family: str, seed: int) -> frozenset[str]:
    """The problems the train split never holds: validation's and test's, and for plain also the probes."""
    task = ArithmeticTask(family)
    found = {_identity(task.example(s, i, seed=seed)) for s in ("validation", "test") for i in range(_HELD_OUT_SIZE)}
    return frozenset(found | (plain.PROBE_KEYS if family == "plain" else set()))


def corpus(n: int = 2000) -> list[str]:
    """Texts covering every word both families can produce (to build the tokenizer's vocabulary)."""
    out = []
    for family in FAMILIES:
        task = ArithmeticTask(family)
        for i in range(n):
            ex = task.example("train", i)
            out.append(f"{task.prompt(ex)} {ex.reasoning}")
    # Make sure every template word appears even if sampling missed it.
    for table in (STORY_OPS, PUZZLE_OPS):
        out += [t for ts in table.values() for t in ts]
    out += STORY_START + STORY_QUESTION + PUZZLE_START + PUZZLE_QUESTION + NAMES + ITEMS + plain.corpus_texts()
    return out + [q for q, _, _ in plain.PROBES]


@functools.lru_cache(maxsize=1)
def known_words() -> frozenset[str]:
    """Every word (lower case) of the texts the embedded model was trained on and its tokenizer was built from."""
    return frozenset(w.lower() for text in corpus() for w in re.findall(r"[A-Za-z]+", text))


def unknown_words(text: str) -> list[str]:
    """The words of `text` the embedded model never saw (in order, once each): it reads them as pieces of words
    and answers from what it knows, so a question made of them is out of its reach."""
    known, out = known_words(), []
    for w in re.findall(r"[^\W\d_]+", text):
        if w.lower() not in known and w not in out:
            out.append(w)
    return out
