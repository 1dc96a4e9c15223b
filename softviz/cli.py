"""The `softviz` command: demo | compare | eval | matrix | train | app | curves. `softviz <command> -h` for help."""

from __future__ import annotations

import argparse
import collections
import os
import signal
import sys
import threading

from softviz.config import PRESETS, Mode


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model folder or Hub id (default: the embedded model)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--task", default="arithmetic", help="task name (default: the embedded arithmetic task)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-cot-tokens", type=int, default=96)
    p.add_argument("--max-answer-tokens", type=int, default=16)


def _modes(text: str) -> list[Mode]:
    return [Mode.preset(m) for m in text.split(",") if m.strip()]


def _load(args):
    from softviz.models import load_model
    from softviz.tasks import get_task

    model, tok = load_model(args.model, device=args.device)
    return model, tok, get_task(args.task)


def cmd_demo(args) -> None:
    """The embedded model answers sample problems of its task, then its accuracy on the test split."""
    from softviz.evaluate import evaluate
    from softviz.generate import generate

    model, tok, task = _load(args)
    mode = Mode.preset(args.mode)
    examples = task.examples("test", args.show)
    r = generate(model, tok, [task.prompt(e) for e in examples], mode, max_cot_tokens=args.max_cot_tokens,
                 max_answer_tokens=args.max_answer_tokens, seed=args.seed, answer_cue=task.answer_cue)
    for i, ex in enumerate(examples):
        ok = task.is_correct(r.answers[i], ex.answer)
        print(f"\n[{i + 1}] {ex.question}\n    CoT ({mode.label}): {r.cot_texts[i].strip()}\n"
              f"    answer: {r.answers[i]}   gold: {ex.answer}   {'correct' if ok else 'wrong'}")
    res = evaluate(model, tok, task, task.examples("test", args.problems), mode, max_cot_tokens=args.max_cot_tokens,
                   max_answer_tokens=args.max_answer_tokens, seed=args.seed)
    print(f"\naccuracy on {args.problems} test problems ({mode.label}): {100 * res.pass_at[1]:.1f}%")


def cmd_compare(args) -> None:
    """Side-by-side summary of several modes on one prompt."""
    from softviz.generate import generate

    model, tok, task = _load(args)
    gold = None
    if args.prompt is not None:
        prompt = args.prompt if "Assistant:" in args.prompt else task.prompt(args.prompt)
    else:
        ex = task.examples("test", args.example + 1)[args.example]
        prompt, gold = task.prompt(ex), ex.answer
    print(f"prompt: {prompt}" + (f"\ngold answer: {gold}" if gold is not None else ""))
    rows = []
    for mode in _modes(args.modes):
        r = generate(model, tok, [prompt], mode, n=args.n, max_cot_tokens=args.max_cot_tokens,
                     max_answer_tokens=args.max_answer_tokens, seed=args.seed, answer_cue=task.answer_cue)
        lengths = r.cot_lengths.clamp_min(1)
        mean_H = float((r.cot_entropy.sum(1) / lengths).mean())
        counts = collections.Counter(a if a is not None else "(none)" for a in r.answers)
        acc = (sum(task.is_correct(a, gold) for a in r.answers) / len(r.answers)) if gold is not None else None
        rows.append((mode.label, acc, mean_H, len(counts), float(r.cot_lengths.float().mean()), counts))
    width = max(len(r[0]) for r in rows)
    print(f"\n{'mode':<{width}}  {'accuracy':>8}  {'entropy':>7}  {'distinct':>8}  {'CoT len':>7}  answers (count)")
    for label, acc, H, distinct, L, counts in rows:
        acc_s = f"{100 * acc:7.1f}%" if acc is not None else "       -"
        ans = ", ".join(f"{a} x{c}" for a, c in counts.most_common(6))
        print(f"{label:<{width}}  {acc_s}  {H:7.3f}  {distinct:8d}  {L:7.1f}  {ans}")


def cmd_eval(args) -> None:
    """pass@k of modes on a task split (the embedded model's README numbers come from here)."""
    import json

    from softviz.evaluate import evaluate, solution_nll
    from softviz.files import atomic_file
    from softviz.tasks import get_task

    model, tok, task = _load(args)
    examples = task.examples(args.split, args.problems)
    ks = sorted({1, *[int(k) for k in args.k.split(",")]})
    results = []
    for mode in _modes(args.modes):
        n = 1 if mode.is_greedy else args.n
        res = evaluate(model, tok, task, examples, mode, n=n, ks=ks, max_cot_tokens=args.max_cot_tokens,
                       max_answer_tokens=args.max_answer_tokens, seed=args.seed, entropy_profile=True)
        print(res.summary(), flush=True)
        results.append({"mode": res.mode, "n": n, "pass_at": res.pass_at, "boxed_rate": res.boxed_rate,
                        "mean_cot_length": res.mean_cot_length, "seconds": round(res.seconds, 1),
                        "entropy_by_position": [round(h, 5) for h in res.entropy_by_position]})
    report = {"task": args.task, "split": args.split, "problems": args.problems, "results": results}
    if args.ood_task:
        ood = get_task(args.ood_task)
        report["ood_nll"] = nll = solution_nll(model, tok, ood, ood.examples("test", args.problems))
        print(f"NLL per token of the correct solution on {args.ood_task} ({nll['problems']} problems): "
              f"{nll['solution']:.3f} (whole solution), {nll['answer']:.3f} (answer after the cue)")
    if args.json:
        from pathlib import Path
        with atomic_file(Path(args.json)) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=2) + "\n")


def cmd_matrix(args) -> None:
    """The paper's train x inference table: train hard/soft/fuzzy models, evaluate six settings (resumable)."""
    import dataclasses

    from softviz.matrix import MatrixConfig, markdown_table, run_matrix

    fields = {f.name for f in dataclasses.fields(MatrixConfig)}
    kw = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if args.quick:  # a minutes-long check of the whole pipeline, not a result
        kw = {"seeds": (0,), "steps": 4, "eval_every": 2, "eval_size": 16, "problems": 8, "samples": 4,
              "ks": (1, 4), "ood_problems": 8, **kw}
    summary = run_matrix(args.out, MatrixConfig(**kw), model=args.model, device=args.device)
    print(markdown_table(summary))
    print(f"wrote {args.out}/matrix.json and {args.out}/table.md")


def cmd_app(args) -> None:
    """The Gradio app: compare modes side by side, fine-tune live, explore traces (`softviz app -h` for its flags)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "app" / "app.py"
    if not path.is_file():
        raise ValueError(f"the app is not here: {path} is missing (it ships with the source repository, not the wheel)")
    spec = importlib.util.spec_from_file_location("softviz_app", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["softviz_app"] = module  # its dataclasses look the module up while it executes
    spec.loader.exec_module(module)
    module.main(args.app_args)


def cmd_train(args) -> None:
    """RL fine-tuning (RLOO or GRPO) with hard, soft or fuzzy CoTs; prints one line per step."""
    import dataclasses
    import json

    from softviz.config import RLConfig
    from softviz.models import load_model
    from softviz.train import train

    _apply_config_file(args)
    fields = {f.name for f in dataclasses.fields(RLConfig)}
    cfg = RLConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    model, tok = load_model(args.model, device=args.device)
    main_process = int(os.environ.get("RANK", "0")) == 0  # under `accelerate launch`, one process prints
    if main_process:
        print(f"RL run: {json.dumps(dataclasses.asdict(cfg))}", flush=True)
    for m in train(model, tok, cfg, output_dir=args.output_dir, resume=not args.restart, progress=not args.quiet):
        if main_process and (args.quiet or "val/greedy_accuracy" in m):
            keys = ["step", "reward", "accuracy", "entropy", "loss", "grad_norm", "val/greedy_accuracy", "step_time"]
            print(json.dumps({k: round(m[k], 4) if isinstance(m[k], float) else m[k] for k in keys if k in m}),
                  flush=True)


def cmd_curves(args) -> None:
    """Plot training curves of runs (their metrics.jsonl) to an .html or .png file."""
    import json
    from pathlib import Path

    from softviz.viz import training_curves

    runs = {}
    for folder in args.runs:
        path = Path(folder) / "metrics.jsonl"
        if not path.is_file():
            raise ValueError(f"{folder} has no metrics.jsonl: pass run folders written by `softviz train --output-dir`")
        runs[Path(folder).name] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    fig = training_curves(runs, title=args.title)
    if args.out.endswith(".html"):
        fig.write_html(args.out, include_plotlyjs=True)
    else:
        fig.write_image(args.out, scale=2)  # needs Chrome/Chromium (kaleido); set BROWSER_PATH if not found
    print(f"wrote {args.out}")


def _apply_config_file(args) -> None:
    """Fill the train flags not given on the command line from `--config FILE`: a JSON object of RLConfig
    fields plus an optional "model" (configs/ holds the paper's settings). Flags given on the command line win."""
    import dataclasses
    import json
    from pathlib import Path

    from softviz.config import RLConfig

    if args.config is None:
        return
    try:
        settings = json.loads(Path(args.config).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--config {args.config}: {err}") from None
    if not isinstance(settings, dict):
        raise ValueError(f"--config {args.config}: expected a JSON object of settings")
    allowed = ["model", *(f.name for f in dataclasses.fields(RLConfig))]
    for key, value in settings.items():
        if key not in allowed:
            raise ValueError(f"--config {args.config}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
        if getattr(args, key) is None:  # every train flag defaults to None, so None means "not given"
            setattr(args, key, value)


def _add_rl_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per RLConfig field (the dataclass is the single source of truth for names and defaults)."""
    import dataclasses

    from softviz.config import RLConfig

    for f in dataclasses.fields(RLConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "trace_steps":
            p.add_argument(flag, type=lambda s: tuple(int(x) for x in s.split(",") if x), default=None,
                           help="comma-separated steps whose rollouts are saved as Traces")
        elif f.name == "epsilon":
            p.add_argument(flag, type=float, default=None, help="PPO-style ratio clip (default: none)")
        elif f.name == "noise_scale":
            p.add_argument(flag, type=float, default=None, help="γ of soft/fuzzy rollouts (default: the preset's 0.33)")
        elif isinstance(f.default, bool):
            p.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=None,
                           help=f"(default: {f.default})")
        else:
            p.add_argument(flag, type=type(f.default), default=None, help=f"(default: {f.default})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="softviz", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    modes_help = f"comma-separated presets from: {', '.join(PRESETS)}"

    p = sub.add_parser("demo", help=cmd_demo.__doc__)
    _common(p)
    p.add_argument("--mode", default="hard-greedy", help=f"one preset: {', '.join(PRESETS)}")
    p.add_argument("--show", type=int, default=5, help="problems to print")
    p.add_argument("--problems", type=int, default=200, help="test problems for the accuracy")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("compare", help=cmd_compare.__doc__)
    _common(p)
    p.add_argument("--prompt", default=None, help="a question or a full prompt (default: a test problem)")
    p.add_argument("--example", type=int, default=0, help="index of the test problem when no --prompt")
    p.add_argument("--modes", default="hard,soft,fuzzy", help=modes_help)
    p.add_argument("-n", type=int, default=8, help="rollouts per mode")
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser("eval", help=cmd_eval.__doc__)
    _common(p)
    p.add_argument("--modes", default="hard-greedy,hard", help=modes_help)
    p.add_argument("--split", default="test")
    p.add_argument("--problems", type=int, default=200)
    p.add_argument("-n", type=int, default=32, help="samples per problem for sampled modes")
    p.add_argument("-k", default="1,32", help="k values for pass@k")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("--ood-task", default=None,
                   help="also the per-token NLL of the correct solutions of this task (e.g. arithmetic-puzzle)")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("matrix", help=cmd_matrix.__doc__)
    p.add_argument("--out", default="results/matrix", help="output folder (resumed when it exists)")
    p.add_argument("--model", default=None, help="base model folder or Hub id (default: the embedded model)")
    p.add_argument("--device", default=None)
    p.add_argument("--task", default=None, help="(default: arithmetic)")
    p.add_argument("--seeds", type=lambda s: tuple(int(x) for x in s.split(",")), default=None, help="(default: 0,1; the README's table used 0,1,2)")
    p.add_argument("--steps", type=int, default=None, help="RL steps per trained model (default: 200)")
    p.add_argument("--problems", type=int, default=None, help="test problems per cell (default: 100)")
    p.add_argument("--samples", type=int, default=None, help="samples per problem when sampling (default: 32)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the pipeline in a few minutes")
    p.set_defaults(fn=cmd_matrix)

    p = sub.add_parser("train", help=cmd_train.__doc__)
    p.add_argument("--model", default=None, help="model folder or Hub id (default: the embedded model)")
    p.add_argument("--device", default=None)
    p.add_argument("--output-dir", default=None, help="checkpoints, best/, metrics.jsonl, traces/ (resumed if present)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in --output-dir")
    p.add_argument("--quiet", action="store_true", help="no progress bar; print every step")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="JSON file of RLConfig fields and \"model\" (see configs/); flags given here override it")
    _add_rl_arguments(p)
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("app", help=cmd_app.__doc__, add_help=False)  # -h goes to the app's own parser
    p.set_defaults(fn=cmd_app)

    p = sub.add_parser("curves", help=cmd_curves.__doc__)
    p.add_argument("runs", nargs="+", help="run folders (each with metrics.jsonl)")
    p.add_argument("--out", default="curves.html", help="output .html or .png")
    p.add_argument("--title", default="RL fine-tuning on the embedded task")
    p.set_defaults(fn=cmd_curves)

    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "app":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.app_args = extra
    # SIGTERM (a scheduler, `kill`) ends the run like Ctrl-C: files are written whole, so the last
    # checkpoint stays valid and the same command resumes from it
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        args.fn(args)
    except ValueError as err:  # user-facing errors: say what is wrong, no stack trace
        print(f"softviz {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = " Run the same command again to resume from the last checkpoint." if args.command in ("train", "matrix") else ""
        print(f"softviz {args.command}: interrupted.{hint}", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _terminate(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
