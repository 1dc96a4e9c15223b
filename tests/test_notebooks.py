"""The tutorial notebooks: committed without outputs, and each runs top to bottom with small parameters.

Every notebook is executed with papermill into a temporary folder (the committed files are never written).
Its last code cell, tagged "result", prints one line `RESULT {json}` with numbers the notebook computed;
the tests check those numbers, not only that the notebook ran.
"""

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pm = pytest.importorskip("papermill", reason="papermill runs the notebooks (the `notebooks` extra)")

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

# Small sizes: the five notebooks together take about 1½ minutes on 2 CPU cores (75-90 s measured).
SMALL = {
    "01_what_is_a_soft_token.ipynb": {"n_rollouts": 4, "max_cot_tokens": 48},
    "02_noise_and_exploration.ipynb": {"problems": 8, "samples": 4, "gammas": [0.0, 0.33, 3.0],
                                       "taus": [0.0001, 0.5], "diversity_samples": 8, "max_cot_tokens": 48},
    "03_rl_fine_tune.ipynb": {"steps": 2, "prompts_per_step": 2, "group_size": 2, "eval_every": 2, "eval_size": 4,
                              "profile_problems": 2, "profile_samples": 2, "max_cot_tokens": 48},
    "04_train_x_inference.ipynb": {"quick_steps": 2, "quick_prompts_per_step": 2, "quick_group_size": 2,
                                   "quick_problems": 4, "quick_samples": 2, "quick_eval_size": 4,
                                   "quick_ood_problems": 4},
    "05_bring_your_own_model.ipynb": {"cpu_samples": 2, "smollm2_samples": 2, "smollm2_max_cot_tokens": 32},
    "06_add_your_own_method.ipynb": {"n_rollouts": 4, "max_cot_tokens": 48, "rl_steps": 2, "prompts_per_step": 2,
                                     "group_size": 2},
}
# Folders the tests point at tmp_path (the notebooks' defaults are fresh temporary folders).
EXTRA = {"03_rl_fine_tune.ipynb": ("run_dir",), "04_train_x_inference.ipynb": ("live_dir",),
         "06_add_your_own_method.ipynb": ("run_dir",)}


def _tags(cell) -> list:
    return cell.get("metadata", {}).get("tags", [])


def run_notebook(name: str, tmp_path: Path, **params) -> dict:
    """Execute notebooks/<name> with SMALL[name] (and params) into tmp_path; return its RESULT json."""
    out = tmp_path / name
    pm.execute_notebook(str(NOTEBOOKS / name), str(out), parameters={**SMALL[name], **params},
                        kernel_name="python3", cwd=str(tmp_path), progress_bar=False, execution_timeout=600)
    nb = nbformat.read(out, as_version=4)
    cell = next(c for c in nb.cells if "result" in _tags(c))
    text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    assert lines, f"{name}: the result cell printed no RESULT line; it printed {text!r}"
    return json.loads(lines[-1][len("RESULT "):])


def test_every_notebook_is_tested_and_committed_clean():
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == sorted(SMALL), "a notebook without small test parameters in SMALL, or a missing one"
    for name in names:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata["kernelspec"]["name"] == "python3"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name} is committed with outputs"
        params = [c for c in code if "parameters" in _tags(c)]
        assert len(params) == 1 and code[0] is params[0], f"{name}: the first code cell must be the parameters cell"
        assert "result" in _tags(code[-1]), f"{name}: the last code cell must be tagged 'result'"
        assert nb.cells[0].cell_type == "markdown" and "Run time" in nb.cells[0].source
        assert nb.cells[-1].cell_type == "markdown" and nb.cells[-1].source.startswith("## What we saw")
        assert "{" not in nb.cells[-1].source, f"{name}: an unfilled placeholder in 'What we saw'"
        for key in [*SMALL[name], *EXTRA.get(name, ())]:  # the test's parameters exist in the notebook
            assert f"\n{key} = " in "\n" + params[0].source, f"{name}: no parameter {key!r}"


def test_01_what_is_a_soft_token(tmp_path):
    r = run_notebook("01_what_is_a_soft_token.ipynb", tmp_path)
    assert r["weights_sum"] == pytest.approx(1.0, abs=1e-5)  # p = softmax(logits/τ) sums to 1
    assert r["pE_vs_sum_max_abs"] < 1e-5  # mixing.mixture_embedding equals Σ_v p_v e_v written out
    assert r["entropy_here_vs_trace"] < 1e-4  # the recomputed step's entropy equals the Trace's
    assert r["fuzzy_nearest_is_argmax"]  # τ = 1e-4: p·E is the argmax token's embedding
    assert 0 < r["top1_weight"] <= 1 and r["noise_norm"] > 0
    assert r["rollouts"] == {"hard": 4, "soft": 4, "fuzzy": 4}
    assert all(0 <= c <= 4 for c in r["correct"].values())


def test_02_noise_and_exploration(tmp_path):
    r = run_notebook("02_noise_and_exploration.ipynb", tmp_path)
    p1, pk = r["gamma_pass1"], r["gamma_passk"]
    assert set(p1) == {"0", "0.33", "3"} and r["largest_gamma"] == "3"
    # γ = 3 swamps the embeddings: the embedded model answers almost nothing right (0% at these sizes, 1.2% on
    # 100 problems), against ~40% at γ = 0.33
    assert p1["3"] <= p1["0.33"]
    assert pk["0"] == pytest.approx(p1["0"])  # γ = 0: the soft CoT is deterministic, so pass@k = pass@1
    assert all(pk[g] >= p1[g] - 1e-9 for g in p1)
    assert r["correct_evaluate"] == r["correct_trace"]  # evaluate() and the Trace count the same rollouts
    assert set(r["distinct_answers"]) == {"hard", "soft", "fuzzy", "soft γ=1"}
    assert all(1 <= n <= 8 for n in r["distinct_answers"].values())


def test_03_rl_fine_tune(tmp_path):
    r = run_notebook("03_rl_fine_tune.ipynb", tmp_path, run_dir=str(tmp_path / "runs"))  # not a leaked temp folder
    assert r["records"] == {"hard": 3, "soft": 3, "fuzzy": 3}  # 2 steps + the step-0 validation record
    assert r["traces_saved"] == {m: ["step00001.safetensors", "step00002.safetensors"] for m in ("hard", "soft", "fuzzy")}
    assert r["trace_rollouts"] == {"hard": 4, "soft": 4, "fuzzy": 4}  # 2 prompts x 2 samples
    hard = r["committed"]["hard, lr 1e-4, 850 steps"]  # results/rl_short/hard_850steps.jsonl, as docs/rl.md says
    assert hard["first"] == pytest.approx(0.535, abs=1e-3) and hard["last"] == pytest.approx(0.668, abs=1e-3)
    assert hard["last_step"] == 850


def test_04_train_x_inference(tmp_path):
    r = run_notebook("04_train_x_inference.ipynb", tmp_path, live_dir=str(tmp_path / "matrix"))
    assert r["rows"] == ["base", "hard", "soft", "fuzzy"]  # from results/matrix/matrix.json, or the live table
    settings = {"hard-greedy", "hard", "fuzzy-greedy", "fuzzy", "soft-greedy", "soft"}
    assert all(set(s) == settings for s in r["settings"].values())
    assert set(r["entropy_profiles"]) == {"base", "hard", "soft", "fuzzy"}
    assert r["checks"] and all(isinstance(v, bool) for v in r["checks"].values())
    if r["source"] == "live":
        assert r["columns"] == ["hard G", "hard S@1", "hard S@2", "fuzzy G", "fuzzy S@1", "fuzzy S@2",
                                "soft G", "soft S@1", "soft S@2"]


def test_05_bring_your_own_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the kernel inherits it: the GPU cells skip even on a GPU machine
    r = run_notebook("05_bring_your_own_model.ipynb", tmp_path)
    assert not r["ready"] and ("GPU" in r["reason"] or "offline" in r["reason"])
    assert r["gpu_pass1"] is None
    assert r["fixture_sizes"] == {"train": 20, "validation": 4, "test": 6}  # tests/fixtures/gsm8k
    assert r["cpu_rollouts"] == 2 and all(x in (0.0, 10.0, 100.0) for x in r["cpu_rewards"])
    # section 5 runs offline on SmolLM2: a real LM is unsure at far more CoT steps than the embedded model (~5%)
    assert r["smollm2_rollouts"] == {"hard": 2, "soft": 2, "fuzzy": 2}
    assert all(0.0 <= f <= 1.0 for f in r["smollm2_frac_uncertain"].values())
    assert r["smollm2_frac_uncertain"]["soft"] > 0.15


def test_06_add_your_own_method(tmp_path):
    r = run_notebook("06_add_your_own_method.ipynb", tmp_path, run_dir=str(tmp_path / "run"))
    assert r["two_per_step"]  # the toy method mixes the two most likely tokens only
    assert r["logprob_gap"] < 1e-2  # training recomputes the rollout's Gaussian log-probs (values of order 10^2)
    assert r["rl_records"] == 2  # eval_every=0: one record per step
    assert r["k1_is_hard"]  # multiplex with K = 1 is hard sampling, token for token
    assert 0 < r["multiplex_agree"] <= 1 and r["rollouts"] == 4
