"""Time per RL step on the embedded model: softviz hard / soft / fuzzy / soft-grpo / multiplex, and TRL's
GRPOTrainer (hard tokens).

    python benchmarks/bench_train.py [--steps 6] [--out benchmarks/results/bench_train.json]

Same model, prompts per step, group size, lengths and learning rate everywhere. softviz steps are split
into rollout, loss forward-backward and optimizer. Target: every method's step at most 1.15x a hard step; the TRL ratio is printed as the tool a user would otherwise pick for hard-token GRPO.
The first step of each run is a warm-up and is not counted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from softviz import load_model
from softviz.config import RLConfig
from softviz.files import atomic_file
from softviz.methods import METHODS
from softviz.tasks import ArithmeticTask
from softviz.train import train

B, G, COT, ANSWER, LR = 4, 8, 64, 16, 5e-5


def bench_softviz(mode: str, steps: int) -> dict:
    model, tok = load_model(device="cpu")
    cfg = RLConfig(mode=mode, steps=steps, prompts_per_step=B, group_size=G, max_cot_tokens=COT,
                   max_answer_tokens=ANSWER, learning_rate=LR, eval_every=0, save_every=0)
    ms = list(train(model, tok, cfg, progress=False))[1:]
    parts = {k: statistics.median(m[f"time/{k}"] for m in ms) for k in ("rollout", "loss_backward", "optimizer")}
    return {"step_s": statistics.median(m["step_time"] for m in ms), **{f"{k}_s": v for k, v in parts.items()},
            "cot_mean_length": statistics.mean(m["cot/mean_length"] for m in ms)}


def bench_trl(steps: int) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    model, tok = load_model(device="cpu")
    tok.padding_side = "left"
    task = ArithmeticTask()
    data = Dataset.from_list([{"prompt": task.prompt(e), "answer": e.answer}
                              for e in task.examples("train", B * (steps + 1))])
    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    scratch = tempfile.TemporaryDirectory(prefix="softviz-bench-trl-")  # TRL's output folder, removed at the end
    args = GRPOConfig(output_dir=scratch.name, use_cpu=True, bf16=False, report_to="none",
                      per_device_train_batch_size=B * G, num_generations=G, max_completion_length=COT + ANSWER,
                      learning_rate=LR, max_steps=steps, logging_steps=1, save_strategy="no",
                      gradient_checkpointing=False, temperature=1.0, top_k=0, top_p=1.0, beta=0.0,
                      loss_type="grpo", seed=0)
    trainer = GRPOTrainer(model=model, reward_funcs=task.reward, args=args, train_dataset=data,
                          processing_class=tok, callbacks=[Timer()])
    trainer.train()
    scratch.cleanup()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    return {"step_s": statistics.median(times[1:]), "completion_mean_length": statistics.mean(lengths)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_train.json"))
    args = parser.parse_args()
    rows = {}
    for mode in METHODS:
        rows[f"softviz {mode}"] = bench_softviz(mode, args.steps)
        print(f"softviz {mode:<9} {json.dumps({k: round(v, 3) for k, v in rows[f'softviz {mode}'].items()})}", flush=True)
    rows["trl GRPOTrainer hard"] = bench_trl(args.steps)
    print(f"TRL GRPOTrainer  {json.dumps({k: round(v, 3) for k, v in rows['trl GRPOTrainer hard'].items()})}")
    hard = rows["softviz hard"]["step_s"]
    ratios = {f"{m.replace('-', '_')}_vs_hard": rows[f"softviz {m}"]["step_s"] / hard for m in METHODS[1:]}
    ratios["softviz_hard_vs_trl"] = hard / rows["trl GRPOTrainer hard"]["step_s"]
    ratios = {k: round(v, 3) for k, v in ratios.items()}
    print(f"ratios (targets: every method _vs_hard <= 1.15; softviz_hard_vs_trl < 1 means softviz is faster): {ratios}")
    report = {"setup": {"prompts_per_step": B, "group_size": G, "max_cot_tokens": COT, "max_answer_tokens": ANSWER,
                        "learning_rate": LR, "steps_timed": args.steps - 1, "threads": torch.get_num_threads()},
              "rows": rows, "ratios": ratios}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(args.out) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
