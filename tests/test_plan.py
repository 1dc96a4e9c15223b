"""The memory plan (softviz.plan): parameter counts, the KV cache, how DDP and FSDP divide the state, the CLI."""

import pytest
import torch

from conftest import tiny_model
from softviz.cli import main
from softviz.plan import Architecture, format_plan, load_architecture, memory_plan

# published parameter counts of the paper's models (their model cards / safetensors index)
PUBLISHED = {"llama-3.2-1b-instruct": 1_235_814_400, "llama-3.2-3b-instruct": 3_212_749_824,
             "llama-3.1-8b-instruct": 8_030_261_248, "qwen2.5-0.5b-instruct": 494_032_768,
             "qwen2.5-1.5b-instruct": 1_543_714_304, "qwen2.5-3b-instruct": 3_085_938_688}
BATCH = dict(prompts_per_step=2, group_size=32, max_cot_tokens=128, max_answer_tokens=32, prompt_tokens=256)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_shipped_architectures_count_the_published_parameters(name):
    assert load_architecture(name).parameters == PUBLISHED[name]


@pytest.mark.parametrize("arch, tied", [("llama", True), ("llama", False), ("qwen2", True), ("qwen2", False)])
def test_parameter_count_equals_the_models(arch, tied, tokenizer):
    model = tiny_model(arch, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id, tied=tied)
    assert Architecture.from_config(model.config).parameters == sum(p.numel() for p in model.parameters())


def test_embedded_model_parameters_and_kv_cache_as_planned(embedded):
    from transformers import DynamicCache

    model, tok = embedded
    arch = Architecture.from_config(model.config)
    assert arch.parameters == sum(p.numel() for p in model.parameters())
    rows, tokens = 3, 20
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=torch.ones((rows, tokens), dtype=torch.long), use_cache=True, cache=cache)
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    plan = memory_plan(arch, prompts_per_step=1, group_size=rows, max_cot_tokens=tokens - 2, max_answer_tokens=1,
                       prompt_tokens=1, prefill_tokens=0, dtype="float32")
    assert plan["gb"]["rollout_kv_cache"] == pytest.approx(held / 1e9, abs=1e-3)


def test_fsdp_shards_the_state_and_ddp_copies_it():
    arch = load_architecture("llama-3.1-8b-instruct")
    one = memory_plan(arch, **BATCH, processes=1)
    ddp = memory_plan(arch, **BATCH, processes=8, strategy="ddp")
    fsdp = memory_plan(arch, **BATCH, processes=8, strategy="fsdp")
    N = arch.parameters
    assert ddp["gb"]["parameters"] == one["gb"]["parameters"] == pytest.approx(2 * N / 1e9, abs=1e-3)  # bf16
    assert ddp["gb"]["optimizer"] == pytest.approx(4 * N / 1e9, abs=1e-3)  # AdamW's two moments
    # the blocks' share divided by 8; the embedding, LM head and final norm (1.05 B) held whole by every process
    R = arch.replicated_parameters
    assert R == 2 * 128_256 * 4096 + 4096
    for part in ("parameters", "gradients", "optimizer"):
        assert fsdp["gb"][part] == pytest.approx(ddp["gb"][part] * ((N - R) / 8 + R) / N, abs=1e-3)
    assert fsdp["gb"]["gathered"] == pytest.approx(2 * 2 * arch.block_parameters / 1e9, abs=1e-3)
    assert ddp["gb"]["gathered"] == 0
    assert ddp["rows_per_process"] == fsdp["rows_per_process"] == 8  # 64 rollouts split by samples
    assert one["rows_per_process"] == 64 and one["gb"]["rollout_kv_cache"] == pytest.approx(
        8 * ddp["gb"]["rollout_kv_cache"], rel=1e-3)
    # the paper's 8B recipe: a full replica does not fit an 80 GB GPU, FSDP over 8 does
    assert ddp["peak_gb"] > 80 * 0.9 > fsdp["peak_gb"]
    assert memory_plan(arch, **BATCH, beta=0.1)["gb"]["reference"] == pytest.approx(2 * N / 1e9, abs=1e-3)
    # mixed precision: fp32 moments and master weights beside bf16 ones, 16 bytes a parameter in all
    mixed = memory_plan(arch, **BATCH, optimizer_dtype="float32")["gb"]
    assert mixed["parameters"] + mixed["gradients"] + mixed["optimizer"] == pytest.approx(16 * N / 1e9, abs=1e-2)
    fp32 = memory_plan(arch, **BATCH, dtype="float32")["gb"]
    assert fp32["optimizer"] == pytest.approx(8 * N / 1e9, abs=1e-3)  # no master copy when the weights are fp32


@pytest.mark.parametrize("kwargs, message", [
    (dict(processes=3), "3 processes must divide the step's 2 x 32 = 64 rollouts"),
    (dict(strategy="zero3"), "choose one of ddp, fsdp"),
    (dict(dtype="int4"), "choose one of"),
])
def test_bad_plans_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        memory_plan(load_architecture("qwen2.5-3b-instruct"), **BATCH, **kwargs)


def test_an_unknown_model_is_named_with_the_choices():
    with pytest.raises(ValueError, match="no config for 'no/such/model': give a config.json"):
        load_architecture("no/such/model")  # not a Hub id either: refused without a network call


def test_cli_plan_prints_both_strategies_and_whether_they_fit(capsys):
    assert main(["plan", "--model", "llama-3.1-8b-instruct", "--config", "configs/llama-3.1-8b-instruct_gsm8k.json",
                 "--processes", "8", "--micro-batch", "8", "--device-gb", "80"]) == 0
    out = capsys.readouterr().out
    assert "8.03B parameters, DDP on 8 processes" in out and "FSDP on 8 processes" in out
    assert out.count("does not fit in 80 GB") == 1 and out.count("  fits in 80 GB") == 1  # DDP no, FSDP yes
    plan = memory_plan(load_architecture("llama-3.1-8b-instruct"), **{**BATCH, "max_answer_tokens": 32},
                       micro_batch=8, processes=8, strategy="fsdp")
    assert format_plan(plan).splitlines()[-1] in out


def test_cli_plan_reads_its_config_as_train_does(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": "x", "groupsize": 8}')
    assert main(["plan", "--model", "qwen2.5-3b-instruct", "--config", str(bad)]) == 2
    assert "unknown key 'groupsize'; allowed keys: model," in capsys.readouterr().err
