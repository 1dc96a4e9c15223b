import pytest

from softviz.tasks import ArithmeticTask, extract_boxed, get_task, normalize_number
from softviz.tasks.arithmetic import MAX_VALUE, make_problem, _rng
from softviz.tasks.base import ANSWER_CUE


@pytest.mark.parametrize("text, expected", [
    ("The final answer is: \\boxed{42}", "42"),
    ("\\boxed{-7}", "-7"),  # negative numbers
    ("x \\boxed{\\frac{1}{2}} y", "\\frac{1}{2}"),  # nested braces are balanced
    ("\\boxed{3} then later \\boxed{5}", "5"),  # two boxes: the last one counts
    ("\\boxed{12}. Some text after the box.", "12"),  # text after the box
    ("no box at all: 12", None),
    ("\\boxed{12", None),  # never closed
    ("\\boxed{4} and an unclosed \\boxed{9", "4"),  # last *complete* box
    ("\\boxed{ 8 }", "8"),
])
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_normalize_number():
    assert normalize_number("1,200") == "1200"
    assert normalize_number("+7") == "7"
    assert normalize_number("12.0") == "12"
    assert normalize_number(" -3 ") == "-3"
    assert normalize_number("x+1") == "x+1"


def test_reward_values():
    task = ArithmeticTask()
    # the paper's eq. 11: 100 correct, 10 wrong but boxed, 0 without a box
    assert task.reward(completions=[" \\boxed{7}", " \\boxed{8}", " 7"], answer=["7", "7", "7"]) == [100.0, 10.0, 0.0]
    assert task.score("\\boxed{ 007 }", "7") == 100.0
    with pytest.raises(ValueError, match="completions"):
        task.reward(completions=["\\boxed{1}"], answer=["1", "2"])


def test_examples_are_deterministic_per_seed():
    task = ArithmeticTask()
    a = task.examples("test", 20)
    assert a == task.examples("test", 20)
    assert a != task.examples("test", 20, seed=1)
    assert ArithmeticTask().example("train", 5) == task.example("train", 5)


def test_splits_are_disjoint():
    task = ArithmeticTask()
    train = {e.question for e in task.examples("train", 3000)}
    val = {e.question for e in task.examples("validation", 500)}
    test = {e.question for e in task.examples("test", 500)}
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(test) > 490  # almost all distinct


def test_problem_shape_and_gold_answer():
    task = ArithmeticTask()
    for ex in task.examples("validation", 200):
        eqs = ex.reasoning.split(ANSWER_CUE)[0].strip().split(". ")
        assert 2 <= len(eqs) <= 4  # 2 to 4 operations
        assert ex.reasoning.endswith(f"\\boxed{{{ex.answer}}}")  # no mistakes outside training
        assert 0 <= int(ex.answer) <= MAX_VALUE
        # re-check the arithmetic of every step
        for eq in eqs:
            lhs, rhs = eq.rstrip(".").split(" = ")
            a, op, b = lhs.split(" ")
            assert {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b), "/": int(a) // int(b)}[op] == int(rhs)


def test_mistakes_change_reasoning_not_gold():
    clean = [make_problem(_rng("k", i)) for i in range(300)]
    noisy = [make_problem(_rng("k", i), mistake_rate=0.5) for i in range(300)]
    assert all(c[0] == n[0] and c[2] == n[2] for c, n in zip(clean, noisy))  # same question, same gold
    assert sum(c[1] != n[1] for c, n in zip(clean, noisy)) > 100  # but many slipped chains


def test_ood_family_differs_in_wording():
    story, puzzle = ArithmeticTask("story"), ArithmeticTask("puzzle")
    s_words = {w for e in story.examples("test", 200) for w in e.question.split()}
    p_words = {w for e in puzzle.examples("test", 200) for w in e.question.split()}
    assert len(p_words - s_words) >= 10
    assert get_task("arithmetic-puzzle").family == "puzzle"
    with pytest.raises(ValueError, match="unknown task"):
        get_task("nope")


def test_tokenizer_round_trip_on_task_text(tokenizer):
    task = ArithmeticTask()
    for ex in task.examples("test", 50) + ArithmeticTask("puzzle").examples("test", 20):
        text = f"{task.prompt(ex)} {ex.reasoning}"
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
        assert tokenizer.unk_token_id not in ids
    # digits are single tokens; words and the paper's prompt words are whole tokens
    toks = tokenizer.tokenize("User: Tom has 123 apples. Assistant: The final answer is: \\boxed{6}")
    assert toks[:2] == ["User", ":"] and "▁Tom" in toks and "▁apples" in toks
    assert [t for t in toks if t.strip("▁").isdigit()] == ["▁1", "2", "3", "6"]
    for w in ["▁The", "▁final", "▁answer", "▁is", "▁Assistant"]:
        assert w in toks
    # any text encodes (byte fallback), non-ASCII included
    assert tokenizer.decode(tokenizer.encode("Ünïcödé ✓ 7")) == "Ünïcödé ✓ 7"


def test_unknown_words_are_those_the_embedded_model_never_saw():
    from softviz.tasks.arithmetic import known_words, unknown_words

    assert unknown_words("What is the capital of France? France!") == ["capital", "France"]
    assert unknown_words("What is 17 times 3?") == [] and unknown_words("Zoë bought pears") == ["Zoë", "bought", "pears"]
    task = ArithmeticTask("story")
    assert all(unknown_words(ex.question) == [] for ex in task.examples("test", 20))  # its own problems are known
    assert {"what", "times", "is"} <= known_words()
