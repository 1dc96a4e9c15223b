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
Writes look.json after each piece (a rerun resumes, skipping what is there) and figures/*.html (and .png where
kaleido can render); every file whole or not at all.
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


class FamilyStats:
    """Entropy per step, branch points and the top-weight histogram, accumulated over soft rollouts."""

    def __init__(self, max_cot: int):
        self.ent_sum, self.ent_cnt = np.zeros(max_cot), np.zeros(max_cot)
        self.steps = self.unc = self.bl = 0
        self.hist = np.zeros(len(BINS) - 1)

    def add(self, tr) -> None:
        valid = tr.mask.numpy()
        T = valid.shape[1]
        self.ent_sum[:T] += (tr.entropy.numpy() * valid).sum(0)
        self.ent_cnt[:T] += valid.sum(0)
        bp = branch_points(tr)
        self.steps += bp["steps"]
        self.unc, self.bl = self.unc + int(bp["uncertain"].sum()), self.bl + int(bp["blended"].sum())
        self.hist += np.histogram(tr.topk_weights[..., 0].numpy()[valid], bins=BINS)[0]

    def result(self, problems: int, samples: int) -> dict:
        profile = [round(float(s / c), 4) if c else None for s, c in zip(self.ent_sum, self.ent_cnt)]
        return {"problems": problems, "samples": samples, "steps": self.steps,
                "mean_entropy": float(self.ent_sum.sum() / self.steps), "entropy_by_step": profile,
                "rollouts_by_step": self.ent_cnt.astype(int).tolist(),
                "frac_entropy_above_0.672": self.unc / self.steps, "frac_top_weight_below_0.9": self.bl / self.steps,
                "top_weight_hist": {"bins": BINS.round(3).tolist(), "counts": self.hist.astype(int).tolist()}}


def family_look(model, tok, task, examples, n, max_cot, chunk) -> dict:
    """Entropy per step, branch points and the top-weight histogram of soft rollouts."""
    stats = FamilyStats(max_cot)
    for _, r in rollouts(model, tok, task, examples, "soft", n, max_cot, chunk):
        stats.add(r.trace)
    return stats.result(len(examples), n)


def settings_look(model, tok, task, examples, n, max_cot, chunk, done: dict, save, soft_stats: FamilyStats) -> dict:
    """The six settings: pass@1 and pass@n; per sampled mode, diversity across the n rollouts of a problem. Each
    finished setting is saved (`save`) and skipped on a rerun; the soft run also feeds `soft_stats`."""
    out = dict(done)
    for mode in SETTINGS:
        if mode in out:
            continue
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
            if mode == "soft":
                soft_stats.add(r.trace)
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
        save(mode, row, soft_stats if mode == "soft" else None)
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
    out.mkdir(parents=True, exist_ok=True)
    path = out / "look.json"
    look = {"model": args.model, "model_sha256": source_digest(None if args.model == "embedded" else args.model),
            "problems": args.problems, "samples": args.samples, "max_cot_tokens": args.max_cot_tokens,
            "threads": torch.get_num_threads(), "settings": {}, "families": {}, "seconds": 0.0}
    if path.exists():  # resume: keep what an interrupted run of the same configuration finished
        old = json.loads(path.read_text())
        if all(old.get(k) == look[k] for k in ("model", "model_sha256", "problems", "samples", "max_cot_tokens")):
            look.update({k: old[k] for k in ("settings", "families", "seconds") if k in old})
            if "geometry" in old:
                look["geometry"] = old["geometry"]

    def write() -> None:
        look["seconds"] = round(look["seconds"] + time.perf_counter() - write.t, 1)
        write.t = time.perf_counter()
        with atomic_file(path) as tmp:
            Path(tmp).write_text(json.dumps(look, indent=1) + "\n")
    write.t = t0

    plain, story = ArithmeticTask("plain"), ArithmeticTask("story")
    gsm8k = get_task("gsm8k", path=str(FIXTURES))
    sets = {"plain": (plain, plain.examples("test", args.problems)),
            "story": (story, story.examples("test", args.problems)),
            "gsm8k fixture": (gsm8k, gsm8k.split("test"))}
    run = dict(max_cot=args.max_cot_tokens, chunk=args.chunk)
    plain_stats = FamilyStats(args.max_cot_tokens)

    def save(mode, row, stats):
        look["settings"][mode] = row
        if stats is not None:  # the soft setting's rollouts are the plain family's soft rollouts
            look["families"]["plain"] = stats.result(args.problems, args.samples)
        write()

    print("six settings on plain problems", flush=True)
    settings_look(model, tok, plain, sets["plain"][1], args.samples, **run, done=look["settings"], save=save,
                  soft_stats=plain_stats)
    for name, (task, exs) in sets.items():
        if name in look["families"]:
            continue
        print(f"soft rollouts: {name} ({len(exs)} problems)", flush=True)
        look["families"][name] = family_look(model, tok, task, exs, args.samples, **run)
        write()
    if "geometry" not in look:
        print("noise and geometry", flush=True)
        look["geometry"] = geometry(model, tok, plain, sets["plain"][1][:20], **run)
        write()
    figures(look, out / "figures")
    print(f"wrote {path} ({look['seconds']} s of measurement)")


if __name__ == "__main__":
    main()
