"""The "plain" family of the embedded task: arithmetic questions as people type them.

"What is 17 times 3?", "Compute 12 + 7 - 4.", "Calculate (5 + 3) * 2.", "How much is 45 divided by 9?",
"What do you get if you add 8 to 15?". A problem is an expression tree with one, two or three operations
(equally likely), drawn under these bounds:

- + and -: leaf operands 1-100; a difference is never negative;
- *: one factor at most 12;
- /: exact, divisor 2-12;
- every intermediate value in 0-1,000.

The question writes the tree with the brackets standard precedence needs (a right operand of equal precedence
is bracketed too, so "a - (b + c)" keeps its meaning), in symbols, in words or as a sentence. The worked
solution evaluates the tree bottom-up, one equation per operation, in the story family's format:
"5 + 3 = 8. 8 * 2 = 16. The final answer is: \\boxed{16}".
"""

from __future__ import annotations

import random
from typing import Union

from softviz.tasks.base import ANSWER_CUE, BOX_OPEN

MAX_OPERAND = 100  # + and - operands
MAX_FACTOR = 12  # the small factor of *, the divisor of /
MAX_VALUE = 1000  # every intermediate value

Tree = Union[int, tuple]  # a leaf, or (op, left, right)
PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}

# How an operator is written: in symbols (the CoT always uses + - * /) or in words.
SYMBOLS = {"+": ["+"], "-": ["-"], "*": ["*", "*", "×", "x"], "/": ["/", "/", "÷"]}
WORDS = {"+": ["plus"], "-": ["minus"], "*": ["times", "multiplied by"], "/": ["divided by"]}
# Questions around a written expression {e}.
EXPRESSION_TEMPLATES = ["What is {e}?", "What is {e}?", "Compute {e}.", "Calculate {e}.", "Evaluate {e}.",
                        "Work out {e}.", "What is the value of {e}?", "How much is {e}?", "Find {e}.",
                        "What does {e} equal?", "{e} = ?"]
# Sentences for one operation: the first operand is {a}, the second {b} ("add 8 to 15" is 15 + 8).
SENTENCES = {
    "+": ["What do you get if you add {b} to {a}?", "Add {a} and {b}.", "What is the sum of {a} and {b}?",
          "Add {b} to {a}."],
    "-": ["What do you get if you subtract {b} from {a}?", "Subtract {b} from {a}.",
          "What is the difference between {a} and {b}?", "Take {b} away from {a}."],
    "*": ["What do you get if you multiply {a} by {b}?", "Multiply {a} by {b}.",
          "What is the product of {a} and {b}?"],
    "/": ["What do you get if you divide {a} by {b}?", "Divide {a} by {b}.", "How many times does {b} go into {a}?"],
}
SENTENCE_SHARE = 0.4  # of one-operation questions
WORD_SHARE = 0.35  # of written expressions: operators in words ("17 times 3")
COMPACT_SHARE = 0.1  # of symbolic expressions: no spaces ("17*3")
LOWERCASE_SHARE = 0.1  # questions typed in lower case...
NO_STOP_SHARE = 0.1  # ...or without the final "?" or "."


def apply(op: str, x: int, y: int) -> int:
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    return x * y if op == "*" else x // y


def value(tree: Tree) -> int:
    return tree if isinstance(tree, int) else apply(tree[0], value(tree[1]), value(tree[2]))


def num_ops(tree: Tree) -> int:
    return 0 if isinstance(tree, int) else 1 + num_ops(tree[1]) + num_ops(tree[2])


def _leaf(rng: random.Random, n_ops: int, low: int = 1, high: int = MAX_OPERAND) -> Tree | None:
    """A tree with `n_ops` operations whose value lies in [low, high], or None if this draw missed."""
    if n_ops == 0:
        return rng.randint(low, high) if low <= high else None
    tree = _tree(rng, n_ops)
    return tree if tree is not None and low <= value(tree) <= high else None


def _tree(rng: random.Random, n_ops: int) -> Tree | None:
    """A random tree with `n_ops` operations within the bounds, or None (the caller draws again)."""
    op = rng.choice("+-*/")
    k = rng.randint(0, n_ops - 1)  # operations in the left subtree
    left_ops, right_ops = k, n_ops - 1 - k
    if op in "+-":
        left, right = _leaf(rng, left_ops), _leaf(rng, right_ops)
        if left is None or right is None:
            return None
        if op == "-" and value(left) < value(right):
            left, right = right, left
        tree = (op, left, right)
    elif op == "*":
        small_right = right_ops == 0 or (left_ops > 0 and rng.random() < 0.5)
        if rng.random() < 0.5 and left_ops == right_ops == 0:
            small_right = False  # "3 * 17" as often as "17 * 3"
        small, big_ops = (right_ops, left_ops) if small_right else (left_ops, right_ops)
        small_tree = _leaf(rng, small, 2, MAX_FACTOR)
        if small_tree is None:
            return None
        big_tree = _leaf(rng, big_ops, 1, min(MAX_OPERAND, MAX_VALUE // value(small_tree)))
        if big_tree is None:
            return None
        tree = ("*", big_tree, small_tree) if small_right else ("*", small_tree, big_tree)
    else:
        divisor = _leaf(rng, right_ops, 2, MAX_FACTOR)
        if divisor is None:
            return None
        d = value(divisor)
        if left_ops == 0:
            left = d * rng.randint(1, min(MAX_OPERAND, MAX_VALUE // d))
        else:
            left = _tree(rng, left_ops)
            if left is None or value(left) % d:
                return None
        tree = ("/", left, divisor)
    # every intermediate value within 0..MAX_VALUE: subtrees were checked when they were drawn, so the root remains
    return tree if 0 <= value(tree) <= MAX_VALUE else None


def draw_tree(rng: random.Random, n_ops: int) -> Tree:
    while True:
        tree = _tree(rng, n_ops)
        if tree is not None:
            return tree


def render(tree: Tree, ops: dict[str, str] | None = None, compact: bool = False) -> str:
    """The expression as text, with the brackets standard precedence needs; `ops` maps each operator to how it is
    written (default: + - * /)."""
    if isinstance(tree, int):
        return str(tree)
    op, left, right = tree
    left_s, right_s = render(left, ops, compact), render(right, ops, compact)
    if not isinstance(left, int) and PRECEDENCE[left[0]] < PRECEDENCE[op]:
        left_s = f"({left_s})"
    if not isinstance(right, int) and PRECEDENCE[right[0]] <= PRECEDENCE[op]:
        right_s = f"({right_s})"
    word = (ops or {}).get(op, op)
    return f"{left_s}{word}{right_s}" if compact else f"{left_s} {word} {right_s}"


def key(tree: Tree) -> str:
    """The arithmetic of a problem, whatever its wording: '(5+3)*2'. Splits are disjoint on this key."""
    return render(tree, compact=True)


def has_brackets(tree: Tree) -> bool:
    return "(" in key(tree)


def question(rng: random.Random, tree: Tree) -> str:
    if num_ops(tree) == 1 and rng.random() < SENTENCE_SHARE:
        op, a, b = tree
        text = rng.choice(SENTENCES[op]).format(a=a, b=b)
    else:
        if rng.random() < WORD_SHARE:
            ops, compact = {op: rng.choice(WORDS[op]) for op in WORDS}, False
        else:
            ops, compact = {op: rng.choice(SYMBOLS[op]) for op in SYMBOLS}, rng.random() < COMPACT_SHARE
            if compact and "x" in ops.values():
                ops["*"] = "*"  # "17x3" reads as a variable
        text = rng.choice(EXPRESSION_TEMPLATES).format(e=render(tree, ops, compact))
    if rng.random() < LOWERCASE_SHARE:
        text = text[0].lower() + text[1:]
    if rng.random() < NO_STOP_SHARE and text[-1] in "?.":
        text = text[:-1].rstrip(" =")
    return text


def reasoning(rng: random.Random, tree: Tree, mistake_rate: float = 0.0) -> str:
    """One equation per operation. With `mistake_rate` > 0 some results carry a slip (off by 1, 2 or 10) that
    the later steps use, as in the story family; the gold answer stays the true value."""
    def walk(t: Tree) -> tuple[int, list[str]]:
        if isinstance(t, int):
            return t, []
        x, left_lines = walk(t[1])
        y, right_lines = walk(t[2])
        result = apply(t[0], x, y) if t[0] != "/" or y else 0
        if mistake_rate and rng.random() < mistake_rate:
            result = max(0, result + rng.choice([-10, -2, -1, 1, 2, 10]))
        return result, left_lines + right_lines + [f"{x} {t[0]} {y} = {result}."]

    shown, lines = walk(tree)
    return " ".join(lines) + f" {ANSWER_CUE}{BOX_OPEN}{shown}}}"


def make_problem(rng: random.Random, mistake_rate: float = 0.0) -> tuple[str, str, str, Tree]:
    """(question, reasoning, answer, tree): one, two or three operations, equally likely."""
    tree = draw_tree(rng, rng.randint(1, 3))
    return question(rng, tree), reasoning(rng, tree, mistake_rate), str(value(tree)), tree


# Twenty questions people type, kept out of the train split (by their arithmetic, in every wording): the shipped
# model's quality floor (tests/test_tasks.py) and the app's first example. (question, key, answer)
PROBES = [
    ("What is 17 times 3?", "17*3", 51), ("What is 17 * 3?", "17*3", 51), ("Compute 12 + 7 - 4.", "12+7-4", 15),
    ("Calculate (5 + 3) * 2.", "(5+3)*2", 16), ("How much is 45 divided by 9?", "45/9", 5),
    ("What do you get if you add 8 to 15?", "15+8", 23), ("What is 25 + 38?", "25+38", 63),
    ("What is 9 times 8?", "9*8", 72), ("What is 100 - 37?", "100-37", 63), ("Compute 6 * 7 + 5.", "6*7+5", 47),
    ("Calculate 84 / 7.", "84/7", 12), ("What is 56 divided by 8?", "56/8", 7),
    ("What is (20 - 8) * 3?", "(20-8)*3", 36), ("What do you get if you multiply 14 by 4?", "14*4", 56),
    ("What is 33 plus 47?", "33+47", 80), ("Subtract 19 from 60.", "60-19", 41),
    ("What is 72 / 6 + 9?", "72/6+9", 21), ("Calculate 3 * (15 + 5).", "3*(15+5)", 60),
    ("What is 11 times 12?", "11*12", 132), ("What is 90 minus 45 plus 10?", "90-45+10", 55),
]
PROBE_KEYS = frozenset(k for _, k, _ in PROBES)


def corpus_texts() -> list[str]:
    """Every word a plain question can hold (for the tokenizer's vocabulary)."""
    out = [t for ts in SENTENCES.values() for t in ts] + EXPRESSION_TEMPLATES
    out += [w for ws in WORDS.values() for w in ws] + [s for ss in SYMBOLS.values() for s in ss]
    return out + [t[0].lower() + t[1:] for t in out if t[:1].isalpha()]
