"""PNG previews of the figures, drawn from real rollouts of a model: `python -m softviz.gallery results/figures`.

Two prompts: a typed question ("What is 17 times 3?") and a story problem of the test split, 8 rollouts each,
under hard, soft and fuzzy decoding. Writing PNG needs Chrome or Chromium (plotly's kaleido); the soft text, an
HTML view, is rendered with Playwright when it is installed. Each file is written whole (atomic rename).
The figures of training runs come from trained models: `--trained RUN` draws entropy_before_after.png (hard-sampled
CoTs of 64 test problems x 8, before and after, from RUN/final) and training_curves.png (`--curves RUN ...`, the
runs' metrics.jsonl, as `softviz curves` draws them).

    python -m softviz.gallery results/figures --trained results/matrix/runs/hard-seed0 \
        --curves results/methods/runs/{hard,soft,fuzzy,soft-grpo,multiplex}-seed0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MODES = ("hard", "soft", "fuzzy")
QUESTION = "What is 17 times 3?"


def rollouts(model_name: str | None = None, samples: int = 8, seed: int = 0) -> tuple[dict, list[str]]:
    """{mode: Trace} for the gallery's two prompts, and their gold answers."""
    from softviz import TraceConfig, generate, load_model
    from softviz.tasks import ArithmeticTask

    model, tok = load_model(model_name, device="cpu")
    task = ArithmeticTask("story")
    story = task.examples("test", 8)[7]
    prompts, golds = [task.as_prompt(QUESTION, tok), task.prompt(story, tok)], ["51", story.answer]
    traces = {}
    for mode in MODES:
        r = generate(model, tok, prompts, mode, n=samples, max_cot_tokens=64, max_answer_tokens=16, seed=seed,
                     answer_cue=task.answer_cue, trace=TraceConfig(keep_inputs=True))
        r.trace.meta["golds"] = [golds[p] for p in r.trace.meta["prompt_index"]]
        r.trace.meta["correct"] = [task.is_correct(a, g) for a, g in zip(r.answers, r.trace.meta["golds"])]
        traces[mode] = r.trace
    return traces, golds


def figures(traces: dict) -> dict:
    """{file stem: plotly Figure} for every per-trace and across-trace figure."""
    from softviz import analysis, viz

    soft, hard = traces["soft"], traces["hard"]
    story_row = soft.meta["prompt_index"].index(1)  # the first rollout of the story problem
    curves = {m: analysis.pass_at_k_curve(*analysis.correct_counts(t), ks=(1, 2, 4, 8)) for m, t in traces.items()}
    return {
        "entropy_heatmap": viz.entropy_heatmap(soft),
        "side_by_side_heatmap": viz.side_by_side(viz.entropy_heatmap, traces),
        "entropy_profiles": viz.entropy_profiles(traces),
        "mixture_topk": viz.mixture_topk(soft, story_row),
        "mixture_topk_hard": viz.mixture_topk(hard, story_row),
        "side_by_side_topk": viz.side_by_side(viz.mixture_topk, traces, rollout=story_row),
        "noise_shift": viz.noise_shift(traces["fuzzy"], story_row),
        "noise_shift_soft": viz.noise_shift(soft, story_row),
        "side_by_side_noise": viz.side_by_side(viz.noise_shift, traces, rollout=story_row),
        "diversity": viz.diversity(traces),
        "trajectory_distance_heatmap": viz.trajectory_distance_heatmap(soft),
        "projection_mode": viz.projection(traces, color_by="mode"),
        "projection_step": viz.projection(traces, color_by="step"),
        "pass_at_k": viz.pass_at_k(curves),
    }


def soft_text_png(trace, rollout: int, path: Path) -> bool:
    """The soft text of one rollout as a PNG, through a headless Chromium; False when Playwright is missing."""
    import os

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return False
    from softviz import viz
    from softviz.files import atomic_file

    html = f"<html><body style='margin:12px;width:900px'>{viz.soft_text_html(trace, rollout)}</body></html>"
    chromium = os.environ.get("BROWSER_PATH", "/usr/bin/chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium if Path(chromium).exists() else None,
                                    args=["--headless", "--no-sandbox"])
        page = browser.new_page(viewport={"width": 930, "height": 400})
        page.set_content(html)
        with atomic_file(path) as tmp:
            page.screenshot(path=str(tmp), full_page=True, type="png")
        browser.close()
    return True


def before_after(run: Path, out: Path, problems: int = 64, samples: int = 8):
    """entropy_before_after.png: hard-sampled CoTs of the starting model and of `run`'s final weights."""
    from softviz import TraceConfig, generate, load_model, viz
    from softviz.files import atomic_file
    from softviz.tasks import get_task
    from softviz.train import FINAL

    cfg = json.loads((run / "run.json").read_text())
    task = get_task(cfg["config"]["task"])
    exs = task.examples("test", problems)
    traces = {}
    for state, path in (("before", cfg.get("model")), ("after", run / FINAL)):
        model, tok = load_model(None if path in (None, "embedded") else path, device="cpu")
        r = generate(model, tok, [task.prompt(e, tok) for e in exs], "hard", n=samples, seed=0, max_cot_tokens=64,
                     max_answer_tokens=16, answer_cue=task.answer_cue, trace=TraceConfig(top_k=1, nearest_k=0))
        traces[state] = {"hard": r.trace}
    steps = cfg["config"]["steps"]
    fig = viz.entropy_before_after(traces["before"], traces["after"],
                                   labels=("before RL", f"after {steps} steps of {cfg['config']['mode']} RL"))
    with atomic_file(out / "entropy_before_after.png") as tmp:
        fig.write_image(str(tmp), format="png", width=900, height=520, scale=2)


def main(argv=None) -> None:
    from softviz.files import atomic_file, make_folder
    from softviz.models import source_digest

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder for the PNG files")
    ap.add_argument("--model", default=None, help="model folder or Hub id (default: the embedded model)")
    ap.add_argument("--trained", type=Path, default=None, help="a `softviz train` run folder: entropy_before_after.png")
    ap.add_argument("--curves", type=Path, nargs="+", default=None, help="run folders: training_curves.png")
    args = ap.parse_args(argv)
    out = make_folder(args.out)
    if args.trained or args.curves:  # only the training figures
        if args.trained:
            before_after(args.trained, out)
        if args.curves:
            from softviz.cli import main as cli

            cli(["curves", *map(str, args.curves), "--out", str(out / "training_curves.png"), "--title",
                 f"RL on the embedded model: {', '.join(r.name for r in args.curves)}"])
        print(f"wrote {out}")
        return
    traces, _ = rollouts(args.model)
    for stem, fig in figures(traces).items():
        width = 1500 if stem.startswith("side_by_side") else 950
        with atomic_file(out / f"{stem}.png") as tmp:
            fig.write_image(str(tmp), format="png", width=width, height=520, scale=1)
    row = traces["soft"].meta["prompt_index"].index(1)
    wrote_text = soft_text_png(traces["soft"], row, out / "soft_text.png")
    info = {"model": args.model or "embedded", "prompts": [QUESTION, "test split, story family, index 7"],
            "model_sha256": source_digest(args.model), "soft_text": wrote_text}
    with atomic_file(out / "gallery.json") as tmp:
        Path(tmp).write_text(json.dumps(info, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
