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
