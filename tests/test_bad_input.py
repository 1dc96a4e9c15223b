"""Bad input never corrupts a model or escapes as an internal error: one test class per rule.

Rules: rewards that are not finite numbers stop a run before any update; no optimizer step on a non-finite
loss or gradient; a checkpoint is checked whole before anything is loaded; answers compare exactly; one
validation rule for numbers (softviz.checks); each API edge gets a ValueError naming the argument.
"""

import json
import math

import numpy as np
import pytest
import torch

from softviz import Mode, Trace, TraceConfig, generate, load_model
from softviz.config import RLConfig
from softviz.evaluate import evaluate, pass_at_k
from softviz.rl import grpo_advantages, rloo_advantages
from softviz.tasks import ArithmeticTask, normalize_number
from softviz.tasks.gsm8k import verify_equal
from softviz.train import CHECKPOINT, FINAL, NonFiniteError, check_rewards, train

TINY = dict(prompts_per_step=1, group_size=2, max_cot_tokens=8, max_answer_tokens=4, eval_every=0, save_every=1,
            warmup_steps=0, learning_rate=1e-3)
PROMPT = "User: Tom has 5 apples. Tom buys 3 more apples. How many apples does Tom have now? Assistant:"


def fresh():
    return load_model(device="cpu")


def weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(model, ref: dict) -> bool:
    # nothing may touch the weights at all, so equality is bitwise
    return all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


# ---- rewards ---------------------------------------------------------------------------------------------

class TestRewards:
    @pytest.mark.parametrize("raw, problem", [
        ([1.0, float("nan")], "returned nan, not a finite number"),
        ([float("inf"), 0.0], "returned inf, not a finite number"),
        ([1.0, True], "returned True, not a finite number"),
        ([1.0, "100"], "returned '100', not a finite number"),
        ([1.0], "returned 1 rewards for 2 completions"),
        ([1.0, 2.0, 3.0], "returned 3 rewards for 2 completions"),
        (7.0, "returned float 7.0 instead of a list"),
        ("100", "returned str '100' instead of a list"),
        (None, "returned NoneType None instead of a list"),
    ])
    def test_bad_rewards_name_the_step_and_prompt(self, raw, problem):
        with pytest.raises(ValueError, match=problem) as err:
            check_rewards(raw, ["User: p0 Assistant:", "User: p1 Assistant:"], ["c0", "c1"], step=3)
        assert "at step 3" in str(err.value) and "No update was made" in str(err.value)
        if "not a finite number" in problem:  # an element: its rollout, prompt and completion are named
            assert "prompt 'User: p1 Assistant:'" in str(err.value) or "prompt 'User: p0 Assistant:'" in str(err.value)

    def test_numpy_and_tensor_rewards_are_numbers(self):
        got = check_rewards(np.array([1, 2.5]), ["p", "p"], ["a", "b"])
        assert got.tolist() == [1.0, 2.5]
        assert check_rewards(torch.tensor([3.0, -1.0]), ["p", "p"], ["a", "b"]).tolist() == [3.0, -1.0]

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), "x"])
    def test_a_bad_reward_stops_training_before_any_update(self, bad, tmp_path):
        model, tok = fresh()
        before = weights(model)
        cfg = RLConfig(mode="soft", steps=2, **TINY)
        with pytest.raises(ValueError, match=r"at step 1; rollout 1, prompt 'User: .*', completion '.*boxed"):
            list(train(model, tok, cfg, output_dir=tmp_path, progress=False,
                       reward_fn=lambda completions, **kw: [1.0, bad]))
        assert same_weights(model, before)
        assert not (tmp_path / CHECKPOINT).exists() and not (tmp_path / FINAL).exists()

    def test_none_means_not_applicable(self):
        # RLOO, one group of 4: rollout 1 is not applicable. Its advantage is 0 and the others' baselines
        # average the other *applicable* rewards: A_0 = 10 - (30 + 50)/2 = -30, A_2 = 30 - 30 = 0, A_3 = 50 - 20 = 30.
        rewards = check_rewards([10.0, None, 30.0, 50.0], ["p"] * 4, ["c"] * 4)
        assert math.isnan(rewards[1])
        valid = ~rewards.isnan()
        assert rloo_advantages(rewards, 4, valid).tolist() == [-30.0, 0.0, 0.0, 30.0]
        # GRPO: mean 30, unbiased std 20 -> (-1, 0, 0, 1) up to eps
        g = grpo_advantages(rewards, 4, valid=valid, eps=0.0)
        assert g.tolist() == pytest.approx([-1.0, 0.0, 0.0, 1.0])
        # a group with one applicable reward has no baseline: no signal
        lone = check_rewards([None, 5.0], ["p"] * 2, ["c"] * 2)
        assert rloo_advantages(lone, 2, ~lone.isnan()).tolist() == [0.0, 0.0]
        assert grpo_advantages(lone, 2, valid=~lone.isnan()).tolist() == [0.0, 0.0]
        # all applicable: exactly the unmasked formulas
        full = torch.tensor([10.0, 20.0, 30.0, 50.0])
        assert torch.equal(rloo_advantages(full, 4, torch.ones(4, dtype=torch.bool)), rloo_advantages(full, 4))

    def test_a_step_with_none_rewards_trains_on_the_others(self, tmp_path):
        model, tok = fresh()
        cfg = RLConfig(mode="hard", steps=1, **{**TINY, "group_size": 4})
        calls = []

        def reward(completions, **kw):
            calls.append(len(completions))
            return [None, 100.0, 0.0, None]

        (m,) = list(train(model, tok, cfg, output_dir=tmp_path, progress=False, reward_fn=reward))
        assert calls == [4] and m["frac_reward_none"] == 0.5 and m["reward"] == 50.0
        assert math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"]) and m["grad_norm"] > 0

    def test_no_update_on_a_non_finite_loss_and_the_checkpoint_stays(self, tmp_path):
        # Rewards of ±3e38 are finite, but their RLOO advantage (6e38) overflows fp32: the loss is not finite.
        model, tok = fresh()
        cfg = RLConfig(mode="hard", steps=3, **TINY)
        calls = []

        def reward(completions, **kw):
            calls.append(1)
            return [100.0, 0.0] if len(calls) == 1 else [3e38, -3e38]

        gen = train(model, tok, cfg, output_dir=tmp_path, progress=False, reward_fn=reward)
        assert next(gen)["step"] == 1
        after_step_1 = weights(model)
        with pytest.raises(NonFiniteError, match="step 2: the loss .* is not finite, so no update was made"):
            next(gen)
        assert same_weights(model, after_step_1)
        ck = torch.load(tmp_path / CHECKPOINT, weights_only=False)
        assert ck["step"] == 1 and all(torch.equal(v, after_step_1[k]) for k, v in ck["model"].items())
        assert [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1]


# ---- resume ----------------------------------------------------------------------------------------------

class TestResume:
    @pytest.fixture(scope="class")
    def run(self, tmp_path_factory):
        out = tmp_path_factory.mktemp("run")
        model, tok = fresh()
        list(train(model, tok, RLConfig(mode="soft", steps=1, **TINY), output_dir=out, progress=False))
        return out

    def refused(self, out, cfg, model, match):
        tok = load_model(device="cpu")[1]
        before, rng = weights(model), torch.get_rng_state()
        with pytest.raises(ValueError, match=match):
            next(train(model, tok, cfg, output_dir=out, progress=False))
        assert same_weights(model, before) and torch.equal(torch.get_rng_state(), rng)

    def test_another_config_is_refused_before_loading(self, run):
        model, _ = fresh()
        torch.manual_seed(123)
        self.refused(run, RLConfig(mode="soft", steps=1, **{**TINY, "learning_rate": 2e-3}), model,
                     r"another RLConfig \(learning_rate: 0.001 -> 0.002\)")

    @pytest.mark.parametrize("drop", ["optimizer", "rng", "config", "model"])
    def test_missing_parts_are_refused_before_loading(self, run, tmp_path, drop):
        ck = torch.load(run / CHECKPOINT, weights_only=False)
        del ck[drop]
        torch.save(ck, tmp_path / CHECKPOINT)
        model, _ = fresh()
        self.refused(tmp_path, RLConfig(mode="soft", steps=1, **TINY), model, rf"lacks \['{drop}'\]")

    def test_another_model_is_refused_before_loading(self, run, tmp_path):
        ck = torch.load(run / CHECKPOINT, weights_only=False)
        ck["model"] = {k: v for k, v in ck["model"].items() if "layers.3." not in k}  # a 3-layer model's weights
        torch.save(ck, tmp_path / CHECKPOINT)
        model, _ = fresh()
        self.refused(tmp_path, RLConfig(mode="soft", steps=1, **TINY), model, r"written for another model .*missing")


# ---- a finished run leaves a model -------------------------------------------------------------------------

def test_a_finished_run_always_leaves_final(tmp_path):
    model, tok = fresh()
    cfg = RLConfig(mode="hard", steps=2, **{**TINY, "eval_every": 0, "save_every": 0})
    list(train(model, tok, cfg, output_dir=tmp_path, progress=False))
    assert not (tmp_path / "best").exists()  # no validation, so no best model: final/ is the one to load
    loaded, _ = load_model(str(tmp_path / FINAL), device="cpu")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert torch.load(tmp_path / CHECKPOINT, weights_only=False)["step"] == 2


# ---- answers -----------------------------------------------------------------------------------------------

class TestAnswers:
    @pytest.mark.parametrize("text, expected", [
        ("12345678901234567890", "12345678901234567890"),
        ("12345678901234567891.000", "12345678901234567891"),
        ("\u22125", "-5"),  # U+2212 MINUS SIGN
        ("\u20135", "-5"),  # EN DASH
        ("\uff0d\uff15", "-5"),  # full-width hyphen-minus and digit
        ("\u0665\u0660", "50"),  # Arabic-Indic digits
        ("-0", "0"), ("007", "7"), ("2.50", "2.5"), (" 1,200 ", "1200"), ("$3", "3"),
        ("9" * 5000, "9" * 5000),  # no float, no int(): any length
        ("1,2", "1,2"), ("-12,345.0", "-12345"),
        ("1e400", "1e400"), ("\\frac{1}{2}", "\\frac{1}{2}"), (42, "42"), (np.int64(-3), "-3"), (None, None),
    ])
    def test_normalize_number(self, text, expected):
        assert normalize_number(text) == expected

    def test_non_text_answers_are_refused(self):
        with pytest.raises(ValueError, match="an answer must be text or an integer, got float 2.5"):
            normalize_number(2.5)
        with pytest.raises(ValueError, match="got bool True"):
            normalize_number(True)

    def test_scores_are_exact(self):
        task = ArithmeticTask()
        assert task.score("\\boxed{12345678901234567891}", "12345678901234567890") == 10.0  # wrong, boxed
        assert task.score("\\boxed{\u22125}", "-5") == 100.0
        assert task.score("\\boxed{" + "7" * 400 + "}", "7" * 400) == 100.0
        assert task.reward(completions=["\\boxed{6}", "\\boxed{7}"], answer=[6, 6]) == [100.0, 10.0]
        assert not verify_equal("12345678901234567891", "12345678901234567890")
        assert verify_equal("\u22125", -5) and verify_equal("1,000", "1000") and verify_equal("\\frac{1}{2}", "0.5")


# ---- numbers -------------------------------------------------------------------------------------------------

class TestNumbers:
    @pytest.mark.parametrize("cls, fields, message", [
        (Mode, dict(top_k=True), r"Mode.top_k = True is invalid: allowed an integer"),
        (Mode, dict(kind="soft_thinking", top_k=2.0), r"Mode.top_k = 2.0"),
        (Mode, dict(cot_temperature=1e-40), r"smallest allowed is 1e-10"),
        (Mode, dict(kind="hard", noise_scale=0.0, cot_temperature=1e-12), r"smallest allowed is 1e-10"),
        (Mode, dict(answer_temperature=1e-300), r"Mode.answer_temperature = 1e-300 .*smallest allowed is 1e-10"),
        (Mode, dict(kind="gumbel", noise_scale=0.0, gumbel_temperature=0.0), r"Mode.gumbel_temperature = 0.0"),
        (Mode, dict(cot_temperature=True), r"Mode.cot_temperature = True"),
        (Mode, dict(noise_scale=float("nan")), r"Mode.noise_scale = nan"),
        (Mode, dict(cold_stop_steps=False), r"Mode.cold_stop_steps = False"),
        (TraceConfig, dict(top_k=True), r"TraceConfig.top_k = True"),
        (TraceConfig, dict(keep_inputs=1), r"TraceConfig.keep_inputs = 1"),
        (RLConfig, dict(steps=True), r"RLConfig.steps = True"),
        (RLConfig, dict(group_size=2.0), r"RLConfig.group_size = 2.0"),
        (RLConfig, dict(seed="7"), r"RLConfig.seed = '7'"),
        (RLConfig, dict(seed=-1), r"RLConfig.seed = -1"),
        (RLConfig, dict(max_cot_tokens=10**9), r"RLConfig.max_cot_tokens = 1000000000 .*<= 131072"),
        (RLConfig, dict(prompts_per_step=10_000, group_size=10_000), r"prompts_per_step x group_size <= 1000000"),
        (RLConfig, dict(answer_temperature=1e-40), r"smallest allowed is 1e-10"),
        (RLConfig, dict(mixture_embedding_grad="false"), r"RLConfig.mixture_embedding_grad = 'false'"),
        (RLConfig, dict(trace_steps=(1.5,)), r"RLConfig.trace_steps\[\] = 1.5"),
        (RLConfig, dict(trace_steps="12"), r"RLConfig.trace_steps = '12'"),
        (RLConfig, dict(mode=None), r"RLConfig.mode = None"),
    ])
    def test_refused_with_the_field_and_value(self, cls, fields, message):
        with pytest.raises(ValueError, match=message):
            cls(**fields)

    def test_numpy_numbers_are_accepted_and_become_python_numbers(self, embedded):
        m = Mode(kind="soft_thinking", top_k=np.int64(3), cot_temperature=np.float32(0.5), noise_scale=0.0)
        assert type(m.top_k) is int and type(m.cot_temperature) is float and m.top_k == 3
        cfg = RLConfig(steps=np.int64(5), seed=np.int32(3), trace_steps=[np.int64(5)])
        assert type(cfg.steps) is int and cfg.trace_steps == (5,)
        json.dumps(__import__("dataclasses").asdict(cfg))  # configs stay JSON-serialisable
        model, tok = embedded
        a = generate(model, tok, [PROMPT], "hard-greedy", n=np.int64(2), max_cot_tokens=np.int32(12), seed=np.int64(0))
        b = generate(model, tok, [PROMPT], "hard-greedy", n=2, max_cot_tokens=12, seed=0)
        assert torch.equal(a.cot_tokens, b.cot_tokens) and a.answers == b.answers

    def test_tiny_temperatures_that_are_allowed_still_give_text(self, embedded):
        model, tok = embedded
        r = generate(model, tok, [PROMPT], Mode(kind="soft", cot_temperature=1e-10, noise_scale=0.0), max_cot_tokens=12)
        g = generate(model, tok, [PROMPT], "hard-greedy", max_cot_tokens=12)
        assert torch.equal(r.cot_tokens, g.cot_tokens) and r.cot_texts[0].strip()

    @pytest.mark.parametrize("kwargs, message", [
        (dict(n=True), r"^n = True is invalid"),
        (dict(n=10**7), r"^n = 10000000 is invalid: allowed an integer with 1 <= x <= 1000000"),
        (dict(n=200_000), r"would allocate about \d+\.\d GiB .* above the cap of 16 GiB"),
        (dict(n=4, max_memory_gb=1e-6), r"above the cap of 1e-06 GiB"),
        (dict(max_answer_tokens=np.float64(3.0)), r"max_answer_tokens = np.float64\(3.0\) is invalid"),
        (dict(seed="1"), r"^seed = '1' is invalid"),
        (dict(prompt_index_offset=-1), r"prompt_index_offset = -1"),
    ])
    def test_generate_sizes(self, embedded, kwargs, message):
        model, tok = embedded
        with pytest.raises(ValueError, match=message):
            generate(model, tok, [PROMPT], "soft", **kwargs)

    def test_memory_cap_from_the_environment(self, embedded, monkeypatch):
        model, tok = embedded
        monkeypatch.setenv("SOFTVIZ_MAX_MEMORY_GB", "0.000001")
        with pytest.raises(ValueError, match=r"above the cap of 1e-06 GiB"):
            generate(model, tok, [PROMPT], "soft", n=2)
        monkeypatch.setenv("SOFTVIZ_MAX_MEMORY_GB", "lots")
        with pytest.raises(ValueError, match=r"SOFTVIZ_MAX_MEMORY_GB='lots' is not a number"):
            generate(model, tok, [PROMPT], "soft", n=2)


# ---- API edges -----------------------------------------------------------------------------------------------

class TestApiEdges:
    @pytest.mark.parametrize("kwargs, message", [
        (dict(mode=None), r"mode None is not a preset name; choose one of: hard, "),
        (dict(mode=3), r"mode = 3 is invalid: allowed a Mode or a preset name"),
        (dict(trace=1), r"trace = 1 is invalid: allowed True, False or a TraceConfig"),
        (dict(trace="yes"), r"trace = 'yes' is invalid"),
        (dict(answer_cue=None), r"answer_cue = None is invalid: allowed a non-empty string"),
        (dict(answer_cue=""), r"answer_cue = '' is invalid: .*would end every CoT after one token"),
        (dict(answer_cue="   "), r"answer_cue = '   ' is invalid"),
    ])
    def test_generate_arguments(self, embedded, kwargs, message):
        model, tok = embedded
        with pytest.raises(ValueError, match=message):
            generate(model, tok, [PROMPT], **{"mode": "soft", **kwargs})

    def test_mode_preset_of_none(self):
        with pytest.raises(ValueError, match=r"mode None is not a preset name"):
            Mode.preset(None)
        assert Mode.preset(Mode.preset("soft")) == Mode.preset("soft")

    def test_trace_layers(self, embedded):
        assert TraceConfig(layers="model.norm").layers == ("model.norm",)  # one name, not its characters
        for bad in [("",), ("model.norm", None), 7]:
            with pytest.raises(ValueError, match=r"TraceConfig.layers = .* is invalid: allowed module names"):
                TraceConfig(layers=bad)
        model, tok = embedded
        r = generate(model, tok, [PROMPT], "soft-greedy", max_cot_tokens=6, trace=TraceConfig(layers="model.norm"))
        assert list(r.trace.layers) == ["model.norm"] and r.trace.layers["model.norm"].shape[:2] == (1, 6)

    def test_trace_files_without_metadata(self, tmp_path):
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(2)}, tmp_path / "plain.safetensors")
        with pytest.raises(ValueError, match=r"plain.safetensors is a safetensors file but not a softviz trace"):
            Trace.load(tmp_path / "plain.safetensors")
        from softviz.trace import STEP_FIELDS

        tensors = {k: torch.zeros(1, 2) for k in STEP_FIELDS} | {"lengths": torch.zeros(1)}
        save_file(tensors, tmp_path / "nometa.safetensors", metadata={"format": "softviz-trace", "version": "1"})
        with pytest.raises(ValueError, match=r"nometa.safetensors has no 'meta' in its trace header"):
            Trace.load(tmp_path / "nometa.safetensors")
        save_file(tensors, tmp_path / "torn.safetensors", metadata={"format": "softviz-trace", "version": "1",
                                                                     "meta": "{\"mode", "token_strings": "{}"})
        with pytest.raises(ValueError, match=r"torn.safetensors has a damaged 'meta' entry"):
            Trace.load(tmp_path / "torn.safetensors")
        save_file(tensors, tmp_path / "ver.safetensors", metadata={"format": "softviz-trace", "version": "x"})
        with pytest.raises(ValueError, match=r"ver.safetensors has a damaged trace header \(version 'x'\)"):
            Trace.load(tmp_path / "ver.safetensors")

    def test_evaluate_edges(self, embedded):
        model, tok = embedded
        task = ArithmeticTask()
        ex = task.examples("test", 2)
        with pytest.raises(ValueError, match=r"^n = 0 is invalid"):
            evaluate(model, tok, task, ex, "hard", n=0)
        with pytest.raises(ValueError, match=r"evaluate\(\) got no examples"):
            evaluate(model, tok, task, [], "hard")
        with pytest.raises(ValueError, match=r"ks\[\] = 4 is invalid: .*pass@k needs k <= n = 2"):
            evaluate(model, tok, task, ex, "hard", n=2, ks=(1, 4))
        with pytest.raises(ValueError, match=r"ks\[\] = 1.5 is invalid"):
            evaluate(model, tok, task, ex, "hard", n=2, ks=(1.5,))
        with pytest.raises(ValueError, match=r"ks = 2 is invalid"):
            evaluate(model, tok, task, ex, "hard", n=2, ks=2)
        with pytest.raises(ValueError, match=r"mode None is not a preset name"):
            evaluate(model, tok, task, ex, None)

    @pytest.mark.parametrize("args, message", [
        ((4, 1, 1.5), r"pass_at_k k = 1.5 is invalid: allowed an integer"),
        ((4.0, 1, 1), r"pass_at_k n = 4.0 is invalid"),
        ((4, 1, True), r"pass_at_k k = True is invalid"),
        ((4, 1, 5), r"1 <= k <= n, got n=4, c=1, k=5"),
    ])
    def test_pass_at_k(self, args, message):
        with pytest.raises(ValueError, match=message):
            pass_at_k(*args)
        assert pass_at_k(np.int64(4), np.int64(1), np.int64(1)) == pytest.approx(0.25)


@pytest.mark.parametrize("fields, message", [
    (dict(task="nope"), r"MatrixConfig.task = 'nope' is invalid"),
    (dict(ks=(1, 64)), r"MatrixConfig.ks\[\] = 64 is invalid: .*pass@k needs k <= samples"),
    (dict(steps=0), r"MatrixConfig \(training hard, seed 0\): RLConfig.steps = 0"),
    (dict(seeds=("a",)), r"RLConfig.seed = 'a'"),
    (dict(problems=True), r"MatrixConfig.problems = True"),
])
def test_matrix_config_refuses_bad_fields(fields, message):
    from softviz.matrix import MatrixConfig

    with pytest.raises(ValueError, match=message):
        MatrixConfig(**fields)


class TestDataFiles:
    @pytest.mark.parametrize("content, message", [
        ('{"question": "q", "ans', r"could not read the 'test' split from files \[.*torn.jsonl'\]"),
        ("", r"could not read the 'test' split from files|has no rows"),
        ('{"q": "x", "a": "#### 1"}\n', r"lacks the columns \['question', 'answer'\] \(it has \['a', 'q'\]\)"),
        ('{"question": "q", "answer": "no hashes"}\n', r"a GSM8K answer ends with '#### <number>'"),
    ])
    def test_gsm8k_files_that_are_not_gsm8k(self, tmp_path, content, message):
        from softviz.tasks import get_task

        path = tmp_path / "torn.jsonl"
        path.write_text(content)
        task = get_task("gsm8k", data_files={"train": str(path), "test": str(path)})
        with pytest.raises(ValueError, match=message):
            task.examples("test", 1)

    @pytest.mark.parametrize("args, message", [
        (("test", True), r"^n = True is invalid"), (("tst", 2), r"split = 'tst' is invalid"),
        (("test", 2.0), r"^n = 2.0 is invalid"),
    ])
    def test_examples_arguments(self, args, message):
        with pytest.raises(ValueError, match=message):
            ArithmeticTask().examples(*args)


def test_figures_and_trace_indexing_name_the_bad_argument(embedded):
    from softviz import viz

    model, tok = embedded
    trace = generate(model, tok, [PROMPT], "soft", n=2, max_cot_tokens=6, trace=True).trace
    for fn in (viz.entropy_heatmap, viz.mixture_topk, viz.noise_shift, viz.soft_text_html,
               viz.trajectory_distance_heatmap):
        with pytest.raises(ValueError, match=r"expected a softviz Trace, got NoneType"):
            fn(None)
    with pytest.raises(ValueError, match=r"rollout 1.5 is out of range: this trace has 2 rollouts \(0..1\)"):
        viz.mixture_topk(trace, 1.5)
    with pytest.raises(ValueError, match=r"step 99 is out of range: this trace has 6 steps \(0..5\)"):
        trace.step(99)
    with pytest.raises(ValueError, match=r"rollout True is out of range"):
        trace.rollout(True)
    assert torch.equal(trace.rollout(-1)["tokens"], trace.rollout(1)["tokens"])  # Python's negative indexing
    assert torch.equal(trace.step(np.int64(2))["entropy"], trace.entropy[:, 2])


def test_wrong_argument_types_and_paths_are_value_errors(embedded, tmp_path):
    from softviz import rl
    from softviz.models import save_model
    from softviz.tasks import extract_boxed

    model, tok = embedded
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    trace = generate(model, tok, [PROMPT], "soft", n=2, max_cot_tokens=3, trace=True).trace
    task = ArithmeticTask()
    cases = [
        (lambda: load_model(3), r"name_or_path = 3 is invalid"),
        (lambda: Mode.preset("soft", bogus=1), r"Mode has no field bogus"),
        (lambda: next(train(model, tok, "soft")), r"cfg = 'soft' is invalid: allowed an RLConfig"),
        (lambda: next(train(model, tok, RLConfig(steps=1), reward_fn=3)), r"reward_fn = 3 is invalid"),
        (lambda: next(train(model, tok, RLConfig(steps=1), output_dir=blocker / "run", progress=False)),
         r"cannot create the folder .*afile/run: .*afile is a file"),
        (lambda: evaluate(model, tok, None, task.examples("test", 1), "hard"), r"task = None is invalid"),
        (lambda: evaluate(model, tok, task, "abc", "hard"), r"examples must be a list of softviz Examples"),
        (lambda: trace.save(blocker / "x.safetensors"), r"cannot create the folder .*afile: .*afile is a file"),
        (lambda: trace.save(tmp_path), r"cannot write the file .*: it is a folder"),
        (lambda: Trace.load(None), r"path = None is invalid"),
        (lambda: save_model(model, tok, blocker), r"cannot save the model to .*afile: it is a file"),
        (lambda: save_model(model, tok, blocker / "m"), r"cannot create the folder .*afile: .*is a file"),
        (lambda: rl.rloo_advantages(torch.ones(5), 2), r"5 rewards do not split into groups of 2"),
        (lambda: extract_boxed(7), r"extract_boxed needs text, got int 7"),
        (lambda: task.prompt(None), r"a prompt needs a question"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert not list(blocker.parent.glob(".*tmp*"))  # no half-written temporary left behind
    assert rl.rloo_advantages([1.0, 3.0], 2).tolist() == [-2.0, 2.0]  # a list of rewards is fine
    assert extract_boxed(None) is None
