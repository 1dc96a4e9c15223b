"""The engine's contracts (what must hold for every mode and model) on the embedded model and tiny random models."""

import copy

import pytest
import torch

from softviz import Mode, generate, mixing
from softviz.config import PRESETS
from softviz.generate import embedding_matrix, rollout_seed
from softviz.tasks import ArithmeticTask

TASK = ArithmeticTask()


def prompts(k=3, start=0):
    return [TASK.prompt(e) for e in TASK.examples("test", k, start=start)]


def hf_greedy(model, tok, ps, max_new_tokens):
    enc = tok(ps, return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id)
    return out[:, enc.input_ids.shape[1]:]


def test_hard_greedy_equals_transformers_generate_on_embedded(embedded):
    model, tok = embedded
    ps = prompts(4)
    r = generate(model, tok, ps, "hard-greedy", max_cot_tokens=80, max_answer_tokens=8)
    ref = hf_greedy(model, tok, ps, 100)
    for b in range(len(ps)):
        assert r.cot_end[b] == "cue"  # the trained model writes the cue itself
        # CoT + prefill (" \boxed{") + answer tokens are exactly what greedy generate produced
        ours = r.cot_tokens[b, : r.cot_lengths[b]].tolist() + r.prefill_ids[b] + r.answer_ids[b, : r.answer_lengths[b]].tolist()
        assert ours == ref[b, : len(ours)].tolist()


def test_hard_greedy_equals_transformers_generate_on_tiny_architectures(tiny):
    model, tok = tiny
    ps = prompts(3)
    r = generate(model, tok, ps, "hard-greedy", max_cot_tokens=20, max_answer_tokens=2)
    ref = hf_greedy(model, tok, ps, 20)
    assert torch.equal(r.cot_tokens[:, :20], ref)
    assert r.cot_end == ["max_tokens"] * 3  # a random model never writes the cue
    # the trace's top-1 is the argmax of the model's logits: the greedy token
    r = generate(model, tok, ps, "hard-greedy", max_cot_tokens=5, max_answer_tokens=1, trace=True)
    assert torch.equal(r.trace.topk_ids[:, :, 0], r.cot_tokens)


def test_prompt_prefilled_once_for_its_samples_equals_one_prefill_per_row(tiny):
    # generate prefills each distinct prompt once and copies its KV cache to its n rows: the rows must decode
    # exactly as transformers' generate does with every row's prompt prefilled on its own
    model, tok = tiny
    ps = prompts(3)
    r = generate(model, tok, ps, "hard-greedy", n=2, max_cot_tokens=12, max_answer_tokens=1)
    ref = hf_greedy(model, tok, [p for p in ps for _ in range(2)], 12)
    assert torch.equal(r.cot_tokens[:, :12], ref)


def test_fuzzy_greedy_shadow_equals_hard_greedy(embedded):
    model, tok = embedded
    ps = prompts(4)
    hard = generate(model, tok, ps, "hard-greedy", max_cot_tokens=60)
    fuzzy = generate(model, tok, ps, "fuzzy-greedy", max_cot_tokens=60)
    assert torch.equal(hard.cot_tokens, fuzzy.cot_tokens) and hard.answers == fuzzy.answers
    assert fuzzy.sigma == 0.0


def test_fuzzy_greedy_equals_hard_greedy_on_tiny(tiny):
    model, tok = tiny
    hard = generate(model, tok, prompts(2), "hard-greedy", max_cot_tokens=12, max_answer_tokens=3)
    fuzzy = generate(model, tok, prompts(2), "fuzzy-greedy", max_cot_tokens=12, max_answer_tokens=3)
    assert torch.equal(hard.cot_tokens, fuzzy.cot_tokens) and torch.equal(hard.answer_ids, fuzzy.answer_ids)


def _teacher_forced_logits(model, r, b):
    """Logits of one rollout's prompt + fed CoT inputs, in one pass without a KV cache."""
    E = embedding_matrix(model)
    p_ids = torch.tensor(r.prompt_ids[b])
    L = int(r.cot_lengths[b])
    x = torch.cat([E[p_ids], r.cot_inputs[b, :L].to(E.dtype)])[None]
    logits = model(inputs_embeds=x).logits[0].float()
    return logits[len(p_ids) - 1 : len(p_ids) - 1 + L]  # position predicting each CoT input


@pytest.mark.parametrize("preset", ["soft", "fuzzy", "soft-greedy"])
def test_soft_with_cache_equals_no_cache(embedded, preset):
    model, tok = embedded
    mode = Mode.preset(preset)
    r = generate(model, tok, prompts(3), mode, n=2, max_cot_tokens=40, seed=3)
    E = embedding_matrix(model)
    for b in range(len(r)):
        L = int(r.cot_lengths[b])
        with torch.no_grad():
            logits = _teacher_forced_logits(model, r, b)
        assert torch.equal(logits.argmax(-1), r.cot_tokens[b, :L])  # same shadow tokens
        h = mixing.mixture_embedding(mixing.cot_probs(logits, mode.cot_temperature), E)
        if r.sigma > 0:  # the Gaussian log-prob of each fed input, recomputed without cache
            lp = mixing.gaussian_log_prob(r.cot_inputs[b, :L], h, r.sigma)
            assert torch.allclose(lp, r.cot_logprobs[b, :L], rtol=1e-3, atol=1e-2)
        else:
            assert torch.allclose(h, r.cot_inputs[b, :L], atol=1e-4)


def test_noisy_input_is_mixture_plus_sigma_noise(embedded):
    model, tok = embedded
    r = generate(model, tok, prompts(1), "soft", n=4, max_cot_tokens=30, seed=0, trace=True)
    E = embedding_matrix(model)
    assert r.sigma == pytest.approx(0.33 * E.float().pow(2).mean().sqrt().item())
    d = E.shape[1]
    norms = r.trace.noise_norm[r.trace.mask]
    # ||σε|| concentrates at σ·√d
    assert norms.mean().item() == pytest.approx(r.sigma * d**0.5, rel=0.05)
    # rollout-time log-prob is -||σε||²/(2σ²)
    assert torch.allclose(r.cot_logprobs[r.trace.mask], -norms**2 / (2 * r.sigma**2), rtol=1e-4)


def test_seeds_reproduce_and_sampled_rollouts_differ(embedded):
    # What the engine promises (README, "Reproducibility"): the same call gives the same tokens and answers;
    # the float inputs agree to rounding, since batched matmuls may pick other kernels per row or thread
    # count (on AVX-512 machines rows of one batch differ by ~1e-7), so floats are compared with a tolerance.
    model, tok = embedded
    ps = prompts(2)
    a = generate(model, tok, ps, "soft", n=4, max_cot_tokens=40, seed=7)
    b = generate(model, tok, ps, "soft", n=4, max_cot_tokens=40, seed=7)
    c = generate(model, tok, ps, "soft", n=4, max_cot_tokens=40, seed=8)
    assert torch.equal(a.cot_tokens, b.cot_tokens) and a.answer_texts == b.answer_texts and a.answers == b.answers
    torch.testing.assert_close(a.cot_inputs, b.cot_inputs, rtol=1e-5, atol=1e-6)
    # another seed: other noise (σ·ε ≈ 0.04 per coordinate, far above rounding)
    assert (a.cot_inputs[:, :5] - c.cot_inputs[:, :5]).abs().max() > 1e-2
    # sampled soft rollouts of the same prompt differ from each other
    assert (a.cot_inputs[0, :5] - a.cot_inputs[1, :5]).abs().max() > 1e-2
    # greedy soft rollouts (σ = 0) are the same rollout three times: same tokens, inputs equal to rounding
    g = generate(model, tok, ps[:1], "soft-greedy", n=3, max_cot_tokens=40)
    assert torch.equal(g.cot_tokens[0], g.cot_tokens[1]) and torch.equal(g.cot_tokens[0], g.cot_tokens[2])
    assert g.answers[0] == g.answers[1] == g.answers[2]
    torch.testing.assert_close(g.cot_inputs[1:], g.cot_inputs[:1].expand(2, -1, -1), rtol=1e-5, atol=1e-6)


def test_a_rollout_replays_alone(embedded):
    model, tok = embedded
    ps = prompts(3)
    batch = generate(model, tok, ps, "hard", n=2, max_cot_tokens=40, seed=5)
    # row (prompt 0, sample 1) alone, with the same seed: same tokens
    alone = generate(model, tok, ps[:1], "hard", n=2, max_cot_tokens=40, seed=5)
    assert alone.cot_texts[1] == batch.cot_texts[1] and alone.answers[1] == batch.answers[1]
    assert rollout_seed(5, 0, 1) != rollout_seed(5, 1, 0)


def test_soft_thinking_top1_equals_hard_greedy(embedded):
    model, tok = embedded
    ps = prompts(3)
    hard = generate(model, tok, ps, "hard-greedy", max_cot_tokens=60)
    st = generate(model, tok, ps, Mode.preset("soft-thinking", top_k=1), max_cot_tokens=60)
    assert torch.equal(hard.cot_tokens, st.cot_tokens) and hard.answers == st.answers


@pytest.mark.parametrize("preset", ["hard-greedy", "soft-greedy", "fuzzy-greedy"])
def test_mixed_prompt_lengths_batch_equals_one_at_a_time(embedded, preset):
    model, tok = embedded
    ps = [TASK.prompt(e) for e in TASK.examples("test", 12)]
    ps = sorted(ps, key=len)[:2] + sorted(ps, key=len)[-2:]  # very different lengths
    assert len({len(tok.encode(p)) for p in ps}) > 2
    batch = generate(model, tok, ps, preset, max_cot_tokens=60)
    for i, p in enumerate(ps):
        one = generate(model, tok, [p], preset, max_cot_tokens=60)
        assert one.cot_texts[0] == batch.cot_texts[i] and one.answer_texts[0] == batch.answer_texts[i]


def test_all_modes_run_on_tiny(tiny):
    model, tok = tiny
    for preset in PRESETS:  # every preset, through generate and the Trace
        r = generate(model, tok, prompts(2), preset, n=2, max_cot_tokens=6, max_answer_tokens=3, seed=1, trace=True)
        assert r.cot_lengths.tolist() == [6] * 4 and r.cot_end == ["max_tokens"] * 4
        assert (r.answer_lengths >= 1).all() and len(r.answer_texts) == 4
        assert torch.isfinite(r.trace.entropy).all()


def test_cold_stop_ends_the_cot(embedded):
    model, tok = embedded
    mode = Mode.preset("soft-thinking-cold-stop", cold_stop_entropy=10.0, cold_stop_steps=3)  # always "cold"
    r = generate(model, tok, prompts(2), mode, max_cot_tokens=40)
    assert r.cot_end == ["cold_stop", "cold_stop"] and r.cot_lengths.tolist() == [3, 3]
    assert tok.decode(r.prefill_ids[0]).strip() == "The final answer is: \\boxed{"


def test_max_tokens_prefills_the_cue(embedded):
    model, tok = embedded
    r = generate(model, tok, prompts(1), "hard-greedy", max_cot_tokens=4, max_answer_tokens=6)
    assert r.cot_end == ["max_tokens"] and r.cot_lengths.tolist() == [4]
    assert r.answer_texts[0].startswith(" The final answer is: \\boxed{")


def test_eos_stops_rows_independently(embedded):
    model, tok = embedded
    r = generate(model, tok, prompts(4), "hard-greedy", max_cot_tokens=80, max_answer_tokens=20)
    for b in range(4):
        n = int(r.answer_lengths[b])
        assert r.answer_ids[b, n - 1].item() == tok.eos_token_id  # each answer ends at its own EOS
        assert (r.answer_ids[b, n:] == tok.pad_token_id).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompts=[]), "non-empty list"),
    (dict(prompts=[""]), "prompt 0 is empty"),
    (dict(prompts=["User: x Assistant:"], max_cot_tokens=0), r"max_cot_tokens = 0 is invalid: allowed an integer with 1 <= x"),
    (dict(prompts=["User: x Assistant:"], max_answer_tokens=-1), r"max_answer_tokens = -1 is invalid: allowed an integer with 1 <= x"),
    (dict(prompts=["User: x Assistant:"], n=0), r"^n = 0 is invalid: allowed an integer with 1 <= x"),
    (dict(prompts=["word " * 600]), "context is 512 tokens"),
    (dict(prompts=["User: x Assistant:"], max_cot_tokens=500), "leave room for 0"),
    (dict(prompts=["User: x Assistant:"], max_cot_tokens=10**9), r"max_cot_tokens = 1000000000 is invalid: allowed an integer with 1 <= x <= 131072"),
    (dict(prompts=["User: x Assistant:"], n=2.5), r"^n = 2.5 is invalid: allowed an integer"),
    (dict(prompts=["User: x Assistant:"], seed=float("nan")), r"^seed = nan is invalid: allowed an integer"),
    (dict(prompts=[None]), "prompt 0 is empty or not a string"),
    (dict(prompts=["User: x Assistant:"], mode="warm"), "unknown mode 'warm'"),
])
def test_bad_input_gives_clear_errors(embedded, kwargs, message):
    model, tok = embedded
    with pytest.raises(ValueError, match=message):
        generate(model, tok, **{"mode": "soft", **kwargs})


def test_non_ascii_prompts_roll_out(embedded):
    model, tok = embedded
    r = generate(model, tok, ["User: Combien font 3 + 4 ? 数字 🙂 Assistant:"], "soft", n=2, max_cot_tokens=12, seed=0)
    assert len(r.answers) == 2 and r.cot_lengths.min() >= 1
    assert tok.decode(r.prompt_ids[0]).startswith("User: Combien font 3 + 4 ? 数字 🙂")  # byte fallback, lossless


def test_a_cue_the_tokenizer_cannot_spell_is_refused(embedded):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    model, _ = embedded
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, "User:": 3, "x": 4, "Assistant:": 5}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    words = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    with pytest.raises(ValueError, match="cannot express the answer cue 'The final answer is:'"):
        generate(model, words, ["User: x Assistant:"], "soft", max_cot_tokens=4)


def test_non_finite_half_precision_logits_are_reported(embedded):
    model, tok = embedded
    half = copy.deepcopy(model).half()
    with torch.no_grad():
        half.model.norm.weight.mul_(1e6)  # hidden states ~1e6: fp16 logits overflow to inf
    for mode in ("soft", "hard"):
        with pytest.raises(ValueError, match="non-finite logits.*float16.*bfloat16"):
            generate(half, tok, ["User: x Assistant:"], mode, max_cot_tokens=4)


def test_a_slice_of_rows_rolls_out_as_in_the_whole_batch(embedded):
    # one process's share when samples are split: rows 3..8 of 3 prompts x 4 (the tail of prompt 0, prompt 1 whole,
    # the head of prompt 2) are the same rollouts as those rows of the whole batch
    model, tok = embedded
    ps = prompts(3)
    whole = generate(model, tok, ps, "soft", n=4, max_cot_tokens=30, seed=9)
    part = generate(model, tok, ps, "soft", n=4, max_cot_tokens=30, seed=9, rows=slice(3, 9))
    assert part.prompt_index.tolist() == [0, 1, 1, 1, 1, 2] and part.sample_index.tolist() == [3, 0, 1, 2, 3, 0]
    assert part.cot_texts == whole.cot_texts[3:9] and part.answers == whole.answers[3:9]
    torch.testing.assert_close(part.cot_inputs[:, :5], whole.cot_inputs[3:9, :5], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="selects none of the 3 x 4 rows"):
        generate(model, tok, ps, "soft", n=4, rows=slice(12, 20))
    with pytest.raises(ValueError, match="give a slice of the 12 rows"):
        generate(model, tok, ps, "soft", n=4, rows=[0, 1])
