"""Does the app's default Train run visibly learn, and how long does it take? -> benchmarks/results/train_defaults.json

    python benchmarks/train_defaults.py [--seeds 5]     # about 1 minute per seed on 2 idle cores

Runs the app's Train handler (softviz.app.on_train) with its defaults (softviz.app.settings.TRAIN_DEFAULTS) on the
embedded model, once per seed, as a visitor would: before/after rollouts included. For each seed: greedy validation
accuracy on the run's TRAIN_EVAL_SIZE held-out problems at step 0 and at the last step, and the wall time of the
whole run. Prints the mean gain with its 95% t-interval over the seeds and the median time: the numbers the Train
tab announces (softviz.app.settings.MEASURED; a test keeps them equal to this file).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from softviz.files import atomic_file
from softviz.stats import t_quantile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_defaults.json"))
    args = ap.parse_args()

    import softviz.app as app
    from softviz.app.settings import TRAIN_DEFAULTS, TRAIN_EVAL_SIZE

    settings = app.Settings()
    app.get_model("embedded", settings)  # loaded once, as on a running server
    runs = []
    for seed in range(args.seeds):
        session = app.Session()
        t0 = time.perf_counter()
        for _ in app.on_train("embedded", *TRAIN_DEFAULTS.values(), settings, session, seed):
            pass
        seconds = time.perf_counter() - t0
        vals = [m for m in session.finetuned["metrics"] if "val/greedy_accuracy" in m]
        start, end = vals[0]["val/greedy_accuracy"], vals[-1]["val/greedy_accuracy"]
        runs.append({"seed": seed, "start": start, "end": end, "gain_points": 100 * (end - start),
                     "last_step": vals[-1]["step"], "seconds": round(seconds, 1)})
        print(json.dumps(runs[-1]), flush=True)
        session.close()
    gains = [r["gain_points"] for r in runs]
    mean = statistics.fmean(gains)
    half = t_quantile(0.975, len(gains) - 1) * statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else 0.0
    out = {"defaults": TRAIN_DEFAULTS, "eval_size": TRAIN_EVAL_SIZE, "threads": torch.get_num_threads(),
           "runs": runs, "mean_gain_points": round(mean, 2), "gain_95": [round(mean - half, 2), round(mean + half, 2)],
           "median_seconds": round(statistics.median(r["seconds"] for r in runs), 1),
           "max_seconds": max(r["seconds"] for r in runs)}
    print(f"greedy validation gain over {len(runs)} seeds: {mean:+.1f} points, 95% interval [{mean - half:+.1f}, "
          f"{mean + half:+.1f}]; a run takes {out['median_seconds']} s (median; at most {out['max_seconds']} s; "
          f"target: +2 points with the interval above 0, within 120 s)")
    with atomic_file(args.out) as tmp:
        Path(tmp).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
