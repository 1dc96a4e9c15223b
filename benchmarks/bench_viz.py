"""Build time and JSON size of every softviz.viz figure for 3 modes × 32 rollouts × 128 CoT steps, on CPU.

    OMP_NUM_THREADS=1 python benchmarks/bench_viz.py [--repeats 3] [--out benchmarks/results/bench_viz.json]

The traces are generated once with the embedded model (hard, soft, fuzzy; 4 problems × 8 samples; an answer cue
that never appears, so every CoT runs the full 128 steps), or synthesised with that shape with --synthetic.
Each figure is built once cold (reported, not counted), then `--repeats` times; the median counts. Target (issue 5, item 7): all
figures in at most 3 s in total, each figure's JSON under a few MB (we check 5 MB).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from softviz import Trace, TraceConfig, analysis, viz
from softviz.files import atomic_file

MODES = ("hard", "soft", "fuzzy")
PROMPTS, SAMPLES, STEPS = 4, 8, 128
TARGET_S, MAX_JSON_MB = 3.0, 5.0


def generated_traces() -> dict[str, Trace]:
    from softviz import generate, load_model
    from softviz.tasks import ArithmeticTask

    model, tok = load_model(device="cpu")
    task = ArithmeticTask()
    examples = task.examples("test", PROMPTS)
    prompts = [task.prompt(e) for e in examples]
    out = {}
    for mode in MODES:
        # a cue that never appears: every rollout thinks for the full STEPS, the shape we want to time
        r = generate(model, tok, prompts, mode, n=SAMPLES, max_cot_tokens=STEPS, seed=0,
                     trace=TraceConfig(keep_inputs=True), answer_cue="@@never@@ ")
        r.trace.meta["golds"] = [examples[p].answer for p in r.trace.meta["prompt_index"]]
        out[mode] = r.trace
    return out


def synthetic_traces(V: int = 649, d: int = 256, k: int = 10, kn: int = 5, seed: int = 0) -> dict[str, Trace]:
    """Random Traces of the benchmark's shape (the content does not change the cost of a figure)."""
    g = torch.Generator().manual_seed(seed)
    B, T = PROMPTS * SAMPLES, STEPS
    out = {}
    for mode in MODES:
        w = torch.rand(B, T, k, generator=g).sort(-1, descending=True).values
        w = w / w.sum(-1, keepdim=True) * 0.95
        answers = [str(int(x)) for x in torch.randint(0, 20, (B,), generator=g)]
        meta = {"mode": {"kind": "hard" if mode == "hard" else "soft"}, "mode_label": mode, "sigma": 0.04,
                "answers": answers, "prompt_index": [i // SAMPLES for i in range(B)], "golds": ["7"] * B,
                "nearest_metric": "cosine"}
        out[mode] = Trace(tokens=torch.randint(0, V, (B, T), generator=g),
                          topk_ids=torch.randint(0, V, (B, T, k), generator=g), topk_weights=w,
                          entropy=torch.rand(B, T, generator=g) * 2, weight_entropy=torch.rand(B, T, generator=g),
                          noise_norm=torch.rand(B, T, generator=g),
                          nearest_ids=torch.randint(0, V, (B, T, kn), generator=g),
                          nearest_scores=torch.rand(B, T, kn, generator=g).sort(-1, descending=True).values,
                          lengths=torch.full((B,), T), token_strings={i: f"t{i}" for i in range(V)},
                          inputs=torch.randn(B, T, d, generator=g), meta=meta)
    return out


def figure_builders(traces: dict[str, Trace]) -> dict:
    metrics = {m: [{"step": s, "reward": 50 + s / 10, "reward_std": 20.0, "entropy": 0.3, "cot/mean_length": 40.0,
                    **({"val/greedy_accuracy": 0.4 + s / 2000} if s % 10 == 0 else {})} for s in range(1, 501)]
               for m in MODES}
    counts = {m: analysis.correct_counts(t) for m, t in traces.items()}
    return {
        "entropy_heatmap × 3 (side_by_side)": lambda: viz.side_by_side(viz.entropy_heatmap, traces),
        "entropy_profiles": lambda: viz.entropy_profiles(traces),
        "mixture_topk × 3 (side_by_side)": lambda: viz.side_by_side(viz.mixture_topk, traces, rollout=0),
        "noise_shift × 3 (side_by_side)": lambda: viz.side_by_side(viz.noise_shift, traces, rollout=0),
        "soft_text_html × 3": lambda: [viz.soft_text_html(t, rollout=0) for t in traces.values()],
        "diversity": lambda: viz.diversity(traces),
        "trajectory_distance_heatmap × 3 (side_by_side)":
            lambda: viz.side_by_side(viz.trajectory_distance_heatmap, traces),
        "projection (PCA)": lambda: viz.projection(traces, color_by="mode"),
        "pass_at_k": lambda: viz.pass_at_k({m: analysis.pass_at_k_curve(*counts[m]) for m in traces}),
        "training_curves (3 runs × 500 steps)": lambda: viz.training_curves(metrics),
        "entropy_before_after (3 modes)": lambda: viz.entropy_before_after(traces, traces),
    }


def size_of(obj) -> int:
    if isinstance(obj, list):  # the HTML fragments
        return sum(len(s.encode()) for s in obj)
    return len(obj.to_json().encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--synthetic", action="store_true", help="synthesise the traces instead of generating them")
    ap.add_argument("--out", default="benchmarks/results/bench_viz.json")
    args = ap.parse_args()

    t0 = time.perf_counter()
    traces = synthetic_traces() if args.synthetic else generated_traces()
    source = ("synthesised random Traces" if args.synthetic else
              "generated with the embedded model (answer cue disabled so every CoT runs 128 steps)")
    print(f"traces: {len(traces)} modes × {traces['soft'].num_rollouts} rollouts × {traces['soft'].num_steps} steps, "
          f"{source}, in {time.perf_counter() - t0:.1f}s; torch threads {torch.get_num_threads()}")

    rows = {}
    for name, build in figure_builders(traces).items():
        t = time.perf_counter()
        build()  # warm-up (imports, first-call caches): reported as cold_s, not counted
        cold = time.perf_counter() - t
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fig = build()
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        nbytes = size_of(fig)
        rows[name] = {"build_s": round(statistics.median(times), 4), "cold_s": round(cold, 4),
                      "json_mb": round(nbytes / 1e6, 3),
                      "to_json_s": round(time.perf_counter() - t, 4)}
        print(f"  {name:<48} build {rows[name]['build_s']:6.3f}s   json {rows[name]['json_mb']:6.3f} MB"
              f"   (serialise {rows[name]['to_json_s']:.3f}s)")
    total = sum(r["build_s"] for r in rows.values())
    total_json = sum(r["to_json_s"] for r in rows.values())
    total_cold = sum(r["cold_s"] for r in rows.values())
    biggest = max(r["json_mb"] for r in rows.values())
    ok = total <= TARGET_S and biggest <= MAX_JSON_MB
    print(f"total build {total:.3f}s vs target {TARGET_S:.0f}s: ratio {total / TARGET_S:.2f} "
          f"({'within' if total <= TARGET_S else 'OVER'} target); plus {total_json:.3f}s to serialise to JSON; "
          f"first (cold) builds in a fresh process, plotly import included: {total_cold:.3f}s")
    verdict = "ok" if biggest <= MAX_JSON_MB else "OVER"
    print(f"largest figure JSON {biggest:.3f} MB (limit {MAX_JSON_MB:.0f} MB): {verdict}")
    shown = viz.projection(traces)
    print(f"projection shows {sum(len(d.x) for d in shown.data)} of {analysis.count_points(traces)} points "
          "(downsampled, said on the figure)")

    result = {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
              "machine": platform.machine(), "threads": torch.get_num_threads(), "traces": source,
              "shape": {"modes": len(traces), "rollouts": traces["soft"].num_rollouts,
                        "steps": traces["soft"].num_steps},
              "repeats": args.repeats, "figures": rows, "total_build_s": round(total, 4),
              "total_to_json_s": round(total_json, 4), "total_cold_s": round(total_cold, 4), "target_s": TARGET_S,
              "ratio_to_target": round(total / TARGET_S, 3),
              "largest_json_mb": biggest, "within_targets": ok}
    with atomic_file(args.out) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
