"""`softviz methods`: every piece written once, the learning rate chosen on validation, the summary holding the
cells' numbers, and a rerun resuming instead of repeating."""

import json

import pytest

from softviz.methods import MethodsConfig, markdown_table, run_methods

TINY = dict(methods=("hard", "multiplex"), seeds=(0,), steps=2, sweep_steps=2, eval_every=1, eval_size=4,
            lr_grid=(("hard", (1e-4, 3e-3)), ("multiplex", (1e-4,))), problems=3, samples=2, ks=(1, 2),
            snr_estimates=2, snr_prompts=2, prompts_per_step=2, group_size=2, max_cot_tokens=40)


def test_methods_pipeline_writes_every_piece_and_resumes(tmp_path):
    cfg = MethodsConfig(**TINY)
    logs = []
    summary = run_methods(tmp_path, cfg, log=logs.append)
    for name in ("config.json", "methods.json", "table.md", "cells/base.json", "cells/hard-seed0.json",
                 "cells/multiplex-seed0.json", "snr/hard.json", "snr/multiplex.json", "runs/hard-seed0/done.json",
                 "sweep/hard-lr0.0001/done.json", "sweep/hard-lr0.003/done.json", "figures/learning_curves.html"):
        assert (tmp_path / name).exists(), name
    assert not (tmp_path / "runs" / "hard-seed0" / "checkpoint.pt").exists()  # weights dropped once evaluated
    hard = summary["methods"]["hard"]
    sweep = hard["lr_sweep_final_validation"]
    assert set(sweep) == {"0.0001", "0.003"}
    assert hard["learning_rate"] == float(max(sweep, key=lambda k: (sweep[k], -float(k))))  # best validation wins
    cell = json.loads((tmp_path / "cells" / "hard-seed0.json").read_text())
    assert hard["test"]["pass@1"][0] == pytest.approx(cell["pass_at"]["1"]) and hard["test"]["pass@1"][1] == 0
    assert hard["cot_entropy_after"][0] == pytest.approx(cell["mean_cot_entropy"])
    metrics = [json.loads(l) for l in (tmp_path / "runs" / "hard-seed0" / "metrics.jsonl").read_text().splitlines()]
    vals = {m["step"]: m["val/greedy_accuracy"] for m in metrics if "val/greedy_accuracy" in m}
    assert hard["curve"]["step"] == [0, 1, 2] and [m for m, _ in hard["curve"]["mean_ci"]] == [vals[0], vals[1], vals[2]]
    assert hard["validation_gain"][0] == pytest.approx(vals[2] - vals[0])
    assert 0 <= summary["before"]["pass@1"] <= summary["before"]["pass@2"] <= 1
    table = markdown_table(summary)
    assert "| multiplex | 0.0001 | 1 |" in table and "starting model" in table

    logs.clear()
    again = run_methods(tmp_path, cfg, log=logs.append)  # everything is done: nothing is trained or evaluated
    assert not any(w in l for l in logs for w in ("training", "seed0:", "base:", "gradient signal")), logs
    assert again["methods"] == summary["methods"]
    with pytest.raises(ValueError, match="another configuration"):
        run_methods(tmp_path, MethodsConfig(**{**TINY, "steps": 3}))


@pytest.mark.parametrize("kwargs, message", [
    (dict(methods=("soft-greedy",), lr_grid=(("soft-greedy", (1e-4,)),)), "cannot be trained"),
    (dict(methods=("hard",), lr_grid=()), "no learning rates for 'hard'"),
    (dict(seeds=(0, 100)), "sweep_seed = 100 is one of the seeds"),
    (dict(ks=(1, 64)), "pass@k needs k <= samples"),
])
def test_bad_methods_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MethodsConfig(**kwargs)
