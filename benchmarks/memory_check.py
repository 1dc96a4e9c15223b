"""The memory plan (softviz.plan) against the measured peak memory of real RL steps on the CPU.

    python benchmarks/memory_check.py [--models embedded,smollm2,qwen-shape] [--out benchmarks/results/memory_check.json]

Each model trains `--steps` RL steps (hard RLOO, fp32, the batch below) in a fresh subprocess, which reports its
peak resident memory (ru_maxrss) and, as the plan's `runtime`, its resident memory after importing torch,
transformers and softviz and running one training step of a negligible model (the libraries training imports,
their thread pools and caches), before loading the model. The plan is computed from the model's config with the
same batch; the ratio plan / measured should lie within 0.8-1.2. Models: the embedded one, SmolLM2-135M-Instruct
(its package must be installed) and a random-init model of Qwen2.5-0.5B's shape (its CoT never ends early, so
every rollout runs to the limit, as the plan assumes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH = dict(prompts_per_step=2, group_size=8, max_cot_tokens=64, max_answer_tokens=8, micro_batch=8)

CHILD = r"""
import json, resource, sys
import torch, transformers  # noqa: F401  (the runtime the plan counts apart)
import softviz, softviz.train, softviz.plan
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
from softviz.config import RLConfig
from softviz.tasks import get_task
name, batch, steps, out = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
task = get_task("arithmetic")
# the runtime: what the process holds after one training step of a negligible model (1 layer, d = 16; the
# embedded tokenizer): the libraries it imports, their thread pools and caches, the task's problems
_, small_tok = softviz.load_model(device="cpu")
small = transformers.LlamaForCausalLM(transformers.LlamaConfig(
    vocab_size=len(small_tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
    pad_token_id=small_tok.pad_token_id, eos_token_id=small_tok.eos_token_id))
for _ in softviz.train.train(small, small_tok, RLConfig(mode="hard", steps=1, eval_every=0, save_every=0,
                                                         **{**batch, "max_cot_tokens": 8}), progress=False):
    pass
del small, small_tok
import gc; gc.collect()
with open("/proc/self/status") as f:
    runtime = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
torch.manual_seed(0)
if name == "qwen-shape":
    sys.path.insert(0, "benchmarks")
    from bench_generate import qwen_shaped
    model, tok = qwen_shaped(words=("The", "final", "answer", "is:", "User:", "Assistant:"))
else:
    model, tok = softviz.load_model(None if name == "embedded" else name, device="cpu")
model.float()
prompt_tokens = max(len(tok.encode(task.prompt(e, tok))) for e in task.examples("train", 16))
cfg = RLConfig(mode="hard", steps=steps, eval_every=0, save_every=0, learning_rate=1e-6, **batch)
for _ in softviz.train.train(model, tok, cfg, progress=False):
    pass
json.dump({"peak": rss(), "runtime": runtime, "prompt_tokens": prompt_tokens,
           "config": model.config.to_dict()}, open(out, "w"))
"""


def measure(name: str, steps: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="softviz-memory-") as tmp:
        out = Path(tmp) / "out.json"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", CHILD, name, json.dumps(BATCH), str(steps), str(out)], check=True,
                       cwd=ROOT, env={**os.environ, "TMPDIR": tmp})
        got = json.loads(out.read_text())
        got["seconds"] = time.perf_counter() - t0
        return got


def main() -> None:
    from softviz.plan import Architecture, memory_plan

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="embedded,smollm2,qwen-shape")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory_check.json"))
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        got = measure(name, args.steps)
        arch = Architecture.from_config(got["config"])
        plan = memory_plan(dataclass_name(arch, name), **BATCH, prompt_tokens=got["prompt_tokens"], dtype="float32",
                           runtime_gb=got["runtime"] / 1e9)
        row = {"model": name, "parameters": arch.parameters, "prompt_tokens": got["prompt_tokens"],
               "measured_peak_gb": round(got["peak"] / 1e9, 3), "runtime_gb": round(got["runtime"] / 1e9, 3),
               "plan_peak_gb": plan["peak_gb"], "plan": plan["gb"], "ratio": round(plan["peak_gb"] * 1e9 / got["peak"], 3),
               "seconds": round(got["seconds"], 1)}
        rows.append(row)
        print(f"{name:<12} {arch.parameters / 1e6:8.1f}M params: measured peak {row['measured_peak_gb']:6.2f} GB, plan "
              f"{row['plan_peak_gb']:6.2f} GB, plan / measured {row['ratio']:.2f} "
              f"({'within' if 0.8 <= row['ratio'] <= 1.2 else 'outside'} ±20%)", flush=True)
    out = {"batch": BATCH, "dtype": "float32", "steps": args.steps, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


def dataclass_name(arch, name: str):
    import dataclasses

    return dataclasses.replace(arch, name=name)


if __name__ == "__main__":
    main()
