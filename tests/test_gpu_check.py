"""benchmarks/gpu_check.py runs end to end as its CPU dry run (--device cpu --tiny): every check passes, the JSON holds
every row with positive numbers, and the real-model section runs its checks and 2 soft-RL steps on SmolLM2's real
weights. The GPU run itself (--device cuda) needs an H100 and is not part of the suite."""

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # about 30 s on 2 cores: the tiny run still carries Qwen's 151,936-token vocabulary

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_dry_run_passes_every_check_and_writes_every_row(tmp_path, capsys, smollm2, smollm2_cache, monkeypatch):
    gpu_check = load_script()
    out = tmp_path / "gpu_check.json"
    monkeypatch.setenv("SOFTVIZ_CACHE", str(smollm2_cache))  # SmolLM2 as converted by this run (conftest)
    assert gpu_check.main(["--device", "cpu", "--tiny", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "CPU DRY RUN" in printed and "FAIL" not in printed
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["model_shape"]["vocab"] == 151_936

    # equivalence: greedy vs transformers, fuzzy vs hard, then per mode KV cache and RL log-prob checks
    checks = {c["check"]: c["passed"] for c in report["checks"]}
    assert all(checks.values()), checks
    expected = {"hard greedy == transformers greedy generate", "fuzzy greedy == hard greedy",
                *(f"{m}: rl.sequence_logprobs == rollout log-probs" for m in ("hard", "soft", "fuzzy")),
                *(f"{m}: KV cache == no cache, {what}" for m in ("soft", "fuzzy")
                  for what in ("shadow tokens", "Gaussian log-probs")),
                "FSDP step: same rollouts as the unsharded model", "FSDP step: same loss and gradient norm",
                "FSDP step: sharded checkpoint restores weights and AdamW state"}
    assert set(checks) == expected
    fsdp = next(c["detail"] for c in report["checks"] if c["check"] == "FSDP step: same loss and gradient norm")
    assert "grad norm" in fsdp and "rel" in fsdp
    restored = next(c["detail"] for c in report["checks"] if c["check"].startswith("FSDP step: sharded"))
    assert restored.endswith("weights equal, moments equal"), restored

    rows = report["throughput"]["rows"]
    assert set(rows) == {"transformers generate", "softviz hard", "softviz soft", "softviz fuzzy"}
    assert all(r["tokens_per_s"] > 0 and r["seconds"] > 0 for r in rows.values()), rows
    assert set(report["throughput"]["ratios"]) == {"hard_vs_generate", "soft_vs_generate", "fuzzy_vs_generate",
                                                   "soft_vs_hard", "fuzzy_vs_hard"}
    assert all(v > 0 for v in report["throughput"]["ratios"].values())

    steps = report["rl_step"]["rows"]
    assert set(steps) == {"hard", "soft", "fuzzy"}
    for mode, r in steps.items():
        assert r["timed_step"] == 2, (mode, r)  # step 1 warms up; the tiny run never hits the time budget
        assert min(r["step_s"], r["rollout_s"], r["loss_backward_s"], r["optimizer_s"]) > 0, (mode, r)
        assert r["peak_mem_gib"] is None  # CUDA memory only on a GPU

    real = report["real_model"]
    assert real["model"] == "smollm2" and real["model_sha256"] == packaged_digest()
    assert {c["check"] for c in real["checks"]} == {f"smollm2: {c}" for c in expected if not c.startswith("FSDP")}
    assert all(c["passed"] for c in real["checks"]), real["checks"]
    t = real["training"]
    assert (t["mode"], t["steps"], t["validation_problems"]) == ("soft", 2, 4)
    assert 0 <= t["greedy_before"] <= 1 and 0 <= t["greedy_after"] <= 1
    assert t["paired_difference"] == pytest.approx(t["greedy_after"] - t["greedy_before"])
    lo, hi = t["paired_difference_95"]
    assert lo <= t["paired_difference"] <= hi
    assert "smollm2: soft RL" in printed and "greedy validation" in printed
    assert report["seconds"]["total"] > 0 and report["seconds"]["real_model"] > 0


def packaged_digest():
    from softviz.models import source_digest

    return source_digest("smollm2")


def test_time_budget_stops_the_timed_sections_early(tmp_path):
    gpu_check = load_script()
    out = tmp_path / "gpu_check.json"
    # a budget already spent once the model is built: the checks still run, sections 2-3 are skipped
    assert gpu_check.main(["--device", "cpu", "--tiny", "--budget-s", "0", "--real-model", "none", "--out",
                           str(out)]) == 0
    report = json.loads(out.read_text())
    assert all(c["passed"] for c in report["checks"])
    assert report["real_model"] == {"skipped": "--real-model none"}
    rows = [*report["throughput"]["rows"].values(), *report["rl_step"]["rows"].values()]
    assert len(rows) == 7 and all("skipped" in r for r in rows)
