"""Trace: what a rollout recorded, per rollout and CoT step, as detached CPU tensors; save/load without a model.

Its size grows with steps × k (top-k weights, nearest tokens), never with the vocabulary: token strings
are kept only for the ids that appear in it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TypedDict

import torch
from torch import Tensor

from softviz import checks
from softviz.files import atomic_file

FORMAT_VERSION = 1

# Per-step tensors, all (B, T, ...) with B rollouts and T the longest CoT; positions >= lengths[b] are padding.
STEP_FIELDS = {
    "tokens": "text token per step: sampled (hard) or the argmax 'shadow' token (soft)",
    "topk_ids": "ids of the k largest mixture weights (hard: of the sampling distribution)",
    "topk_weights": "those weights",
    "entropy": "entropy of softmax(logits) at temperature 1, in nats: the model's uncertainty",
    "weight_entropy": "entropy of the weights actually mixed (0 for a hard token), in nats",
    "noise_norm": "‖σε‖ of the noise added to the input (0 without noise)",
    "nearest_ids": "nearest vocabulary tokens of the input actually fed",
    "nearest_scores": "their cosine similarity (or L2 distance)",
}


class TraceMeta(TypedDict, total=False):
    """What a Trace knows besides its tensors: a JSON object saved in the file's header. Lists are per
    rollout (B entries, prompt-major) unless said otherwise. generate() writes the first group; the
    others are added by whoever knows them (the app, train(), a notebook)."""

    mode: dict  # dataclasses.asdict(Mode) of the rollouts
    mode_label: str
    seed: int
    sigma: float  # the noise standard deviation σ actually used (0 without Gaussian noise)
    weights_name: str  # what topk_weights are: "weight" (a mixture fed) or "probability" (one token fed)
    model: str  # the model's name or path
    prompts: list[str]  # one per prompt (not per rollout)
    prompt_index: list[int]
    sample_index: list[int]
    cot_texts: list[str]
    answer_texts: list[str]
    answers: list[str | None]  # the extracted \boxed{} answers
    cot_end: list[str]  # "cue", "max_tokens" or "cold_stop"
    nearest_metric: str  # "cosine" or "l2"
    # added when known
    golds: list[str | None]  # the gold answer of each rollout's problem (the one name for gold answers)
    correct: list[bool | None]  # each rollout's answer checked by the task
    train_step: int  # train(): the step whose rollouts these are
    rewards: list[float]  # train(): each rollout's reward (NaN where the reward function returned None)


@dataclasses.dataclass
class Trace:
    """Recorded CoT steps of B rollouts. Index with `trace["entropy"]` -> (B, T); `trace.step(t)`; `trace.rollout(b)`.

    `inputs` (B, T, d) and `layers` {name: (B, T, d)} exist only when asked for in TraceConfig.
    """

    tokens: Tensor  # (B, T) long
    topk_ids: Tensor  # (B, T, k) long
    topk_weights: Tensor  # (B, T, k) fp32
    entropy: Tensor  # (B, T) fp32
    weight_entropy: Tensor  # (B, T) fp32
    noise_norm: Tensor  # (B, T) fp32
    nearest_ids: Tensor  # (B, T, kn) long
    nearest_scores: Tensor  # (B, T, kn) fp32
    lengths: Tensor  # (B,) long: CoT steps of each rollout
    meta: TraceMeta  # mode, seed, σ, model, prompts, texts, answers, golds, ... (see TraceMeta)
    token_strings: dict[int, str]  # id -> text for every id in this trace
    inputs: Tensor | None = None  # (B, T, d) fp32, the fed inputs (opt-in)
    layers: dict[str, Tensor] = dataclasses.field(default_factory=dict)  # name -> (B, T, d) (opt-in)

    # ---- access ------------------------------------------------------------------------------------
    def __getitem__(self, key: str):
        if key in STEP_FIELDS or key in ("lengths", "inputs"):
            return getattr(self, key)
        if key in self.layers:
            return self.layers[key]
        raise KeyError(f"{key!r}: a Trace has {sorted(STEP_FIELDS)}, 'lengths', 'inputs' and layers {sorted(self.layers)}")

    @property
    def mode(self):
        """The Mode the rollouts were decoded with (rebuilt from meta["mode"]); `.policy` is its method."""
        from softviz.config import Mode

        fields = {f.name for f in dataclasses.fields(Mode)}
        return Mode(**{k: v for k, v in self.meta["mode"].items() if k in fields})

    @property
    def weights_name(self) -> str:
        """"weight" when the steps fed mixtures, "probability" when each fed one sampled token."""
        return self.meta.get("weights_name") or ("probability" if self.meta.get("mode", {}).get("kind") == "hard"
                                                 else "weight")  # traces saved before weights_name was recorded

    @property
    def num_rollouts(self) -> int:
        return self.tokens.shape[0]

    @property
    def num_steps(self) -> int:
        return self.tokens.shape[1]

    @property
    def mask(self) -> Tensor:
        """(B, T) bool: True where the step exists."""
        return torch.arange(self.num_steps)[None, :] < self.lengths[:, None]

    def decode(self, ids) -> list[str]:
        return [self.token_strings.get(int(i), f"<{int(i)}>") for i in torch.as_tensor(ids).flatten()]

    def step(self, t: int) -> dict:
        """All per-step fields at step t, for every rollout."""
        t = _index("step", t, self.num_steps)
        return {k: getattr(self, k)[:, t] for k in STEP_FIELDS}

    def rollout(self, b: int) -> dict:
        """All per-step fields of rollout b, cut to its length, plus its texts."""
        b = _index("rollout", b, self.num_rollouts)
        n = int(self.lengths[b])
        out = {k: getattr(self, k)[b, :n] for k in STEP_FIELDS}
        for name, key in (("cot_text", "cot_texts"), ("answer_text", "answer_texts"), ("answer", "answers"),
                          ("correct", "correct")):
            if key in self.meta:
                out[name] = self.meta[key][b]
        return out

    def nbytes(self) -> int:
        tensors = [getattr(self, k) for k in STEP_FIELDS] + [self.lengths]
        tensors += ([self.inputs] if self.inputs is not None else []) + list(self.layers.values())
        return sum(t.numel() * t.element_size() for t in tensors)

    # ---- save / load ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write one .safetensors file (tensors + JSON metadata), whole or not at all (temp file + rename)."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {k: getattr(self, k).contiguous() for k in STEP_FIELDS}
        tensors["lengths"] = self.lengths.contiguous()
        if self.inputs is not None:
            tensors["inputs"] = self.inputs.contiguous()
        for name, t in self.layers.items():
            tensors[f"layer::{name}"] = t.contiguous()
        header = {"format": "softviz-trace", "version": str(FORMAT_VERSION),
                  "meta": json.dumps(self.meta), "token_strings": json.dumps(self.token_strings)}
        with atomic_file(path) as tmp:
            save_file(tensors, tmp, metadata=header)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Trace":
        """Read a file written by `save`. A file that is not a softviz trace raises ValueError saying so."""
        from safetensors import safe_open

        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"path = {path!r} is invalid: allowed the path of a .safetensors trace file")
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no trace file at {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # safetensors raises several types for damaged files
            raise ValueError(f"{path} is not a readable softviz trace ({err.__class__.__name__}: {err}); "
                             "it may be truncated or another kind of file. Re-create it with Trace.save().") from None
        if header.get("format") != "softviz-trace":
            raise ValueError(f"{path} is a safetensors file but not a softviz trace (no 'softviz-trace' header)")
        version = header.get("version", "0")
        if not version.isdigit():
            raise ValueError(f"{path} has a damaged trace header (version {version!r}); re-create it with Trace.save()")
        if int(version) > FORMAT_VERSION:
            raise ValueError(f"{path} was written by a newer softviz (trace format {version}); upgrade softviz")
        missing = [k for k in list(STEP_FIELDS) + ["lengths"] if k not in tensors]
        if missing:
            raise ValueError(f"{path} lacks trace fields {missing}; the file is damaged")
        meta, token_strings = _header_json(path, header, "meta"), _header_json(path, header, "token_strings")
        if "gold" in meta and "golds" not in meta:  # traces saved before "golds" was the one name
            gold = meta.pop("gold")
            meta["golds"] = None if not gold else [gold] * len(tensors["lengths"])
        try:
            token_strings = {int(k): v for k, v in token_strings.items()}
        except ValueError:
            raise ValueError(f"{path} has damaged token strings in its header; re-create it with Trace.save()") from None
        layers = {k.split("::", 1)[1]: v for k, v in tensors.items() if k.startswith("layer::")}
        B, T = tensors["tokens"].shape if tensors["tokens"].dim() == 2 else (None, None)
        bad = [k for k in STEP_FIELDS if tuple(tensors[k].shape[:2]) != (B, T)]
        if B is None or bad or tuple(tensors["lengths"].shape) != (B,):
            raise ValueError(f"{path} holds fields of inconsistent shapes ({bad or ['tokens', 'lengths']}); "
                             "the file is damaged")
        return cls(**{k: tensors[k] for k in STEP_FIELDS}, lengths=tensors["lengths"], meta=meta,
                   token_strings=token_strings, inputs=tensors.get("inputs"), layers=layers)


def _index(name: str, value, size: int) -> int:
    """An index into `size` entries (negative counts from the end, as in Python), or ValueError naming it."""
    if not checks.is_int(value) or not -size <= value < size:
        raise ValueError(f"{name} {value!r} is out of range: this trace has {size} {name}s (0..{size - 1})")
    return int(value) % size


def _header_json(path: Path, header: dict, key: str) -> dict:
    """A JSON object stored in the trace header under `key`, or ValueError naming the file and the key."""
    if key not in header:
        raise ValueError(f"{path} has no {key!r} in its trace header (written without metadata, or damaged); "
                         "re-create it with Trace.save()")
    try:
        value = json.loads(header[key])
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ValueError(f"{path} has a damaged {key!r} entry in its trace header; re-create it with Trace.save()")
    return value
