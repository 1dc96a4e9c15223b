"""Shared fixtures: the embedded model, and tiny random-init Llama / Qwen2 / GPT-2 models (no downloads)."""

import pytest
import torch

from softviz.models import EMBEDDED_DIR, load_model, prepare_tokenizer


@pytest.fixture(scope="session")
def embedded():
    """(model, tokenizer) of the shipped embedded model, fp32 on CPU."""
    return load_model(device="cpu")


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    return prepare_tokenizer(AutoTokenizer.from_pretrained(EMBEDDED_DIR))


def tiny_model(arch: str, vocab_size: int, pad_id: int, eos_id: int, tied: bool = True, seed: int = 0):
    """A random-init two-layer causal LM of a standard transformers architecture."""
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=None,
                  tie_word_embeddings=tied)
    if arch == "llama":
        cfg = tf.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2, **common)
        model = tf.LlamaForCausalLM(cfg)
    elif arch == "qwen2":
        cfg = tf.Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2, **common)
        model = tf.Qwen2ForCausalLM(cfg)
    elif arch == "gpt2":
        cfg = tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, initializer_range=0.2, **common)
        model = tf.GPT2LMHeadModel(cfg)
    else:
        raise ValueError(arch)
    model.name_or_path = f"tiny-{arch}-{'tied' if tied else 'untied'}"
    return model.eval()


ARCHS = [("llama", True), ("llama", False), ("qwen2", True), ("qwen2", False), ("gpt2", True)]


@pytest.fixture(scope="session", params=ARCHS, ids=[f"{a}-{'tied' if t else 'untied'}" for a, t in ARCHS])
def tiny(request, tokenizer):
    arch, tied = request.param
    return tiny_model(arch, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id, tied=tied), tokenizer
