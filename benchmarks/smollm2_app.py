"""What SmolLM2 costs in the app on this machine: the numbers beside the app's model menu (softviz.app.settings).

    python benchmarks/smollm2_app.py      # about 5 minutes on 2 cores -> benchmarks/results/smollm2_app.json
    python benchmarks/smollm2_app.py --skip-compare --steps 2   # the RL steps only

Measures, in one process: the first load of SmolLM2 (the GGUF dequantized into a fresh cache folder) and a cached
load; the app's default comparison (hard, soft and fuzzy x 8 rollouts, 96 CoT tokens, through the Compare
handler) on the embedded model and on SmolLM2, twice each after a warm-up; and RL steps of the app's default
Train configuration (hard, 4 prompts x 8, 64 CoT tokens; scored in micro-batches of `--micro-batch` rollouts) on a
private copy of SmolLM2, with the process's peak resident memory before and after.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    import argparse
    import os

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip-compare", action="store_true", help="only the loads and the RL steps")
    ap.add_argument("--steps", type=int, default=3, help="RL steps timed")
    ap.add_argument("--micro-batch", type=int, default=8, help="rollouts per forward-backward pass (None: all 32)")
    args = ap.parse_args()
    out = {"threads": torch.get_num_threads()}
    # one temporary folder for everything the run writes: the converted weights, the app's session folders and
    # Gradio's copies of downloadable traces, all removed at the end
    with tempfile.TemporaryDirectory(prefix="softviz-bench-app-") as scratch:
        tempfile.tempdir = scratch
        os.environ["GRADIO_TEMP_DIR"] = os.environ["SOFTVIZ_CACHE"] = scratch
        from softviz import load_model

        t = time.perf_counter()
        load_model("smollm2", device="cpu")
        out["convert_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        model, tok = load_model("smollm2", device="cpu")
        out["cached_load_s"] = round(time.perf_counter() - t, 2)

        import softviz.app as app
        from softviz.app.train_tab import _train_config
        from softviz.train import train

        settings = app.Settings(models=("embedded", "smollm2"))
        prompt, gold = app.first_problem()
        for name in () if args.skip_compare else ("embedded", "smollm2"):
            times = []
            for _ in range(3):  # the first warms up
                t = time.perf_counter()
                session = app.Session()
                list(app.on_compare(name, prompt, gold, ["hard", "soft", "fuzzy"], 8, 0.5, 1.0, 0.33, 96, 0, False,
                                    settings, session))
                session.close()
                times.append(time.perf_counter() - t)
            out[f"compare_{name}_s"] = [round(x, 2) for x in times]
            out[f"compare_{name}_median_s"] = round(statistics.median(times[1:]), 2)
            print(json.dumps({k: v for k, v in out.items() if k.startswith(f"compare_{name}")}), flush=True)

        cfg = dataclasses.replace(_train_config("hard", "rloo", args.steps, 1e-4, 8, 4, settings), eval_every=0,
                                  micro_batch=args.micro_batch)
        before = peak_rss_gb()
        policy = copy.deepcopy(model)
        steps = [m["step_time"] for m in train(policy, tok, cfg, output_dir=None, progress=False)]
        out["rl_step_s"] = [round(x, 1) for x in steps]
        out["rl_step_median_s"] = round(statistics.median(steps), 1)
        out["rl_config"] = {k: getattr(cfg, k) for k in ("mode", "prompts_per_step", "group_size", "max_cot_tokens",
                                                         "micro_batch")}
        out["peak_rss_before_train_gb"] = round(before, 2)
        out["peak_rss_after_train_gb"] = round(peak_rss_gb(), 2)
        tempfile.tempdir = None
    path = Path(__file__).parent / "results" / "smollm2_app.json"
    from softviz.files import atomic_file

    with atomic_file(path) as tmp:
        Path(tmp).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
