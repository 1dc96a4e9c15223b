"""How much memory RL training needs per process, computed from a model's config (no weights are loaded).

    softviz plan --model configs/architectures/llama-3.1-8b-instruct.json --processes 8 --strategy fsdp
    memory_plan(Architecture.from_config(model.config), RLConfig(...), processes=8, strategy="fsdp")

Per process, in bytes of the training dtype `b` (AdamW keeps its two moments in the parameters' dtype, as
torch.optim.AdamW does):
  parameters N·b, gradients N·b, optimizer 2·N·b (or, with fp32 moments beside bf16 weights, 12·N: the moments
  and an fp32 master copy), a frozen reference N·b when the KL weight β > 0;
  under FSDP the transformer blocks' share of each divided by the process count (softviz keeps the embedding, LM
  head and final norm whole on every process: they are read outside the forward, for p·E), plus one block
  gathered whole (its parameters and gradients);
  the rollout KV cache: rows × (prompt + CoT + prefill + answer) × layers × 2 × kv_heads·head_dim × b;
  the activations of one micro-batch's forward-backward: tokens × layers × (7·d + 2·kv·head_dim + 4·I) × b, where
  the tokens count each distinct prompt once (a group's rollouts share it) and every row's CoT and answer
  (what a Llama-style block keeps for backward with fused attention: the norms' outputs, q/k/v, the attention
  output, the MLP's gate, up, activation and product), plus the LM head's fp32 logits, softmax and log-softmax at
  the CoT and answer positions (3 × positions × V × 4);
  and a fixed runtime (the framework itself: `runtime_gb`).
Rollouts and the loss do not run at once, so the peak is the persistent state plus the larger of the two.
The estimates are checked against measured peaks by benchmarks/memory_check.py (docs/scaling.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}
STRATEGIES = ("ddp", "fsdp")
GB = 1e9


@dataclasses.dataclass(frozen=True)
class Architecture:
    """The fields of a decoder-only transformer's config that set its memory (Llama, Qwen2, Mistral shapes)."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool
    qkv_bias: bool = False
    name: str = ""

    @classmethod
    def from_config(cls, config: Any) -> "Architecture":
        """From a transformers config object or its dict (config.json)."""
        c = config if isinstance(config, dict) else config.to_dict()
        missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                               "intermediate_size") if k not in c]
        if missing:
            raise ValueError(f"the config lacks {', '.join(missing)}: a memory plan needs a decoder-only "
                             "transformer's config.json (Llama, Qwen2, Mistral)")
        heads = int(c["num_attention_heads"])
        return cls(vocab=int(c["vocab_size"]), hidden=int(c["hidden_size"]), layers=int(c["num_hidden_layers"]),
                   heads=heads, kv_heads=int(c.get("num_key_value_heads") or heads),
                   head_dim=int(c.get("head_dim") or c["hidden_size"] // heads),
                   intermediate=int(c["intermediate_size"]), tied=bool(c.get("tie_word_embeddings", False)),
                   qkv_bias=c.get("model_type") == "qwen2" or bool(c.get("attention_bias", False)),
                   name=str(c.get("_name_or_path") or c.get("name") or c.get("model_type") or ""))

    @property
    def block_parameters(self) -> int:
        d, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        attention = d * q + 2 * d * kv + q * d + ((q + 2 * kv) if self.qkv_bias else 0)
        return attention + 3 * d * self.intermediate + 2 * d  # gated MLP; two RMSNorms

    @property
    def parameters(self) -> int:
        return self.replicated_parameters + self.layers * self.block_parameters

    @property
    def replicated_parameters(self) -> int:
        """The parameters outside the transformer blocks: embedding, LM head (unless tied), final norm."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden


def load_architecture(model: str) -> Architecture:
    """A model's Architecture from, in order: a config.json file or a folder holding one, a file shipped in
    configs/architectures (by name, e.g. "llama-3.1-8b-instruct", or by Hub id), "embedded" or "smollm2", or the
    Hub's config.json (online only)."""
    shipped = Path(__file__).resolve().parents[1] / "configs" / "architectures"
    p = Path(model).expanduser()
    if p.is_dir():
        p = p / "config.json"
    if p.is_file():
        return Architecture.from_config(json.loads(p.read_text()))
    for f in sorted(shipped.glob("*.json")) if shipped.is_dir() else []:
        c = json.loads(f.read_text())
        if model in (f.stem, c.get("_name_or_path")):
            return Architecture.from_config(c)
    if model in ("embedded", "smollm2"):
        from softviz.models import load_model

        m, _ = load_model(None if model == "embedded" else model, device="cpu")
        return dataclasses.replace(Architecture.from_config(m.config), name=model)
    from transformers import AutoConfig

    try:
        return Architecture.from_config(AutoConfig.from_pretrained(model))
    except Exception as err:  # offline, or not a model id
        names = ", ".join(f.stem for f in sorted(shipped.glob("*.json"))) if shipped.is_dir() else ""
        raise ValueError(f"no config for {model!r}: give a config.json, a model folder, one of the shipped "
                         f"architectures ({names}), 'embedded', 'smollm2' or a Hub id when online "
                         f"({type(err).__name__})") from None


def memory_plan(arch: Architecture, *, prompts_per_step: int, group_size: int, max_cot_tokens: int,
                max_answer_tokens: int = 32, prompt_tokens: int = 256, micro_batch: int | None = None,
                processes: int = 1, strategy: str = "ddp", dtype: str = "bfloat16", beta: float = 0.0,
                runtime_gb: float = 0.6, prefill_tokens: int = 8, optimizer_dtype: str | None = None) -> dict:
    """Bytes per process of RL training (see the module's docstring), as GB by part, with the peak.

    optimizer_dtype: None keeps AdamW's moments in the parameters' dtype (what softviz does: torch's AdamW on the
    model as loaded); "float32" is the usual mixed-precision recipe: fp32 moments and an fp32 master copy of the
    weights beside the bf16 ones (16 bytes per parameter with bf16 weights and gradients).

    Rows are split across the processes (prompts × group / processes each: samples split, so any count that
    divides the step's rollouts works); micro_batch: rows per forward-backward pass (None: all of them)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    for name, value in (("dtype", dtype), ("optimizer_dtype", optimizer_dtype or dtype)):
        if value not in BYTES:
            raise ValueError(f"{name} {value!r}: choose one of {', '.join(BYTES)}")
    ob = BYTES[optimizer_dtype or dtype]
    master = ob if ob != BYTES[dtype] else 0  # a copy of the weights in the optimizer's precision
    total_rows = prompts_per_step * group_size
    if processes < 1 or total_rows % processes:
        raise ValueError(f"{processes} processes must divide the step's {prompts_per_step} x {group_size} = "
                         f"{total_rows} rollouts")
    b, N = BYTES[dtype], arch.parameters
    rows = total_rows // processes
    m = min(micro_batch or rows, rows)
    tokens = prompt_tokens + max_cot_tokens + prefill_tokens + max_answer_tokens
    # a group's rows share their prompt, which the loss runs once (softviz.rl.sequence_logprobs): a micro-batch
    # of m rows holds ceil(m / group) prompts and m continuations
    act_tokens = math.ceil(m / group_size) * prompt_tokens + m * (tokens - prompt_tokens)
    shard = processes if strategy == "fsdp" else 1
    kv = arch.kv_heads * arch.head_dim
    whole = arch.replicated_parameters if shard > 1 else N  # what each process holds whole (softviz.sharding)
    held = (N - whole) / shard + whole  # parameters held per process
    parts = {
        "parameters": held * b,
        "gradients": held * b,
        "optimizer": (2 * ob + master) * held,
        "reference": held * b if beta > 0 else 0.0,
        "gathered": 2 * arch.block_parameters * b if shard > 1 else 0.0,
        "rollout_kv_cache": rows * tokens * arch.layers * 2 * kv * b,
        "activations": (act_tokens * arch.layers * (7 * arch.hidden + 2 * kv + 4 * arch.intermediate) * b
                        + 3 * m * (max_cot_tokens + max_answer_tokens) * arch.vocab * 4),
        "runtime": runtime_gb * GB,
    }
    persistent = sum(v for k, v in parts.items() if k not in ("rollout_kv_cache", "activations"))
    peak = persistent + max(parts["rollout_kv_cache"], parts["activations"])
    return {"model": arch.name, "parameters": N, "strategy": strategy, "processes": processes, "dtype": dtype,
            "optimizer_dtype": optimizer_dtype or dtype,
            "rows_per_process": rows, "micro_batch": m, "tokens_per_row": tokens,
            "gb": {k: round(v / GB, 3) for k, v in parts.items()}, "peak_gb": round(peak / GB, 3)}


def format_plan(plan: dict) -> str:
    """The plan as a few lines of text (what `softviz plan` prints)."""
    g = plan["gb"]
    lines = [f"{plan['model'] or 'model'}: {plan['parameters'] / 1e9:.3g}B parameters, {plan['strategy'].upper()} "
             f"on {plan['processes']} process{'es' if plan['processes'] > 1 else ''}, {plan['dtype']} "
             f"(optimizer {plan['optimizer_dtype']}); "
             f"{plan['rows_per_process']} rollouts of up to {plan['tokens_per_row']} tokens per process, "
             f"{plan['micro_batch']} per forward-backward pass"]
    for k, v in g.items():
        if v:
            lines.append(f"  {k.replace('_', ' '):<18} {v:9.2f} GB")
    lines.append(f"  {'peak per process':<18} {plan['peak_gb']:9.2f} GB")
    return "\n".join(lines)


def fits(plan: dict, device_gb: float, headroom: float = 0.9) -> bool:
    """Whether the peak stays under `headroom` of a device's memory."""
    return plan["peak_gb"] <= headroom * device_gb and math.isfinite(plan["peak_gb"])
