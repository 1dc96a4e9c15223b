"""The `softviz` command: demo | compare | eval | matrix | methods | train | app | curves. `softviz <command> -h` for help."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from softviz.cli_args import (_add_rl_arguments, _apply_config_file, _check_output, _error_message, _finite_float,
                              _int_at_least, _int_list, _mode, _mode_list, _non_negative_int, _one_line, _Parser,
                              _positive_int)
from softviz.config import PRESETS

# What a user can get wrong (a value, a path, a missing file): one line `softviz <cmd>: error: ...`, exit 2.
# Any other exception is a bug in softviz and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, FileExistsError, PermissionError,
               IsADirectoryError)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model folder or Hub id (default: the embedded model)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps (default: cuda when available)")
    p.add_argument("--task", default="arithmetic", help="task name (default: the embedded arithmetic task)")
    p.add_argument("--chat-template", default="auto", choices=("auto", "on", "off"),
                   help="prompt an instruct model through its chat template: auto = on for the arithmetic tasks, "
                        "off for gsm8k and math (the paper's raw prompt)")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--max-cot-tokens", type=_positive_int, default=96)
    p.add_argument("--max-answer-tokens", type=_positive_int, default=16)


def _load_model(args):
    from softviz.models import load_model

    return load_model(args.model, device=args.device)


def cmd_demo(args) -> None:
    """The embedded model answers sample problems of its task, then its accuracy on the test split."""
    from softviz.evaluate import evaluate
    from softviz.generate import generate
    from softviz.tasks import get_task

    task, mode = get_task(args.task, chat_template=args.chat_template), args.mode
    examples = task.examples("test", args.show)
    test = task.examples("test", args.problems)
    model, tok = _load_model(args)
    r = generate(model, tok, [task.prompt(e, tok) for e in examples], mode, max_cot_tokens=args.max_cot_tokens,
                 max_answer_tokens=args.max_answer_tokens, seed=args.seed, answer_cue=task.answer_cue)
    for i, ex in enumerate(examples):
        ok = task.is_correct(r.answers[i], ex.answer)
        print(f"\n[{i + 1}] {ex.question}\n    CoT ({mode.label}): {r.cot_texts[i].strip()}\n"
              f"    answer: {r.answers[i]}   gold: {ex.answer}   {'correct' if ok else 'wrong'}")
    res = evaluate(model, tok, task, test, mode, max_cot_tokens=args.max_cot_tokens,
                   max_answer_tokens=args.max_answer_tokens, seed=args.seed)
    print(f"\naccuracy on {args.problems} test problems ({mode.label}): {100 * res.pass_at[1]:.1f}%")


def cmd_compare(args) -> None:
    """Side-by-side summary of several modes on one prompt (softviz.compare, as the app's Compare tab)."""
    from softviz.compare import compare_modes
    from softviz.config import TraceConfig
    from softviz.export import write_comparison
    from softviz.files import make_folder
    from softviz.tasks import get_task

    task, gold = get_task(args.task, chat_template=args.chat_template), None
    if args.prompt is not None:
        if not args.prompt.strip():
            raise ValueError("--prompt is empty: give a question or a full prompt")
        text = args.prompt
    else:
        try:
            [ex] = task.examples("test", 1, start=args.example)
        except ValueError as err:  # past the end of a real test set
            raise ValueError(f"--example {args.example}: {err}") from None
        text, gold = ex.question, ex.answer
    for flag, path, suffixes in (("--html", args.html, (".html", ".htm")), ("--json", args.json, (".json",))):
        if path is not None:
            _check_output(flag, path, folder=False)
            if Path(path).suffix.lower() not in suffixes:
                raise ValueError(f"{flag} {path}: the file name must end in {' or '.join(suffixes)}")
    if args.save_trace is not None:
        _check_output("--save-trace", args.save_trace, folder=True)
    model, tok = _load_model(args)
    keep = bool(args.html or args.save_trace)
    result = compare_modes(model, tok, task, text, args.modes, n=args.n, gold=gold, max_cot_tokens=args.max_cot_tokens,
                           max_answer_tokens=args.max_answer_tokens, seed=args.seed,
                           trace=TraceConfig(top_k=5, nearest_k=3) if keep else False)
    print(f"prompt: {result.prompt}" + (f"\ngold answer: {gold}" if gold is not None else ""))
    width = max(len(s.label) for s in result.summaries)
    print(f"\n{'mode':<{width}}  {'accuracy':>8}  {'entropy':>7}  {'distinct':>8}  {'CoT len':>7}  answers (count)")
    for s in result.summaries:
        acc_s = f"{100 * s.accuracy:7.1f}%" if s.accuracy is not None else "       -"
        ans = ", ".join(f"{a} x{c}" for a, c in s.answer_counts.most_common(6))
        print(f"{s.label:<{width}}  {acc_s}  {s.mean_entropy:7.3f}  {s.distinct_answers:8d}  {s.mean_cot_length:7.1f}  {ans}")
    for s in result.summaries:
        r = s.rollouts
        print(f"\n{s.label} (CoT τ {r.mode.cot_temperature:g}, σ {r.sigma:.4f}): each rollout's CoT, then its answer")
        for b in range(len(r)):
            mark = "" if gold is None else ("  correct" if task.is_correct(r.answers[b], gold) else "  wrong")
            print(f"  [{b}] {r.cot_texts[b].strip()}\n      -> {r.answers[b]}{mark}  (CoT {int(r.cot_lengths[b])} tokens, "
                  f"ended by {r.cot_end[b]})")
    settings = {"model": args.model or "embedded", "task": args.task, "modes": [s.label for s in result.summaries],
                "n": args.n, "seed": args.seed, "max_cot_tokens": args.max_cot_tokens,
                "max_answer_tokens": args.max_answer_tokens}
    for path in (args.html, args.json):
        if path is not None:
            print(f"wrote {write_comparison(result, path, settings)}")
    if args.save_trace is not None:
        folder = make_folder(args.save_trace)
        for i, s in enumerate(result.summaries):
            name = f"{i}_{''.join(c if c.isalnum() or c in '-_.' else '_' for c in s.label)}.safetensors"
            print(f"wrote {s.rollouts.trace.save(folder / name)}")


def cmd_plan(args) -> None:
    """Memory per process of RL training for a model, from its config alone (DDP and FSDP)."""
    import dataclasses

    from softviz.cli_args import _read_config_file
    from softviz.config import RLConfig
    from softviz.plan import STRATEGIES, fits, format_plan, load_architecture, memory_plan

    settings = dataclasses.asdict(RLConfig())
    if args.config:
        settings.update({k: v for k, v in _read_config_file(args.config).items() if k != "model"})
    for name in ("prompts_per_step", "group_size", "max_cot_tokens", "max_answer_tokens", "micro_batch"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    arch = load_architecture(args.model)
    for strategy in (STRATEGIES if args.strategy == "both" else [args.strategy]):
        plan = memory_plan(arch, prompts_per_step=settings["prompts_per_step"], group_size=settings["group_size"],
                           max_cot_tokens=settings["max_cot_tokens"], max_answer_tokens=settings["max_answer_tokens"],
                           micro_batch=settings["micro_batch"], prompt_tokens=args.prompt_tokens,
                           processes=args.processes, strategy=strategy, dtype=args.dtype, beta=settings["beta"],
                           optimizer_dtype=args.optimizer_dtype)
        print(format_plan(plan))
        if args.device_gb:
            print(f"  {'fits' if fits(plan, args.device_gb) else 'does not fit'} in {args.device_gb:g} GB per device "
                  "(90% usable)")


def cmd_eval(args) -> None:
    """pass@k of modes on a task split (the embedded model's numbers in docs/results.md come from here)."""
    import json

    from softviz.evaluate import evaluate, solution_nll
    from softviz.files import atomic_file
    from softviz.tasks import get_task

    # pass@k needs k <= n samples per problem; greedy modes draw one sample (all would be equal): pass@1 only
    ks = sorted({1, *(args.k or (args.n,))})
    if ks[-1] > args.n and not all(m.is_greedy for m in args.modes):
        raise ValueError(f"-k {ks[-1]} is larger than -n {args.n}: pass@k needs k <= n samples per problem; "
                         "raise -n or lower -k")
    if args.json:
        _check_output("--json", args.json, folder=False)
    task = get_task(args.task, chat_template=args.chat_template)
    examples = task.examples(args.split, args.problems)
    ood = get_task(args.ood_task) if args.ood_task else None
    ood_examples = ood.examples("test", args.problems) if ood else None
    model, tok = _load_model(args)
    results = []
    for mode in args.modes:
        n = 1 if mode.is_greedy else args.n
        res = evaluate(model, tok, task, examples, mode, n=n, ks=[1] if mode.is_greedy else ks,
                       max_cot_tokens=args.max_cot_tokens,
                       max_answer_tokens=args.max_answer_tokens, seed=args.seed, entropy_profile=True)
        print(res.summary(), flush=True)
        results.append({"mode": res.mode, "n": n, "pass_at": res.pass_at, "boxed_rate": res.boxed_rate,
                        "cue_rate": res.cue_rate, "mean_cot_length": res.mean_cot_length, "seconds": round(res.seconds, 1),
                        "entropy_by_position": [round(h, 5) for h in res.entropy_by_position]})
    from softviz.models import model_fingerprint

    report = {"model": args.model or "embedded", "model_sha256": model_fingerprint(model), "task": args.task,
              "chat_template": args.chat_template, "split": args.split, "problems": args.problems,
              "max_cot_tokens": args.max_cot_tokens, "results": results}
    if ood is not None:
        report["ood_nll"] = nll = solution_nll(model, tok, ood, ood_examples)
        print(f"NLL per token of the correct solution on {args.ood_task} ({nll['problems']} problems): "
              f"{nll['solution']:.3f} (whole solution), {nll['answer']:.3f} (answer after the cue)")
    if args.json:
        with atomic_file(Path(args.json)) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=2) + "\n")


def cmd_matrix(args) -> None:
    """The paper's train x inference table: train hard/soft/fuzzy models, evaluate six settings (resumable)."""
    import dataclasses

    from softviz.matrix import MatrixConfig, markdown_table, run_matrix
    from softviz.tasks import get_task

    _check_output("--out", args.out, folder=True)
    if args.task is not None:  # before the output folder is created
        get_task(args.task)
    fields = {f.name for f in dataclasses.fields(MatrixConfig)}
    kw = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if args.quick:  # a minutes-long check of the whole pipeline, not a result
        kw = {"seeds": (0,), "steps": 4, "eval_every": 2, "eval_size": 16, "problems": 8, "samples": 4,
              "ks": (1, 4), "ood_problems": 8, **kw}
    summary = run_matrix(args.out, MatrixConfig(**kw), model=args.model, device=args.device)
    print(markdown_table(summary))
    print(f"wrote {args.out}/matrix.json and {args.out}/table.md")


def _trainable_list(text: str) -> tuple[str, ...]:
    """Comma-separated trainable preset names (softviz.policies.trainable_presets)."""
    from softviz.policies import trainable_presets

    names = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    allowed = trainable_presets()
    bad = [m for m in names if m not in allowed]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{', '.join(bad) or repr(text)}: not trainable presets; choose from: "
                                         f"{', '.join(allowed)}")
    return names


def cmd_methods(args) -> None:
    """Soft-token RL methods side by side (hard, soft, fuzzy, soft-grpo, multiplex): learning rate chosen on
    validation, learning curves over seeds, gradient signal, test pass@k and CoT entropy (resumable)."""
    from softviz.methods import MethodsConfig, markdown_table, run_methods
    from softviz.tasks import get_task

    _check_output("--out", args.out, folder=True)
    if args.task is not None:
        get_task(args.task)
    kw = {k: v for k, v in (("task", args.task), ("seeds", args.seeds), ("steps", args.steps),
                            ("methods", args.methods), ("problems", args.problems)) if v is not None}
    if args.quick:  # a minutes-long check of the whole pipeline, not a result
        kw = {"seeds": (0,), "steps": 4, "sweep_steps": 2, "eval_every": 2, "eval_size": 8, "problems": 4,
              "samples": 4, "ks": (1, 4), "snr_estimates": 2, "snr_prompts": 2, **kw}
        if "methods" in kw:
            kw["lr_grid"] = tuple((m, (1e-4,)) for m in kw["methods"])
        else:
            kw["lr_grid"] = tuple((m, (1e-4,)) for m in MethodsConfig().methods)
    summary = run_methods(args.out, MethodsConfig(**kw), model=args.model, device=args.device)
    print(markdown_table(summary))
    print(f"wrote {args.out}/methods.json, {args.out}/table.md and {args.out}/figures/")


def cmd_app(args) -> None:
    """The Gradio app: compare modes side by side, fine-tune live, explore traces (`softviz app -h` for its flags)."""
    try:
        from softviz.app import main as app_main
    except ModuleNotFoundError as err:
        if err.name not in ("gradio", "gradio_client"):
            raise
        raise ValueError(f"the app needs {err.name}: pip install 'softviz[app]'") from None
    app_main(args.app_args)


def cmd_train(args) -> None:
    """RL fine-tuning (RLOO or GRPO) with hard, soft or fuzzy CoTs; prints one line per step."""
    import dataclasses
    import json

    from softviz.config import RLConfig
    from softviz.models import load_model
    from softviz.tasks import get_task
    from softviz.train import train

    _apply_config_file(args)
    if args.output_dir is not None:
        _check_output("--output-dir", args.output_dir, folder=True)
    fields = {f.name for f in dataclasses.fields(RLConfig)}
    cfg = RLConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    get_task(cfg.task)  # an unknown task fails now, not after the model has loaded
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        from softviz.parallel import join_group, leave_group_and_exit

        join_group()
    model, tok = load_model(args.model, device=args.device)
    main_process = int(os.environ.get("RANK", "0")) == 0  # under `accelerate launch`, one process prints
    if main_process:
        print(f"RL run: {json.dumps(dataclasses.asdict(cfg))}", flush=True)
    for m in train(model, tok, cfg, output_dir=args.output_dir, resume=not args.restart, progress=not args.quiet):
        if main_process and (args.quiet or "val/greedy_accuracy" in m):
            keys = ["step", "reward", "accuracy", "entropy", "loss", "grad_norm", "val/greedy_accuracy", "step_time"]
            print(json.dumps({k: round(m[k], 4) if isinstance(m[k], float) else m[k] for k in keys if k in m}),
                  flush=True)
    if main_process and args.output_dir is not None:
        from softviz.train import BEST, FINAL

        out = Path(args.output_dir)
        best = f"; best validated: {out / BEST}" if (out / BEST).is_dir() else ""
        print(f"model after the last step: {out / FINAL}{best} (softviz eval --model {out / FINAL})", flush=True)
    if distributed:
        leave_group_and_exit()


IMAGE_FORMATS = ("png", "jpg", "jpeg", "webp", "svg", "pdf")  # what plotly's write_image can write


def cmd_curves(args) -> None:
    """Plot training curves of runs (their metrics.jsonl) to an .html or image (.png, .svg, ...) file."""
    from softviz.viz import training_curves

    suffix = Path(args.out).suffix.lower().lstrip(".")
    if suffix not in ("html", *IMAGE_FORMATS):
        raise ValueError(f"--out {args.out}: the name must end in .html or an image format "
                         f"({', '.join('.' + f for f in IMAGE_FORMATS)})")
    _check_output("--out", args.out, folder=False)
    names = [Path(folder).absolute().name for folder in args.runs]
    runs = {}
    for folder, name in zip(args.runs, names):
        path = Path(folder) / "metrics.jsonl"
        if not path.is_file():
            raise ValueError(f"{folder} has no metrics.jsonl: pass run folders written by `softviz train --output-dir`")
        runs[name if names.count(name) == 1 else folder] = _read_metrics(path)  # a/soft and b/soft: full paths
    fig = training_curves(runs, title=args.title)
    if suffix == "html":
        fig.write_html(args.out, include_plotlyjs=True)
    else:
        try:
            fig.write_image(args.out, scale=2)
        except RuntimeError as err:  # kaleido renders images with Chrome/Chromium
            if type(err).__module__.split(".")[0] not in ("kaleido", "choreographer"):
                raise
            raise ValueError(f"--out {args.out}: writing an image needs Chrome or Chromium ({_one_line(err)}); "
                             "install one (`plotly_get_chrome`), set BROWSER_PATH, or write an .html") from None
    print(f"wrote {args.out}")


def _read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl. A torn last line (a run killed mid-write) is skipped with a note; a torn
    line anywhere else means the file is damaged, and the error names the line."""
    import json

    lines = [(i, line) for i, line in enumerate(path.read_bytes().decode("utf-8", "replace").splitlines(), 1)
             if line.strip()]
    records = []
    for lineno, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if lineno == lines[-1][0]:
                print(f"softviz curves: note: skipped the torn last line {lineno} of {path} (a run stopped "
                      "mid-write)", file=sys.stderr)
                break
            raise ValueError(f"{path}, line {lineno}: not valid JSON ({err.msg} at column {err.colno}); the file "
                             "is damaged: delete or repair that line") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {lineno}: expected a JSON object of metrics, got {line[:40]!r}")
        records.append(record)
    return records


def main(argv=None) -> int:
    parser = _Parser(prog="softviz", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    modes_help = f"comma-separated presets from: {', '.join(PRESETS)}"

    p = sub.add_parser("demo", help=cmd_demo.__doc__)
    _common(p)
    p.add_argument("--mode", type=_mode, default="hard-greedy", help=f"one preset: {', '.join(PRESETS)}")
    p.add_argument("--show", type=_positive_int, default=5, help="problems to print")
    p.add_argument("--problems", type=_positive_int, default=200, help="test problems for the accuracy")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("compare", help=cmd_compare.__doc__)
    _common(p)
    p.add_argument("--prompt", default=None, help="a question or a full prompt (default: a test problem)")
    p.add_argument("--example", type=_non_negative_int, default=0, help="index of the test problem when no --prompt")
    p.add_argument("--modes", type=_mode_list, default="hard,soft,fuzzy", help=modes_help)
    p.add_argument("-n", type=_positive_int, default=8, help="rollouts per mode")
    p.add_argument("--html", default=None, help="write the comparison as one HTML page that opens offline "
                   "(figures, every rollout's soft text, settings)")
    p.add_argument("--json", default=None, help="write the comparison (every rollout, settings) as JSON")
    p.add_argument("--save-trace", default=None, metavar="FOLDER",
                   help="save each mode's Trace as FOLDER/<i>_<mode>.safetensors (softviz.Trace.load reads it)")
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser("eval", help=cmd_eval.__doc__)
    _common(p)
    p.add_argument("--modes", type=_mode_list, default="hard-greedy,hard", help=modes_help)
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument("--problems", type=_positive_int, default=200)
    p.add_argument("-n", type=_positive_int, default=32, help="samples per problem for sampled modes")
    p.add_argument("-k", type=_int_list(1), default=None,
                   help="comma-separated k values for pass@k, each <= n (default: 1 and n); greedy modes draw "
                        "one sample and report pass@1 only")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("--ood-task", default=None,
                   help="also the per-token NLL of the correct solutions of this task (e.g. arithmetic-puzzle)")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("matrix", help=cmd_matrix.__doc__)
    p.add_argument("--out", default="results/matrix", help="output folder (resumed when it exists)")
    p.add_argument("--model", default=None, help="base model folder or Hub id (default: the embedded model)")
    p.add_argument("--device", default=None)
    p.add_argument("--task", default=None, help="(default: arithmetic)")
    p.add_argument("--seeds", type=_int_list(0), default=None, help="(default: 0,1; docs/results.md used 0,1,2)")
    p.add_argument("--steps", type=_positive_int, default=None, help="RL steps per trained model (default: 200)")
    p.add_argument("--problems", type=_positive_int, default=None, help="test problems per cell (default: 100)")
    p.add_argument("--samples", type=_positive_int, default=None,
                   help="samples per problem when sampling (default: 32)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the pipeline in a few minutes")
    p.set_defaults(fn=cmd_matrix)

    p = sub.add_parser("methods", help=cmd_methods.__doc__)
    p.add_argument("--out", default="results/methods", help="output folder (resumed when it exists)")
    p.add_argument("--model", default=None, help="base model folder or Hub id (default: the embedded model)")
    p.add_argument("--device", default=None)
    p.add_argument("--task", default=None, help="(default: arithmetic)")
    p.add_argument("--methods", type=_trainable_list, default=None,
                   help="comma-separated trainable presets (default: hard,soft,fuzzy,soft-grpo,multiplex)")
    p.add_argument("--seeds", type=_int_list(0), default=None, help="(default: 0,1,2; more may be added later)")
    p.add_argument("--steps", type=_positive_int, default=None, help="RL steps per run (default: 300)")
    p.add_argument("--problems", type=_positive_int, default=None, help="test problems per model (default: 200)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the pipeline in a few minutes")
    p.set_defaults(fn=cmd_methods)

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

    p = sub.add_parser("plan", help=cmd_plan.__doc__)
    p.add_argument("--model", required=True, help="config.json, model folder, shipped architecture name (configs/"
                   "architectures), 'embedded', 'smollm2', or a Hub id when online")
    p.add_argument("--processes", type=_int_at_least(1), default=1)
    p.add_argument("--strategy", choices=["ddp", "fsdp", "both"], default="both")
    p.add_argument("--config", default=None, metavar="FILE", help="an RL config (configs/*.json) for the batch")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    p.add_argument("--optimizer-dtype", choices=["bfloat16", "float16", "float32"], default=None,
                   help="AdamW's moments (default: the weights' dtype, as softviz trains); float32 adds a master copy")
    p.add_argument("--prompt-tokens", type=_int_at_least(1), default=256, help="longest prompt (default 256)")
    p.add_argument("--device-gb", type=_finite_float, default=None, help="say whether the peak fits this memory")
    for name in ("prompts-per-step", "group-size", "max-cot-tokens", "max-answer-tokens", "micro-batch"):
        p.add_argument(f"--{name}", type=_int_at_least(1), default=None, help="overrides the config's")
    p.set_defaults(fn=cmd_plan)

    p = sub.add_parser("app", help=cmd_app.__doc__, add_help=False)  # -h goes to the app's own parser
    p.set_defaults(fn=cmd_app)

    p = sub.add_parser("curves", help=cmd_curves.__doc__)
    p.add_argument("runs", nargs="+", help="run folders (each with metrics.jsonl)")
    p.add_argument("--out", default="curves.html", help="output .html, or an image: .png, .svg, .pdf, ...")
    p.add_argument("--title", default="RL fine-tuning on the embedded task")
    p.set_defaults(fn=cmd_curves)

    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "app":
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    args.app_args = extra
    return _run(args)


def _run(args) -> int:
    """Run the command: user errors become one line on stderr (exit 2), Ctrl-C or SIGTERM a short note (130)."""
    # SIGTERM (a scheduler, `kill`) ends the run like Ctrl-C: files are written whole, so the last
    # checkpoint stays valid and the same command resumes from it
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        if getattr(args, "device", None) is not None:  # before any folder is created or data is read
            from softviz.models import check_device
            check_device(args.device)
        args.fn(args)
    except USER_ERRORS as err:  # say what is wrong, no stack trace
        print(f"softviz {args.command}: error: {_error_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = " Run the same command again to resume from the last checkpoint." if args.command in ("train", "matrix", "methods") else ""
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
