"""How much signal is in one RL step's gradient, per training mode, on the embedded model or a real one.

    python benchmarks/rl_signal.py [--estimates 16] [--pooled 64] [--out benchmarks/results/rl_signal.json]
    python benchmarks/rl_signal.py --model smollm2 --estimates 8   # -> benchmarks/results/rl_signal_smollm2.json

For each setting, K independent gradient estimates from the starting model on one fixed batch (8 prompts x 8
rollouts, fresh rollout noise each time) give softviz.rl.gradient_snr: the fraction of an estimate's squared
norm that is the expected gradient on that batch (1 = the rollouts always agree, 0 = pure noise), printed as
a ratio to hard tokens measured in the same run. Then, for the main modes, the direction test: the mean of
`--pooled` normalised one-step estimates (training batches of 4 new prompts x 8 rollouts) is a low-noise
estimate of the expected gradient; step along it (each tensor moved by a fraction alpha of its norm) and
measure greedy validation accuracy, against a random direction of the same size. A direction with signal
raises accuracy at small steps; a noisy one costs more than a random one, because its noise lies where the
model is sensitive. Each signal fraction comes with a bootstrap 95% interval over the K estimates.

The estimates are not held in memory together: their Gram matrix is accumulated as they come
(softviz.rl.GramAccumulator), so a 135M-parameter model needs two parameter-sized buffers, not K. Models
other than the embedded one run the five methods only, without the direction test (`--direction` adds it).

The file is written after each setting; a stopped run, started again with the same arguments, resumes after the
last finished setting.

This is the measurement behind docs/rl.md, "Why soft and fuzzy RL do not learn here".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from softviz import load_model
from softviz.config import RLConfig
from softviz.evaluate import evaluate
from softviz.files import atomic_file
from softviz.methods import gradient_estimates, iter_gradient_estimates
from softviz.models import model_fingerprint, source_digest
from softviz.rl import GramAccumulator, gradient_snr, gram_snr, snr_interval
from softviz.tasks import get_task

SETTINGS = {  # name: RLConfig overrides (the paper's defaults otherwise)
    "hard": dict(mode="hard"),
    "soft": dict(mode="soft"),
    "soft, mean p·E detached from E": dict(mode="soft", mixture_embedding_grad=False),
    "soft, γ = 0.1": dict(mode="soft", noise_scale=0.1),
    "soft, answer terms only": dict(mode="soft", cot_weight=0.0),
    "fuzzy": dict(mode="fuzzy"),
    "fuzzy, mean p·E detached from E": dict(mode="fuzzy", mixture_embedding_grad=False),
    "soft-grpo (Gumbel top-5)": dict(mode="soft-grpo"),
    "multiplex (K = 3)": dict(mode="multiplex"),
}
METHODS = ("hard", "soft", "fuzzy", "soft-grpo (Gumbel top-5)", "multiplex (K = 3)")  # what a real model runs
DIRECTION = ("hard", "soft", "fuzzy", "soft-grpo (Gumbel top-5)", "multiplex (K = 3)")  # settings that get the direction test
ALPHAS = (1e-3, 3e-3)


def estimates(model, tok, task, cfg: RLConfig, K: int, fixed: bool) -> tuple[torch.Tensor, float]:
    """K flattened gradient estimates (K, P) and the mean rollout accuracy; `fixed`: the same prompts each time."""
    return gradient_estimates(model, tok, task, cfg, K, fixed=fixed)


def signal(model, tok, task, cfg: RLConfig, K: int, log=print) -> dict:
    """gram_snr of K estimates on one fixed batch, its bootstrap 95% interval and the rollout accuracy."""
    accs = []
    with GramAccumulator() as acc:
        for k, (g, a) in enumerate(iter_gradient_estimates(model, tok, task, cfg, K, fixed=True)):
            acc.add(g)
            accs.append(a)
            del g
            log(f"  estimate {k + 1}/{K}: rollout accuracy {a:.3f}")
        gram = acc.gram
    lo, hi = snr_interval(gram)
    return {**gram_snr(gram), "snr_95": [lo, hi], "rollout_accuracy": sum(accs) / K,
            "gram": [[round(v, 6) for v in row] for row in gram.tolist()]}


def direction_test(model, tok, task, cfg: RLConfig, grads: torch.Tensor | None, val) -> dict:
    """Greedy validation accuracy after stepping along −mean(normalised grads) (None: a random direction)."""
    params = [p for p in model.parameters() if p.requires_grad]
    theta0 = [p.detach().clone() for p in params]
    if grads is None:
        flat = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(0))
    else:
        norms = grads.norm(dim=1, keepdim=True)
        keep = norms.squeeze(1) > 0  # a batch whose groups all tied gives no gradient
        flat = (grads[keep] / norms[keep]).mean(0)
    pieces = torch.split(flat, [p.numel() for p in params])
    acc = {}
    for alpha in (0.0, *ALPHAS):
        with torch.no_grad():
            for p, p0, d in zip(params, theta0, pieces):
                d = d.view_as(p)
                p.copy_(p0 - alpha * p0.norm() * d / d.norm().clamp_min(1e-30))
        acc[alpha] = evaluate(model, tok, task, val, cfg.greedy_mode, max_cot_tokens=cfg.max_cot_tokens,
                              max_answer_tokens=cfg.max_answer_tokens, seed=0).pass_at[1]
    with torch.no_grad():
        for p, p0 in zip(params, theta0):
            p.copy_(p0)
    return acc


def resumable_rows(path: str, meta: dict) -> dict:
    """The finished rows of an earlier run of the same measurement at `path` (same model, task and sizes)."""
    try:
        old = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    if old.get("complete", True) or any(old.get(k) != v for k, v in meta.items()):
        return {}  # a finished run is measured again; a different measurement is not mixed in
    return {r["setting"]: r for r in old["rows"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--estimates", type=int, default=16, help="gradient estimates per setting on the fixed batch")
    ap.add_argument("--pooled", type=int, default=64, help="one-step estimates pooled for the direction test")
    ap.add_argument("--val-size", type=int, default=256)
    ap.add_argument("--model", default=None, help="embedded model (default), 'smollm2', a folder or a Hub id")
    ap.add_argument("--task", default="arithmetic")
    ap.add_argument("--max-cot-tokens", type=int, default=None, help="CoT budget (default: RLConfig's, 64)")
    ap.add_argument("--micro-batch", type=int, default=None, help="rollouts per forward-backward pass (default: all "
                    "64 on the embedded model, 8 on another: 64 SmolLM2 rollouts in one pass need about 23 GB)")
    ap.add_argument("--direction", action="store_true", help="run the direction test on a model other than the "
                    "embedded one (it always runs on the embedded model)")
    ap.add_argument("--out", default=None, help="default benchmarks/results/rl_signal.json, or "
                    "rl_signal_<model>.json for another model")
    args = ap.parse_args()
    embedded = args.model in (None, "embedded")
    out_path = args.out or ("benchmarks/results/rl_signal.json" if embedded else
                            f"benchmarks/results/rl_signal_{Path(args.model).name.replace('/', '_')}.json")
    torch.manual_seed(0)
    model, tok = load_model(args.model, device="cpu")
    task = get_task(args.task)
    val = task.examples("validation", args.val_size, seed=0)
    rows = []
    base = RLConfig(mode="hard", task=args.task)
    if args.max_cot_tokens:
        base = dataclasses.replace(base, max_cot_tokens=args.max_cot_tokens)
    micro = args.micro_batch or (None if embedded else 8)  # the same gradient, in passes that fit in memory
    base = dataclasses.replace(base, micro_batch=micro)
    direction = DIRECTION if (embedded or args.direction) else ()
    settings = list(SETTINGS.items()) if embedded else [(k, v) for k, v in SETTINGS.items() if k in METHODS]
    meta = {"model": args.model or "embedded", "model_sha256": source_digest(args.model), "task": args.task,
            "max_cot_tokens": base.max_cot_tokens, "estimates": args.estimates,
            "snr_batch": f"8 fixed prompts x {base.group_size} rollouts", "pooled": args.pooled,
            "pooled_batch": f"{base.prompts_per_step} new prompts x {base.group_size} rollouts",
            "val_size": args.val_size}
    done = resumable_rows(out_path, meta)
    spent = sum(r["seconds"] for r in done.values())

    def save(complete: bool) -> None:
        out = {**meta, "threads": torch.get_num_threads(), "weights_sha256": model_fingerprint(model),
               "seconds": round(spent + time.perf_counter() - t0, 1), "complete": complete, "rows": rows}
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(out_path) as tmp:
            Path(tmp).write_text(json.dumps(out, indent=1) + "\n")

    t0 = time.perf_counter()
    for name, over in ([("random direction", None)] if direction else []) + settings:
        if name in done:
            print(f"[rl_signal] {name}: kept from {out_path}", flush=True)
            rows.append(done[name])
            continue
        t = time.perf_counter()
        cfg = dataclasses.replace(base, **(over or {}))
        row = {"setting": name}
        print(f"[rl_signal] {name}", flush=True)
        if over is not None:
            fixed = dataclasses.replace(cfg, prompts_per_step=8)
            row.update(signal(model, tok, task, fixed, args.estimates))
        if over is None or name in direction:
            pooled = None if over is None else estimates(model, tok, task, cfg, args.pooled, fixed=False)[0]
            if pooled is not None:
                row["pooled_cos_halves"] = gradient_snr(pooled)["cos_halves"]
            row["greedy_accuracy_after_step"] = {str(a): v for a, v in direction_test(model, tok, task, cfg, pooled,
                                                                                       val).items()}
        row["seconds"] = round(time.perf_counter() - t, 1)
        rows.append(row)
        save(complete=False)  # a stopped run resumes after the last finished setting
        print(json.dumps(row), flush=True)
    hard = next(r for r in rows if r["setting"] == "hard")
    print(f"\n{'setting':34s} {'snr':>8s} {'95% interval':>17s} {'/ hard':>7s} {'cos(halves)':>11s} {'|g|':>8s} {'pooled cos':>10s}   greedy val at "
          f"step 0 / {' / '.join(map(str, ALPHAS))} along the pooled direction")
    for r in rows:
        accs = " / ".join(f"{100 * v:.1f}" for v in r.get("greedy_accuracy_after_step", {}).values())
        if "snr" in r:
            ratio = f"{r['snr'] / hard['snr']:7.3f}" if hard["snr"] > 0 else f"{'n/a':>7s}"
            pc = f"{r['pooled_cos_halves']:10.3f}" if "pooled_cos_halves" in r else f"{'':10s}"
            ci = f"[{r['snr_95'][0]:.3f}, {r['snr_95'][1]:.3f}]"
            print(f"{r['setting']:34s} {r['snr']:8.4f} {ci:>17s} {ratio} {r['cos_halves']:11.3f} "
                  f"{r['grad_norm']:8.3g} {pc}   {accs}")
        else:
            print(f"{r['setting']:34s} {'':8s} {'':17s} {'':7s} {'':11s} {'':8s} {'':10s}   {accs}")
    save(complete=True)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
