"""compare_modes: the one implementation behind `softviz compare` and the app's Compare tab."""

import math

import pytest
import torch

from softviz.compare import NO_ANSWER, compare_modes
from softviz.stats import mean_over_steps
from softviz.tasks import ArithmeticTask, get_task

TASK = ArithmeticTask()


def test_mean_over_steps_weighs_every_step_the_same():
    # rollout 0 has 1 step (entropy 3), rollout 1 has 3 steps (1, 1, 1): over all 4 steps the mean is
    # (3 + 1 + 1 + 1) / 4 = 1.5, where the mean of per-rollout means would be (3 + 1) / 2 = 2
    values = torch.tensor([[3.0, 9.0, 9.0], [1.0, 1.0, 1.0]])
    assert mean_over_steps(values, torch.tensor([1, 3])) == 1.5
    assert math.isnan(mean_over_steps(values, torch.tensor([0, 0])))


def test_the_task_decides_what_is_a_full_prompt():
    assert TASK.as_prompt("What is 17 times 3?") == "User: What is 17 times 3? Assistant:"
    full = "User: Tom has 3 apples. Assistant:"
    assert TASK.as_prompt(full) == full
    gsm = get_task("gsm8k", data_files={"train": "x.jsonl", "test": "x.jsonl"})  # nothing is read here
    assert gsm.as_prompt("2 + 2?").endswith("User: 2 + 2? Assistant:") and gsm.as_prompt(full) == full
    with pytest.raises(ValueError, match="a prompt needs a question or a full prompt"):
        TASK.as_prompt("  ")


def test_compare_modes_summaries(embedded):
    model, tok = embedded
    ex = TASK.examples("test", 1)[0]
    result = compare_modes(model, tok, TASK, ex.question, ["hard", "soft-greedy"], n=4, gold=ex.answer,
                           max_cot_tokens=60, seed=3, trace=True)
    assert result.prompt == TASK.prompt(ex) and result.gold == ex.answer
    assert [s.label for s in result.summaries] == ["hard", "soft-greedy"]
    for s in result.summaries:
        r = s.rollouts
        correct = [TASK.is_correct(a, ex.answer) for a in r.answers]
        assert s.accuracy == sum(correct) / 4
        valid = torch.arange(r.cot_entropy.shape[1])[None, :] < r.cot_lengths[:, None]
        assert s.mean_entropy == pytest.approx(float(r.cot_entropy[valid].double().mean()), rel=1e-6)
        assert sum(s.answer_counts.values()) == 4 and s.distinct_answers == len(s.answer_counts)
        assert set(s.answer_counts) == {a if a is not None else NO_ANSWER for a in r.answers}
        assert r.trace.meta["golds"] == [ex.answer] * 4 and r.trace.meta["correct"] == correct
    greedy = result.summaries[1]
    assert greedy.distinct_answers == 1  # four identical noiseless rollouts
    none = compare_modes(model, tok, TASK, ex.question, ["hard"], n=2, max_cot_tokens=8)
    assert none.summaries[0].accuracy is None and none.gold is None


def test_cli_and_app_report_the_same_numbers(embedded, capsys):
    from softviz.cli import main

    model, tok = embedded
    ex = TASK.examples("test", 1)[0]
    assert main(["compare", "--modes", "soft", "-n", "4", "--max-cot-tokens", "40", "--seed", "2"]) == 0
    row = [l for l in capsys.readouterr().out.splitlines() if l.startswith("soft ")][0].split()
    s = compare_modes(model, tok, TASK, ex.question, ["soft"], n=4, gold=ex.answer, max_cot_tokens=40,
                      max_answer_tokens=16, seed=2).summaries[0]
    assert float(row[2]) == pytest.approx(s.mean_entropy, abs=5e-4)  # printed with 3 decimals
    assert float(row[1].rstrip("%")) == pytest.approx(100 * s.accuracy, abs=0.05)
    assert int(row[3]) == s.distinct_answers
