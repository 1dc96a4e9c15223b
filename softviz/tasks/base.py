"""The task interface: how a problem becomes a prompt, where the CoT ends, and how an answer is scored.

A task knows its prompt template, its answer cue (the text that ends the CoT, paper App. C) and how to
check an extracted answer. The reward is the paper's eq. 11: 100 correct, 10 wrong but boxed, 0 otherwise.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
import unicodedata
from typing import Any, Callable

# The paper's answer cue and the prefills that follow it (paper App. C): after an early stop the shadow
# text ends with the cue and we prefill `\boxed{`; at the CoT length limit we prefill the cue and `\boxed{`.
ANSWER_CUE = "The final answer is: "
BOX_OPEN = "\\boxed{"

REWARD_CORRECT = 100.0  # paper eq. 11
REWARD_BOXED = 10.0  # wrong, but a \boxed{} answer could be extracted
REWARD_NONE = 0.0

# TRL's reward-function signature (GRPOTrainer's reward_funcs): keyword args `prompts`, `completions` and every dataset
# column, returning one float (or None) per completion. softviz calls every reward function this way.
RewardFn = Callable[..., list]


@dataclasses.dataclass(frozen=True)
class Example:
    """One problem. `reasoning` is a worked solution when the task has one (used to train the embedded model)."""

    question: str
    answer: str  # the gold answer, as text
    reasoning: str | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


def extract_boxed(text: str) -> str | None:
    """The content of the last complete `\\boxed{...}` in `text`, with nested braces balanced.

    Returns None when there is no box, or when the last box is never closed. The last box wins because
    models often restate an intermediate value in a box before the final one.

    >>> extract_boxed("so \\\\boxed{\\\\frac{1}{2}} done")
    '\\\\frac{1}{2}'
    """
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError(f"extract_boxed needs text, got {type(text).__name__} {text!r}")
    found = None
    start = text.find(BOX_OPEN)
    while start != -1:
        depth, i = 1, start + len(BOX_OPEN)
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            found = text[start + len(BOX_OPEN) : i - 1].strip()
        start = text.find(BOX_OPEN, start + 1)
    return found


# Minus signs and dashes that people and models write for "-" (NFKC already maps the full-width forms).
_MINUS = dict.fromkeys(map(ord, "\u2212\u2012\u2013\u2014\ufe63\u2796"), "-")
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d*)?$")
_NUMBER_RE = re.compile(r"^([+-]?)(\d*)(?:\.(\d*))?$")


def _ascii_digits(text: str) -> str:
    """Any Unicode decimal digit (Arabic-Indic, Devanagari, full-width, ...) as its ASCII digit."""
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() and not c.isascii() else c for c in text)


def normalize_text(text: str) -> str:
    """NFKC, minus signs and dashes as "-", Unicode decimal digits as ASCII, stripped."""
    return _ascii_digits(unicodedata.normalize("NFKC", text).translate(_MINUS)).strip()


def normalize_number(text) -> str | None:
    """A canonical text for a number answer, compared exactly (no float round trip, any length).

    '1,200' -> '1200' (only commas between groups of three digits), '+7' -> '7', '12.0' -> '12', '-3 ' -> '-3', '−5' (U+2212) -> '-5', '007' -> '7',
    '2.50' -> '2.5', '-0' -> '0'; Unicode digits become ASCII. An int (a gold answer given as a number) is
    accepted. Anything that is not a plain decimal number is returned NFKC-normalised and stripped.

    >>> normalize_number("12345678901234567890.0"), normalize_number("\u22125")
    ('12345678901234567890', '-5')
    """
    if text is None:
        return None
    if isinstance(text, numbers.Integral) and not isinstance(text, bool):
        text = str(int(text))
    elif not isinstance(text, str):
        raise ValueError(f"an answer must be text or an integer, got {type(text).__name__} {text!r}")
    t = normalize_text(text).replace(" ", "").strip("$")
    if _THOUSANDS_RE.match(t):  # "1,200" is 1200; "1,2" is not a number here (a list, or a decimal comma)
        t = t.replace(",", "")
    m = _NUMBER_RE.match(t)
    if m is None or not (m.group(2) or m.group(3)):
        return t
    sign, whole, frac = m.group(1), m.group(2).lstrip("0") or "0", (m.group(3) or "").rstrip("0")
    digits = whole + ("." + frac if frac else "")
    return digits if sign != "-" or digits == "0" else "-" + digits


# How a chat model is asked (tasks that opt in with `chat = True`, given a tokenizer with a chat template): the
# paper's format instruction in the user message, and two worked turns before the question, so that a small
# instruct model ends its reasoning with the answer cue. Without the worked turns SmolLM2-135M-Instruct writes
# "The final answer is 12." (no colon, no box); an instruction with a placeholder ("\\boxed{[answer]}") gets the
# placeholder copied into the box.
CHAT_INSTRUCTION = "{question}\nReason step by step, then write \"" + ANSWER_CUE.strip() + "\" and the answer in \\boxed{{}}."
CHAT_EXAMPLES = (("What is 9 times 4?", "9 * 4 = 36. " + ANSWER_CUE + BOX_OPEN + "36}"),
                 ("Compute (20 - 8) / 3 + 5.", "20 - 8 = 12. 12 / 3 = 4. 4 + 5 = 9. " + ANSWER_CUE + BOX_OPEN + "9}"))


def has_chat_template(tokenizer) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


class Task:
    """Base class for tasks. Subclasses set `name`, implement `examples()` and may override `is_correct()`.

    Prompts: the paper's raw format (`prompt_template`, the model continues after "Assistant:"), or, for a task
    with `chat = True` and a tokenizer that has a chat template (an instruct model), the tokenizer's chat format
    with the paper's format instruction in the user message (`chat_messages`). Either way the CoT ends on the
    same answer cue.
    """

    name: str = "task"
    answer_cue: str = ANSWER_CUE
    prompt_template: str = "User: {question} Assistant:"
    chat: bool = False  # use an instruct model's chat template when the tokenizer has one

    def prompt(self, example_or_question: Example | str, tokenizer=None) -> str:
        """The prompt text of a problem: the chat format when this task opts in and `tokenizer` has a chat
        template, else the paper's raw format."""
        q = example_or_question.question if isinstance(example_or_question, Example) else example_or_question
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"a prompt needs a question (text or an Example), got {example_or_question!r}")
        if self.chat and has_chat_template(tokenizer):
            return tokenizer.apply_chat_template(self.chat_messages(q), tokenize=False, add_generation_prompt=True)
        return self.prompt_template.format(question=q)

    def chat_messages(self, question: str) -> list[dict]:
        """The conversation sent to a chat model: the worked examples, then the question, each with the format
        instruction."""
        messages = []
        for q, a in CHAT_EXAMPLES:
            messages += [{"role": "user", "content": CHAT_INSTRUCTION.format(question=q)},
                         {"role": "assistant", "content": a}]
        return messages + [{"role": "user", "content": CHAT_INSTRUCTION.format(question=question)}]

    def as_prompt(self, text: str, tokenizer=None) -> str:
        """What a user typed, as a prompt: a full prompt (it already holds the template's reply marker, e.g.
        "Assistant:", or is chat-formatted) is kept as it is; anything else is a question and goes into the
        template."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"a prompt needs a question or a full prompt, got {text!r}")
        if self.chat and has_chat_template(tokenizer):
            marker = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                                   add_generation_prompt=True).rsplit("x", 1)[-1].strip()
        else:
            marker = self.prompt_template.split("{question}")[-1].strip()
        return text if marker and marker in text else self.prompt(text.strip(), tokenizer)

    def examples(self, split: str, n: int, *, seed: int = 0) -> list[Example]:  # pragma: no cover - abstract
        raise NotImplementedError

    def is_correct(self, predicted: str | None, gold: str | int) -> bool:
        """Exact match after number normalisation (normalize_number); real-data tasks use math-verify."""
        return predicted is not None and normalize_number(predicted) == normalize_number(gold)

    def score(self, completion: str, gold: str) -> float:
        """The paper's reward (eq. 11) for one completion, i.e. the answer text after the CoT."""
        pred = extract_boxed(completion)
        if pred is None:
            return REWARD_NONE
        return REWARD_CORRECT if self.is_correct(pred, gold) else REWARD_BOXED

    def reward(self, prompts: list[str] | None = None, completions: list[str] | None = None,
               answer: list[str] | None = None, **kwargs) -> list[float]:
        """TRL-style reward function: `reward(prompts=..., completions=..., answer=...) -> list[float]`."""
        if completions is None or answer is None:
            raise ValueError("reward() needs `completions` and `answer` (one gold answer per completion)")
        if len(completions) != len(answer):
            raise ValueError(f"got {len(completions)} completions but {len(answer)} gold answers")
        return [self.score(c, a) for c, a in zip(completions, answer)]
