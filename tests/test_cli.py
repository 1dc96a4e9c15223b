import json
import re

import pytest

from softviz.cli import main


def test_compare_prints_a_row_per_mode(capsys):
    assert main(["compare", "--modes", "hard,soft,fuzzy", "-n", "4", "--max-cot-tokens", "60"]) == 0
    out = capsys.readouterr().out
    assert "gold answer:" in out
    rows = {m: re.search(rf"^{m}\s+([\d.]+)%\s+([\d.]+)\s+(\d+)\s+([\d.]+)\s+(.*)$", out, re.M) for m in ("hard", "soft", "fuzzy")}
    for mode, row in rows.items():
        assert row, f"no row for {mode}:\n{out}"
        acc, H, distinct = float(row[1]), float(row[2]), int(row[3])
        assert 0 <= acc <= 100 and H >= 0 and 1 <= distinct <= 4
        counts = [int(c) for c in re.findall(r" x(\d+)", row[5])]
        assert sum(counts) == 4  # every rollout's answer is listed


def test_compare_with_a_typed_question(capsys):
    assert main(["compare", "--prompt", "Tom has 3 apples. Tom buys 2 more apples. How many apples does Tom have now?",
                 "--modes", "hard-greedy", "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "User: Tom has 3 apples." in out and "gold answer" not in out
    assert re.search(r"^hard-greedy\s+-", out, re.M)


def test_eval_writes_json(tmp_path, capsys):
    path = tmp_path / "eval.json"
    assert main(["eval", "--modes", "hard-greedy,hard", "--problems", "6", "-n", "4", "-k", "1,4", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    from softviz.models import model_digest

    assert report["model"] == "embedded" and report["model_sha256"] == model_digest()
    res = report["results"]
    assert [r["mode"] for r in res] == ["hard-greedy", "hard"]
    # the embedded model ends its CoT on the cue (the rest hit the length limit); every boxed answer counted
    assert all(0.9 <= r["cue_rate"] <= 1.0 and r["boxed_rate"] >= r["cue_rate"] - 0.1 for r in res)
    assert res[0]["n"] == 1 and res[1]["n"] == 4
    assert res[1]["pass_at"]["4"] >= res[1]["pass_at"]["1"]
    assert res[0]["entropy_by_position"] == [] or all(h >= 0 for h in res[0]["entropy_by_position"])


def test_eval_reports_the_off_domain_nll(tmp_path, capsys):
    path = tmp_path / "eval.json"
    assert main(["eval", "--modes", "hard", "--problems", "4", "-n", "2", "-k", "1", "--ood-task",
                 "arithmetic-puzzle", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["ood_nll"]["problems"] == 4 and report["ood_nll"]["solution"] > 0
    assert f"{report['ood_nll']['solution']:.3f}" in capsys.readouterr().out
    assert len(report["results"][0]["entropy_by_position"]) > 10


def test_bad_mode_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as stop:  # refused by argparse, before the model loads
        main(["compare", "--modes", "soft,warm"])
    assert stop.value.code == 2
    assert "unknown mode 'warm'" in capsys.readouterr().err


def test_curves_writes_html(tmp_path, capsys):
    run = tmp_path / "soft"
    run.mkdir()
    run.joinpath("metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "reward": s, "entropy": 0.1,
                                                                   "cot/mean_length": 9}) for s in (1, 2, 3)))
    out = tmp_path / "c.html"
    assert main(["curves", str(run), "--out", str(out)]) == 0
    assert out.stat().st_size > 1000 and '"soft"' in out.read_text()
    assert main(["curves", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_app_command_hands_its_flags_to_the_app(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["app", "-h"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "--max-rollouts" in out and "--share" in out
    with pytest.raises(SystemExit):
        main(["compare", "--not-a-flag"])
    assert "unrecognized arguments: --not-a-flag" in capsys.readouterr().err


def test_a_run_without_validation_or_checkpoints_leaves_a_model_eval_loads(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--mode", "hard", "--steps", "2", "--eval-every", "0", "--save-every", "0",
                 "--prompts-per-step", "1", "--group-size", "2", "--max-cot-tokens", "8", "--max-answer-tokens", "4",
                 "--output-dir", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"model after the last step: {run / 'final'}" in out and not (run / "best").exists()
    assert main(["eval", "--model", str(run / "final"), "--modes", "hard-greedy", "--problems", "2"]) == 0
    assert "hard-greedy: 2 problems x 1 samples: pass@1" in capsys.readouterr().out
