import math

import pytest

from softviz.evaluate import pass_at_k


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    # 1 − C(n−c, k)/C(n, k), checked against math.comb
    for n, c, k in [(32, 3, 8), (10, 5, 3), (32, 1, 32), (7, 2, 6)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def test_entropy_profile_equals_the_traces_mean_entropy_per_position(embedded):
    from softviz import TraceConfig, generate
    from softviz.evaluate import evaluate
    from softviz.tasks import get_task

    model, tok = embedded
    task = get_task("arithmetic")
    ex = task.examples("test", 3)
    res = evaluate(model, tok, task, ex, "soft", n=2, ks=(1, 2), max_cot_tokens=40, max_answer_tokens=8, seed=5,
                   entropy_profile=True)
    r = generate(model, tok, [task.prompt(e) for e in ex], "soft", n=2, max_cot_tokens=40, max_answer_tokens=8,
                 seed=5, answer_cue=task.answer_cue, trace=TraceConfig(top_k=1, nearest_k=0))
    H, mask = r.trace.entropy.double(), r.trace.mask.double()
    expected = ((H * mask).sum(0) / mask.sum(0)).tolist()
    assert res.entropy_by_position == pytest.approx(expected, rel=1e-6)
    assert len(res.entropy_by_position) == int(r.cot_lengths.max())
    assert evaluate(model, tok, task, ex, "hard-greedy", max_cot_tokens=40).entropy_by_position == []


def test_solution_nll_hand_computed_and_higher_off_domain(embedded):
    import torch

    from softviz.evaluate import solution_nll
    from softviz.tasks import Example, get_task

    model, tok = embedded
    story, puzzle = get_task("arithmetic"), get_task("arithmetic-puzzle")
    e = story.examples("test", 1)[0]
    got = solution_nll(model, tok, story, [e])
    # by hand: one sequence, NLL of every token after the prompt, and of those after "... answer is:"
    prompt = tok.encode(story.prompt(e), add_special_tokens=False)
    full = prompt + tok.encode(" " + e.reasoning, add_special_tokens=False)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([full])).logits[0].float(), -1)
    nll = [-float(logp[j - 1, full[j]]) for j in range(len(prompt), len(full))]
    n_answer = len(tok.encode(" \\boxed{" + e.answer + "}", add_special_tokens=False))
    assert got["solution"] == pytest.approx(sum(nll) / len(nll), rel=1e-4)
    assert got["answer"] == pytest.approx(sum(nll[-n_answer:]) / n_answer, rel=1e-4)
    # the held-out wording is harder for the model than the family it was trained on
    in_domain = solution_nll(model, tok, story, story.examples("test", 32))
    off_domain = solution_nll(model, tok, puzzle, puzzle.examples("test", 32))
    assert off_domain["solution"] > 2 * in_domain["solution"]
    with pytest.raises(ValueError, match="worked solution"):
        solution_nll(model, tok, story, [Example("What is 1 + 1?", "2")])


def test_embedded_report_covers_every_family():
    """`python -m softviz.embedded --report` on a few problems: every family, every row, plain by operations, branch
    points whose shares are fractions of the steps counted."""
    import json

    from softviz import embedded

    table = embedded.report(problems=6, samples=4, soft_samples=2, branch_samples=2, log=lambda *_: None)
    assert set(table["families"]) == {"story", "plain", "puzzle"} and table["model"]["sha256"]
    for family, rows in table["families"].items():
        assert rows["hard"]["n"] == 4 and set(rows["hard"]["pass_at"]) == {"1"}
        assert 0 <= rows["hard-greedy"]["pass_at"]["1"] <= 1 and rows["soft"]["n"] == rows["fuzzy"]["n"] == 2
        bp = rows["branch_points"]
        assert bp["steps"] > 0 and 0 <= bp["frac_top_weight_below_0.9"] <= 1
    by_ops = table["families"]["plain"]["hard-greedy"]["by_ops"]
    assert sum(v["problems"] for v in by_ops.values()) == 6
    assert json.loads(json.dumps(table)) == table  # written as it stands
