"""The plain family: arithmetic questions as people type them ("What is 17 times 3?").

The questions are parsed here by a reader independent of softviz/tasks/plain.py (words to symbols, then Python's
own expression grammar on exact integers), so a wrong rendering, a missing bracket or a wrong gold answer fails.
"""

import ast
import collections
import operator
import re
from fractions import Fraction

import pytest

from softviz.tasks import ArithmeticTask, get_task
from softviz.tasks import plain
from softviz.tasks.base import ANSWER_CUE

TASK = ArithmeticTask("plain")

# Sentence forms, as a reader would: (regex, expression built from its two numbers)
SENTENCES = [
    (r"(?:what do you get if you )?add (\d+) to (\d+)\??", "{1} + {0}"),
    (r"(?:what is the sum of |add )(\d+) and (\d+)", "{0} + {1}"),
    (r"(?:what do you get if you )?subtract (\d+) from (\d+)\??", "{1} - {0}"),
    (r"take (\d+) away from (\d+)", "{1} - {0}"),
    (r"what is the difference between (\d+) and (\d+)", "{0} - {1}"),
    (r"(?:what do you get if you )?multiply (\d+) by (\d+)\??", "{0} * {1}"),
    (r"what is the product of (\d+) and (\d+)", "{0} * {1}"),
    (r"(?:what do you get if you )?divide (\d+) by (\d+)\??", "{0} / {1}"),
    (r"how many times does (\d+) go into (\d+)", "{1} / {0}"),
]
FRAMES = r"^(?:(?:what is the value of|what is|compute|calculate|evaluate|work out|how much is|find|what does)\s+)?" \
         r"(.*?)(?:\s*=\s*\??|\s+equal)?$"
OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _evaluate(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in OPS:
        return OPS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    raise AssertionError(f"not plain arithmetic: {ast.dump(node)}")


def read(question: str) -> str:
    """The arithmetic a question asks for, as a Python expression."""
    q = question.strip().rstrip("?.").strip().lower()
    for pattern, form in SENTENCES:
        m = re.fullmatch(pattern, q)
        if m:
            return form.format(*m.groups())
    m = re.match(FRAMES, q)
    assert m, f"unreadable question: {question!r}"
    e = m.group(1)
    for words, symbol in (("multiplied by", "*"), ("divided by", "/"), ("times", "*"), ("plus", "+"),
                          ("minus", "-"), ("×", "*"), ("÷", "/"), (" x ", " * ")):
        e = e.replace(words, symbol)
    return e


def answer_of(question: str) -> Fraction:
    return _evaluate(ast.parse(read(question), mode="eval").body)


def test_questions_parse_and_gold_answers_are_exact():
    exs = TASK.examples("validation", 600) + TASK.examples("train", 600, mistake_rate=0.0)
    for ex in exs:
        value = answer_of(ex.question)
        assert value.denominator == 1 and str(value.numerator) == ex.answer, ex.question
        assert ex.reasoning.endswith(f"\\boxed{{{ex.answer}}}")
        # the worked solution: one correct equation per operation, the last one giving the answer
        eqs = ex.reasoning.split(ANSWER_CUE)[0].strip().rstrip(".").split(". ")
        assert len(eqs) == ex.meta["ops"]
        for eq in eqs:
            lhs, rhs = eq.split(" = ")
            assert _evaluate(ast.parse(lhs, mode="eval").body) == int(rhs), ex.reasoning
        assert eqs[-1].endswith(f"= {ex.answer}")


def _operations(tree):
    """Every (op, left, right) node of a tree."""
    if isinstance(tree, int):
        return []
    return _operations(tree[1]) + _operations(tree[2]) + [tree]


def test_difficulty_bounds_hold():
    rng = plain.random.Random(0)
    counts, brackets = collections.Counter(), 0
    for i in range(3000):
        tree = plain.draw_tree(rng, 1 + i % 3)
        counts[plain.num_ops(tree)] += 1
        brackets += plain.has_brackets(tree)
        for op, left, right in _operations(tree):
            x, y = plain.value(left), plain.value(right)
            assert 0 <= plain.apply(op, x, y) <= 1000  # every intermediate value
            if op in "+-":
                for leaf in (left, right):
                    assert not isinstance(leaf, int) or 1 <= leaf <= 100
                assert x >= y or op == "+"
            elif op == "*":
                assert min(x, y) <= 12
            else:
                assert 2 <= y <= 12 and x % y == 0  # exact
    assert counts == {1: 1000, 2: 1000, 3: 1000}
    exs = TASK.examples("test", 1500)
    ops = collections.Counter(e.meta["ops"] for e in exs)
    assert all(abs(ops[k] / 1500 - 1 / 3) < 0.05 for k in (1, 2, 3))  # one, two, three operations equally likely
    assert sum("(" in e.meta["expression"] for e in exs) / len(exs) >= 0.25


def test_phrasings_vary_and_include_the_common_ones():
    qs = [e.question for e in TASK.examples("train", 4000)]
    for fragment in ["What is", " times ", " * ", "Compute", "Calculate", "divided by", "What do you get if you add",
                     "(", "×", "÷"]:
        assert any(fragment in q for q in qs), fragment
    assert any(re.fullmatch(r"What is \d+ times \d+\?", q) for q in qs)
    assert any(re.search(r"\d[*+/-]\d", q) for q in qs)  # typed without spaces, too
    assert any(q[0].islower() for q in qs)


def test_splits_are_disjoint_in_any_wording_and_hold_out_the_probes():
    train = {e.meta["expression"] for e in TASK.examples("train", 20000)}
    val = {e.meta["expression"] for e in TASK.examples("validation", 2000)}
    test = {e.meta["expression"] for e in TASK.examples("test", 2000)}
    assert not (train & val) and not (train & test)
    assert not train & plain.PROBE_KEYS
    # the probes: keys and answers agree with their wording (and "What is 17 times 3?" is among them)
    assert ("What is 17 times 3?", "17*3", 51) in plain.PROBES and len(plain.PROBES) == 20
    for q, key, answer in plain.PROBES:
        assert answer_of(q) == answer and answer_of(f"what is {key}") == answer
    assert get_task("arithmetic-plain").family == "plain"
    with pytest.raises(ValueError, match="family"):
        ArithmeticTask("plane")


def test_slips_change_the_chain_not_the_gold():
    clean = TASK.examples("train", 300)
    slipped = TASK.examples("train", 300, mistake_rate=0.5)
    assert [e.question for e in clean] == [e.question for e in slipped]
    assert [e.answer for e in clean] == [e.answer for e in slipped]
    assert sum(a.reasoning != b.reasoning for a, b in zip(clean, slipped)) > 100


def test_tokenizer_covers_every_phrasing_without_byte_fallback(tokenizer):
    """Every template word, symbol and operator of the plain family is in the shipped tokenizer's vocabulary."""
    texts = plain.corpus_texts() + [q for q, _, _ in plain.PROBES]
    texts += [f"{TASK.prompt(e)} {e.reasoning}" for e in TASK.examples("train", 2000, mistake_rate=0.1)]
    for text in texts:
        toks = tokenizer.tokenize(text)
        fallback = [t for t in toks if re.fullmatch(r"<0x[0-9A-F]{2}>", t) or t == tokenizer.unk_token]
        assert not fallback, (text, fallback)
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    # words are whole tokens, as the model reads them
    toks = tokenizer.tokenize("User: What do you get if you multiply 14 by 4? Assistant:")
    for word in ["▁What", "▁do", "▁you", "▁get", "▁if", "▁multiply", "▁by"]:
        assert word in toks


def test_the_shipped_model_answers_most_probes_greedily(embedded):
    """A quality floor (the measurement is results/embedded_model.json): of 20 typed questions held out of
    training in every wording, the shipped model answers at least 12 with hard-greedy decoding."""
    from softviz import generate

    model, tok = embedded
    r = generate(model, tok, [TASK.prompt(q) for q, _, _ in plain.PROBES], "hard-greedy", max_cot_tokens=64,
                 max_answer_tokens=16, answer_cue=TASK.answer_cue, trace=False)
    right = [TASK.is_correct(a, str(gold)) for a, (_, _, gold) in zip(r.answers, plain.PROBES)]
    assert sum(right) >= 12, list(zip([q for q, _, _ in plain.PROBES], r.answers))
    assert r.answers[0] == "51"  # "What is 17 times 3?"
