"""What soft tokens look like in a real pretrained LM, next to the embedded model: results/smollm2/look.json.

    python benchmarks/real_model.py --model smollm2 --out results/smollm2          # about 40 min on 2 cores
    python benchmarks/real_model.py --model embedded --out results/smollm2/embedded  # the same numbers, embedded

On `--problems` arithmetic test problems (plain questions, which the chat prompt reads; story problems) and on
the GSM8K fixture problems (tests/fixtures/gsm8k, the paper's raw prompt), `--samples` rollouts each:
 1. the six inference settings of the paper (hard, fuzzy, soft; greedy and sampled): pass@1 and pass@k over the
    samples, on the plain problems;
 2. entropy per CoT step (of p at τ = 1) and the branch points (softviz.analysis.branch_points: entropy above
    0.672 nats, top mixture weight below 0.9) of soft rollouts (τ 0.5, γ 0.33), per prompt family;
 3. the distribution of the top soft weight at τ 0.5;
 4. the noise against the embedding geometry: ‖σε‖ ≈ σ·√d against each token's distance to its nearest other
    token embedding, and how often a fuzzy step's noisy input lies nearer another token than the one it encodes;
 5. diversity across rollouts per mode: distinct answers per problem and the mean distance between rollouts'
    fed-input trajectories.
Writes look.json and figures/*.html (and .png where kaleido can render); every file whole or not at all.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from softviz import TraceConfig, generate, load_model
from softviz.analysis import branch_points, trajectory_distances
from softviz.files import atomic_file
from softviz.generate import embedding_matrix
from softviz.mixing import noise_std
from softviz.models import source_digest
from softviz.stats import pass_at_k
from softviz.tasks import ArithmeticTask, get_task

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "gsm8k"
SETTINGS = ("hard-greedy", "hard", "fuzzy-greedy", "fuzzy", "soft-greedy", "soft")
GAMMA = 0.33
BINS = np.linspace(0, 1, 21)


def rollouts(model, tok, task, examples, mode, n, max_cot, chunk, inputs=False):
    """Per chunk of problems: (examples, Rollouts with a Trace), so memory stays bounded."""
    for s in range(0, len(examples), chunk):
        part = examples[s : s + chunk]
        r = generate(model, tok, [task.prompt(e, tok) for e in part], mode, n=n, seed=s, max_cot_tokens=max_cot,
                     max_answer_tokens=16, answer_cue=task.answer_cue,
                     trace=TraceConfig(top_k=1, nearest_k=1, nearest_metric="l2", keep_inputs=inputs))
        yield part, r


def family_look(model, tok, task, examples, n, max_cot, chunk) -> dict:
    """Entropy per step, branch points and the top-weight histogram of soft rollouts."""
    ent_sum, ent_cnt = np.zeros(max_cot), np.zeros(max_cot)
    steps = unc = bl = 0
    hist = np.zeros(len(BINS) - 1)
    for _, r in rollouts(model, tok, task, examples, "soft", n, max_cot, chunk):
        tr = r.trace
        valid = tr.mask.numpy()
        e = tr.entropy.numpy()
        T = valid.shape[1]
        ent_sum[:T] += (e * valid).sum(0)
        ent_cnt[:T] += valid.sum(0)
        bp = branch_points(tr)
        steps, unc, bl = steps + bp["steps"], unc + int(bp["uncertain"].sum()), bl + int(bp["blended"].sum())
        hist += np.histogram(tr.topk_weights[..., 0].numpy()[valid], bins=BINS)[0]
    profile = [round(float(s / c), 4) if c else None for s, c in zip(ent_sum, ent_cnt)]
    return {"problems": len(examples), "samples": n, "steps": steps, "mean_entropy": float(ent_sum.sum() / steps),
            "entropy_by_step": profile, "rollouts_by_step": ent_cnt.astype(int).tolist(),
            "frac_entropy_above_0.672": unc / steps, "frac_top_weight_below_0.9": bl / steps,
            "top_weight_hist": {"bins": BINS.round(3).tolist(), "counts": hist.astype(int).tolist()}}


def settings_look(model, tok, task, examples, n, max_cot, chunk) -> dict:
    """The six settings: pass@1 and pass@n; per sampled mode, diversity across the n rollouts of a problem."""
    out = {}
    for mode in SETTINGS:
        t0 = time.perf_counter()
        greedy = mode.endswith("greedy")
        k = 1 if greedy else n
        correct, distinct, dists, cue = [], [], [], 0
        for part, r in rollouts(model, tok, task, examples, mode, k, max_cot, chunk, inputs=not greedy):
            cue += sum(c == "cue" for c in r.cot_end)
            for i, ex in enumerate(part):
                ans = r.answers[i * k : (i + 1) * k]
                correct.append(sum(task.is_correct(a, ex.answer) for a in ans))
                distinct.append(len({a for a in ans}))
            if not greedy:
                d = trajectory_distances(r.trace)
                for i in range(len(part)):
                    block = d[i * k : (i + 1) * k, i * k : (i + 1) * k]
                    dists.append(float(np.nanmean(block[~np.eye(k, dtype=bool)])))
        row = {"samples": k, "pass@1": statistics.fmean(pass_at_k(k, c, 1) for c in correct),
               "cue_rate": cue / (len(examples) * k), "seconds": round(time.perf_counter() - t0, 1)}
        if not greedy:
            row[f"pass@{k}"] = statistics.fmean(pass_at_k(k, c, k) for c in correct)
            row["distinct_answers"] = statistics.fmean(distinct)
            row["trajectory_distance"] = statistics.fmean(dists)
        out[mode] = row
        print(f"  {mode}: {json.dumps(row)}", flush=True)
    return out


def geometry(model, tok, task, examples, max_cot, chunk) -> dict:
    """‖σε‖ against nearest-neighbour gaps of E, and how often fuzzy's noisy input is nearer another token."""
    E = embedding_matrix(model).detach().float()
    V, d = E.shape
    sigma = noise_std(E, GAMMA)
    gaps = torch.empty(V)
    sq = E.pow(2).sum(1)
    for s in range(0, V, 4096):
        d2 = (sq[s : s + 4096, None] + sq[None] - 2 * E[s : s + 4096] @ E.T).clamp_min(0)
        d2[torch.arange(d2.shape[0]), torch.arange(s, s + d2.shape[0])] = float("inf")
        gaps[s : s + 4096] = d2.min(1).values.sqrt()
    norms = sq.sqrt()
    noise_norm = sigma * math.sqrt(d)
    moved = total = 0
    for _, r in rollouts(model, tok, task, examples, "fuzzy", 4, max_cot, chunk):
        valid = r.trace.mask
        moved += int(((r.trace.nearest_ids[..., 0] != r.trace.tokens) & valid).sum())
        total += int(valid.sum())
    q = lambda t: {p: round(float(t.quantile(p / 100)), 4) for p in (10, 50, 90)}  # noqa: E731
    return {"vocab": V, "hidden": d, "gamma": GAMMA, "sigma": sigma, "noise_norm": noise_norm,
            "embedding_norm_percentiles": q(norms), "nearest_gap_percentiles": q(gaps),
            "frac_tokens_gap_below_noise": float((gaps < noise_norm).float().mean()),
            "fuzzy_steps": total, "frac_fuzzy_inputs_nearer_another_token": moved / total if total else None}


def figures(look: dict, folder: Path) -> None:
    import plotly.graph_objects as go

    folder.mkdir(parents=True, exist_ok=True)
    fam = look["families"]
    ent = go.Figure([go.Scatter(y=v["entropy_by_step"], name=k, mode="lines") for k, v in fam.items()])
    ent.update_layout(title=f"{look['model']}: entropy of p per CoT step (soft rollouts, τ 0.5), mean over rollouts",
                      xaxis_title="CoT step", yaxis_title="nats", template="plotly_white")
    ent.add_hline(y=0.672, line_dash="dot", annotation_text="0.672 nats (branch line)")
    bins = fam[next(iter(fam))]["top_weight_hist"]["bins"]
    top = go.Figure([go.Bar(x=[(a + b) / 2 for a, b in zip(bins, bins[1:])],
                            y=np.array(v["top_weight_hist"]["counts"]) / max(1, sum(v["top_weight_hist"]["counts"])),
                            name=k) for k, v in fam.items()])
    top.update_layout(title=f"{look['model']}: largest soft weight per CoT step at τ 0.5", barmode="group",
                      xaxis_title="top weight", yaxis_title="share of steps", template="plotly_white")
    for name, fig in (("entropy_by_step", ent), ("top_weight", top)):
        with atomic_file(folder / f"{name}.html") as tmp:
            fig.write_html(tmp, include_plotlyjs="cdn")
        try:
            with atomic_file(folder / f"{name}.png") as tmp:
                fig.write_image(tmp, format="png", width=900, height=450)
        except Exception as err:  # no Chrome for kaleido: the HTML is the figure
            print(f"  {name}.png not written ({type(err).__name__})")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--problems", type=int, default=100)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-cot-tokens", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=10, help="problems per generate call")
    ap.add_argument("--out", default="results/smollm2")
    ap.add_argument("--figures-only", action="store_true", help="redraw the figures from OUT/look.json")
    args = ap.parse_args(argv)
    if args.figures_only:
        figures(json.loads((Path(args.out) / "look.json").read_text()), Path(args.out) / "figures")
        return
    t0 = time.perf_counter()
    model, tok = load_model(None if args.model == "embedded" else args.model, device="cpu")
    out = Path(args.out)
    look = {"model": args.model, "model_sha256": source_digest(None if args.model == "embedded" else args.model),
            "problems": args.problems, "samples": args.samples, "max_cot_tokens": args.max_cot_tokens,
            "threads": torch.get_num_threads(), "families": {}}
    plain, story = ArithmeticTask("plain"), ArithmeticTask("story")
    gsm8k = get_task("gsm8k", path=str(FIXTURES))
    sets = {"plain": (plain, plain.examples("test", args.problems)),
            "story": (story, story.examples("test", args.problems)),
            "gsm8k fixture": (gsm8k, gsm8k.split("test"))}
    run = dict(max_cot=args.max_cot_tokens, chunk=args.chunk)
    print("six settings on plain problems", flush=True)
    look["settings"] = settings_look(model, tok, plain, sets["plain"][1], args.samples, **run)
    for name, (task, exs) in sets.items():
        print(f"soft rollouts: {name} ({len(exs)} problems)", flush=True)
        look["families"][name] = family_look(model, tok, task, exs, args.samples, **run)
    print("noise and geometry", flush=True)
    look["geometry"] = geometry(model, tok, plain, sets["plain"][1][:20], **run)
    look["seconds"] = round(time.perf_counter() - t0, 1)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "look.json") as tmp:
        Path(tmp).write_text(json.dumps(look, indent=1) + "\n")
    figures(look, out / "figures")
    print(f"wrote {out / 'look.json'} ({look['seconds']} s)")


if __name__ == "__main__":
    main()
