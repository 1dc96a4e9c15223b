"""load_model(): the embedded model by default, a local folder, or a Hugging Face Hub id."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

EMBEDDED_DIR = Path(__file__).parent / "assets" / "embedded"
EMBEDDED_NAME = "embedded"


def _resolve_dtype(dtype, device: str) -> torch.dtype:
    if dtype is None:
        # bf16 on GPU as the paper's models are trained; fp32 on CPU where bf16 matmuls are slow.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        if not hasattr(torch, dtype) or not isinstance(getattr(torch, dtype), torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
        return getattr(torch, dtype)
    return dtype


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(name_or_path: str | os.PathLike | None = None, *, device: str | None = None,
               dtype: torch.dtype | str | None = None):
    """Load a causal LM and its tokenizer, ready for softviz (eval mode, left padding, a pad token).

    Args:
        name_or_path: None or "embedded" for the model shipped in softviz/assets (offline), a local folder
            saved with `save_pretrained`, or a Hub id such as "Qwen/Qwen2.5-0.5B-Instruct".
        device: "cpu", "cuda", "cuda:1", ...; default: CUDA when available.
        dtype: torch dtype or its name; default bf16 on GPU, fp32 on CPU.

    Returns:
        (model, tokenizer)

    Example:
        >>> model, tok = load_model()            # the embedded model, offline
        >>> model.config.model_type
        'llama'
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or default_device()
    dtype = _resolve_dtype(dtype, device)
    source = EMBEDDED_DIR if name_or_path in (None, EMBEDDED_NAME) else name_or_path
    local = Path(source).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ValueError(f"{local} is not a model folder: it has no config.json. Pass a folder written by "
                             "`model.save_pretrained(...)` and `tokenizer.save_pretrained(...)`, or a Hub id.")
        source = str(local)
    elif str(source).startswith((".", "/", "~")) or str(source).count("/") > 1:
        raise ValueError(f"model path {source!r} does not exist. Pass an existing folder, a Hub id such as "
                         "'Qwen/Qwen2.5-0.5B-Instruct', or None for the embedded model.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except OSError as err:  # no network, unknown repo or a gated model
        raise ValueError(
            f"could not load model {source!r}: {err.__class__.__name__}: {str(err).splitlines()[0]}\n"
            "softviz loads Hub models through transformers. Without network access, download the model "
            f"once where there is network (`huggingface-cli download {source} --local-dir ./models/NAME`), "
            "copy the folder here and pass its path; or set HF_HUB_OFFLINE=1 when it is already in the "
            "Hugging Face cache. Gated models (Llama) also need `huggingface-cli login`."
        ) from None
    if model.get_input_embeddings() is None:
        raise ValueError(f"{source!r} has no input-embedding matrix; softviz needs one to mix token embeddings")
    prepare_tokenizer(tokenizer)
    model.to(device).eval()
    model.name_or_path = EMBEDDED_NAME if source == str(EMBEDDED_DIR) else str(name_or_path)
    return model, tokenizer


def prepare_tokenizer(tokenizer):
    """Left padding for batched decoding, and a pad token (the EOS token when the model has none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token first")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def save_model(model, tokenizer, folder: str | os.PathLike, meta: dict | None = None,
               meta_file: str = "softviz.json") -> Path:
    """save_pretrained the model and tokenizer (plus optional JSON metadata) into a temporary sibling, then
    rename it into place: the folder is whole or absent, never half written."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; model folders are meant to be shared
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if meta is not None:
            (tmp / meta_file).write_text(json.dumps(meta, indent=2) + "\n")
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
