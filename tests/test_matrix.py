"""The train × inference matrix: every cell computed, tabulated, resumable, and refusing a changed config."""

import json

import pytest

from softviz.matrix import MatrixConfig, markdown_table, run_matrix

TINY = MatrixConfig(train_modes=("hard", "soft"), seeds=(0,), steps=2, learning_rates=(("hard", 1e-3), ("soft", 1e-4)),
                    prompts_per_step=2, group_size=2, max_cot_tokens=24, max_answer_tokens=8, eval_every=1,
                    eval_size=4, settings=("hard-greedy", "soft"), problems=4, samples=2, ks=(1, 2), ood_problems=4)


def test_matrix_fills_every_cell_and_resumes(tmp_path):
    logs = []
    summary = run_matrix(tmp_path, TINY, log=logs.append)
    assert set(summary["table"]) == {"base", "hard", "soft"}
    for row in summary["table"].values():
        assert set(row) == {"hard-greedy", "soft"}
        assert set(row["hard-greedy"]) == {"pass@1"} and set(row["soft"]) == {"pass@1", "pass@2"}
        for cell in row.values():
            for mean, std, n in cell.values():
                assert 0 <= mean <= 1 and std == 0 and n == 1
        assert row["soft"]["pass@2"][0] >= row["soft"]["pass@1"][0]
    for train_mode, nll in summary["ood_nll"].items():
        assert nll["solution"][0] > 0 and nll["answer"][0] > 0
    # the cells hold what evaluate() measured: pass@1 is the mean of per-problem correct / samples
    cell = json.loads((tmp_path / "cells" / "base__soft.json").read_text())
    assert summary["table"]["base"]["soft"]["pass@1"][0] == pytest.approx(sum(cell["correct"]) / (4 * 2))
    assert len(summary["entropy_profiles"]) == 0  # the profile row comes from the "hard" sampled setting
    table = (tmp_path / "table.md").read_text()
    assert table.splitlines()[0].startswith("| train | hard G | soft S@1 | soft S@2 | OOD NLL")
    assert table == markdown_table(summary) and len(table.splitlines()) == 2 + 3
    assert (tmp_path / "figures" / "pass_at_k.html").stat().st_size > 1000
    # resume: nothing is trained or evaluated again
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").iterdir()}
    logs.clear()
    again = run_matrix(tmp_path, TINY, log=logs.append)
    assert logs == [] and again["table"] == summary["table"]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").iterdir()} == stamps
    with pytest.raises(ValueError, match="another configuration"):
        run_matrix(tmp_path, MatrixConfig(**{**TINY.__dict__, "steps": 3}))
    # the trained rows are evaluated with each run's final weights: those of its last checkpoint
    import torch

    from softviz.matrix import _load_trained
    from softviz.train import CHECKPOINT

    policy, _ = _load_trained(tmp_path, "hard-seed0", TINY, None, "cpu")
    saved = torch.load(tmp_path / "runs" / "hard-seed0" / CHECKPOINT, weights_only=False)
    assert saved["step"] == TINY.steps
    assert all(torch.equal(v, saved["model"][k]) for k, v in policy.state_dict().items())



def test_matrix_config_errors():
    with pytest.raises(ValueError, match="not a preset"):
        MatrixConfig(settings=("hard", "warm"))
    with pytest.raises(ValueError, match="checkpoint"):
        MatrixConfig(checkpoint="last")
    with pytest.raises(ValueError, match="no entry for train mode 'fuzzy'"):
        MatrixConfig(learning_rates=(("hard", 1e-4), ("soft", 1e-5)))


def test_matrix_figures_hold_the_table():
    from softviz import viz

    summary = {"config": {"settings": ["hard-greedy", "hard", "soft"], "ks": [1, 4], "seeds": [0, 1],
                          "problems": 10, "samples": 4},
               "table": {"base": {"hard-greedy": {"pass@1": [0.5, 0.0, 1]}, "hard": {"pass@1": [0.3, 0.0, 1], "pass@4": [0.8, 0.0, 1]},
                                  "soft": {"pass@1": [0.4, 0.0, 1], "pass@4": [0.7, 0.0, 1]}},
                         "hard": {"hard-greedy": {"pass@1": [0.6, 0.1, 2]}, "hard": {"pass@1": [0.5, 0.02, 2], "pass@4": [0.75, 0.05, 2]},
                                  "soft": {"pass@1": [0.45, 0.01, 2], "pass@4": [0.72, 0.0, 2]}}},
               "entropy_profiles": {"base": [0.1, 0.3, 0.2, 5.0], "hard": [0.05, 0.2, 0.1, 0.0]},
               "mean_cot_length": {"base": 2.0, "hard": 2.0}}
    fig = viz.matrix_pass_at_k(summary, ks=(1, 4))
    bars = {(t.name, t.xaxis): (list(t.x), list(t.y), list(t.error_y.array)) for t in fig.data}
    assert bars[("hard training", "x")] == (["hard greedy", "hard", "soft"], [60.0, 50.0, 45.0], [10.0, 2.0, 1.0])
    assert bars[("base model", "x2")][0] == ["hard", "soft"]  # greedy settings only in the pass@1 panel
    assert bars[("base model", "x2")][1] == [80.0, 70.0]
    fig = viz.matrix_entropy_profiles(summary)
    assert [list(t.y) for t in fig.data] == [[0.1, 0.3, 0.2, 5.0], [0.05, 0.2, 0.1, 0.0]]
    assert list(fig.layout.xaxis.range) == [0, 3]  # 1.6 x the mean CoT length: the noisy tail is panned away
    assert fig.layout.yaxis.range[1] == pytest.approx(1.15 * 5.0)
