"""The Train tab's handlers: an RL fine-tune of a private copy of the model, streamed step by step (TrainView),
then the same held-out problems solved before and after; Cancel stops it between steps."""

from __future__ import annotations

import copy
import dataclasses
import html
import time
from typing import Any

import gradio as gr
import torch

from softviz import Mode, Trace, analysis, generate, viz
from softviz.config import ALGORITHMS, RLConfig
from softviz.stats import proportion_interval
from softviz.tasks import get_task

from .checks import check_float, check_int, check_offered, get_model, visitor_errors
from .session import Session
from .settings import (BEFORE_AFTER_SAMPLES, BEFORE_AFTER_PROMPTS, EMBEDDED, MAX_ANSWER_TOKENS, TASK, TRAIN_EVAL_SIZE,
                       TRAIN_MODES, Settings, model_note)
from .views import Outputs, mean_entropy, responsive, unsent


def before_after_rollouts(model, tok, mode: Mode, examples, seed: int = 0) -> Trace:
    """The same held-out problems, BEFORE_AFTER_SAMPLES rollouts each, greedy answers: a Trace with correctness."""
    task = get_task(TASK)
    r = generate(model, tok, [task.prompt(e, tok) for e in examples], mode.replace(answer_temperature=0.0),
                 n=BEFORE_AFTER_SAMPLES, max_cot_tokens=64, max_answer_tokens=MAX_ANSWER_TOKENS, seed=seed,
                 trace=True, answer_cue=task.answer_cue)
    golds = [examples[i].answer for i in r.prompt_index.tolist()]
    r.trace.meta["golds"] = golds
    r.trace.meta["correct"] = [task.is_correct(a, g) for a, g in zip(r.answers, golds)]
    return r.trace


def before_after_table(examples, before: Trace, after: Trace) -> list[list[str]]:
    """Rows: problem, gold, answers before, answers after (each 'answer ×count', correct ones marked ✓)."""
    def cell(trace, p):
        counts = analysis.distinct_answers(trace, prompt=p)
        ok = sum(c for c, i in zip(trace.meta["correct"], trace.meta["prompt_index"]) if i == p)
        return f"{ok}/{BEFORE_AFTER_SAMPLES} correct · answers " + ", ".join(f"{a} ×{c}" for a, c in counts.items())
    return [[e.question, e.answer, cell(before, p), cell(after, p)] for p, e in enumerate(examples)]


def _train_config(mode, algorithm, steps, learning_rate, group_size, prompts_per_step, settings: Settings,
                  seed: int = 0) -> RLConfig:
    if mode not in TRAIN_MODES:
        raise ValueError(f"training mode must be one of {', '.join(TRAIN_MODES)}, got {mode!r}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    steps = check_int("steps", steps, 1, settings.max_train_steps)
    group_size = check_int("group size", group_size, 2, settings.max_train_rollouts)
    prompts_per_step = check_int("prompts per step", prompts_per_step, 1, settings.max_train_rollouts)
    if group_size * prompts_per_step > settings.max_train_rollouts:
        raise ValueError(f"prompts per step × group size = {prompts_per_step * group_size} rollouts per step; "
                         f"this server allows {settings.max_train_rollouts}")
    lr = check_float("learning rate", learning_rate, 1e-7, 1e-2)
    # Greedy validation about five times per run on TRAIN_EVAL_SIZE held-out problems: ~2 s each on the embedded
    # model, and an interval of about ±6 points, small enough to see a run learn.
    return RLConfig(mode=mode, algorithm=algorithm, steps=steps, learning_rate=lr, group_size=group_size,
                    prompts_per_step=prompts_per_step, warmup_steps=min(5, steps // 4),
                    max_cot_tokens=min(64, settings.max_cot_tokens), eval_every=max(1, steps // 5),
                    eval_size=TRAIN_EVAL_SIZE, save_every=0, seed=seed)


def decoding(mode: Mode) -> str:
    """How `mode` decodes, for labels: 'hard CoT sampled at τ = 1, answers sampled at τ = 1'."""
    t = mode.cot_temperature
    cot = f"{mode.label} CoT, " + ("argmax" if t == 0 else f"τ = {t:g}")
    if mode.policy.uses_noise:
        cot += f", noise γ = {mode.noise_scale:g}"
    a = mode.answer_temperature
    return cot + (", greedy answers" if a == 0 else f", answers sampled at τ = {a:g}")


def share(correct: int, n: int) -> str:
    """'57.0% [50.9–62.9] of 256': a share with its 95% (Wilson) interval and sample size."""
    lo, hi = proportion_interval(correct, n)
    return f"{100 * correct / n:.1f}% [{100 * lo:.1f}–{100 * hi:.1f}] of {n}"


def status_html(text: str, done: int | None = None, total: int | None = None) -> str:
    """Train's status line, above a progress bar when the steps done are known (Gradio's own progress display
    hides while a generator streams its updates, so the bar is part of the status)."""
    bar = ""
    if total:
        bar = (f'<div class="sv-bar" role="progressbar" aria-valuenow="{done}" aria-valuemax="{total}">'
               f'<span style="width:{100 * done / total:.1f}%"></span></div>')
    return f'<div class="sv-status">{html.escape(text)}</div>{bar}'


def _train_status(m: dict, cfg: RLConfig, t0: float) -> str:
    val = ""
    if "val/greedy_accuracy" in m:
        n = cfg.eval_size
        val = (f"greedy validation ({decoding(cfg.greedy_mode)}) on held-out problems: "
               f"{share(round(m['val/greedy_accuracy'] * n), n)}")
    if m["step"] == 0:
        text = f"Step 0 / {cfg.steps}, the starting model: {val}"
    else:
        rollouts = cfg.prompts_per_step * cfg.group_size
        text = (f"Step {m['step']} / {cfg.steps} ({time.perf_counter() - t0:.0f} s) · this step's {rollouts} training "
                f"rollouts ({decoding(cfg.rollout_mode)}): {100 * m['accuracy']:.0f}% correct, mean reward "
                f"{m['reward']:.1f}, CoT entropy {m['entropy']:.3f} nats" + (f" · {val}" if val else ""))
    return status_html(text, m["step"], cfg.steps)


@dataclasses.dataclass
class TrainView(Outputs):
    """What a fine-tune shows after every step; the before/after fields are filled once it ends."""

    status: Any  # HTML: the status line and a progress bar
    curves: Any = None  # training curves so far
    before_after: Any = ""  # markdown: accuracy and entropy before -> after
    entropy: Any = None  # figure: entropy before and after
    answers: Any = None  # table rows: problem, gold, answers before, answers after
    use_finetuned: Any = None  # Compare's 'use my fine-tuned model' checkbox (update)
    runs_menu: Any = dataclasses.field(default_factory=gr.Dropdown)  # Compare's menu of the session's runs (update;
    # the default changes nothing)
    session: Any = unsent(default=None)


def check_trainable_here(model_name: str, settings: Settings) -> None:
    """Train fine-tunes the embedded model anywhere; a real LM only on a GPU host (on a CPU a SmolLM2 step of the
    default batch took about 40 s and the process peaked near 6 GB: settings.MEASURED)."""
    check_offered(model_name, settings)
    if model_name == EMBEDDED:
        return
    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        raise ValueError(f"Train runs on the embedded model on this CPU server; {model_name} trains only on a GPU "
                         f"host ({model_note(model_name) or 'a real model is too slow to fine-tune live on a CPU'}). "
                         f"Choose 'embedded' in the model menu, or run `softviz train --model {model_name}`.")


def _checked_config(model_name, mode, algorithm, steps, learning_rate, group_size, prompts_per_step,
                    settings: Settings, seed) -> RLConfig:
    """Train's settings checked as on_train and its unqueued pre-step both need them: a ValueError names a mistake."""
    seed = check_int("seed", seed, 0, 2**31 - 1)
    cfg = _train_config(mode, algorithm, steps, learning_rate, group_size, prompts_per_step, settings, seed)
    check_trainable_here(model_name, settings)
    return cfg


@visitor_errors
def on_train(model_name, mode, algorithm, steps, learning_rate, group_size, prompts_per_step, settings: Settings,
             session: Session, seed=0, progress=gr.Progress()):
    """Train: fine-tune a private copy of the model, yielding a TrainView after every step. Cancel stops it
    between steps."""
    from softviz.train import train

    cfg = _checked_config(model_name, mode, algorithm, steps, learning_rate, group_size, prompts_per_step, settings,
                          seed)
    base, tok = get_model(model_name, settings)
    requested = session.train_requested_at or time.monotonic()  # API calls skip the button's pre-step
    session.train_requested_at = None

    def cancelled() -> bool:  # Cancel pressed after this run was requested (also while it waited), or tab closed
        return session.closed or (session.cancel_at is not None and session.cancel_at >= requested)

    keep = gr.Checkbox()  # leave Compare's checkbox as it is until the run ends
    if cancelled():
        yield TrainView(status_html("Cancelled before it started."), use_finetuned=keep, session=session)
        return
    session.training = True
    try:
        yield from _train_run(model_name, cfg, base, tok, train, cancelled, keep, session, progress, settings)
    finally:
        session.training = False


def run_label(number: int, cfg: RLConfig) -> str:
    return f"#{number} {cfg.mode} {cfg.algorithm} lr {cfg.learning_rate:g} seed {cfg.seed}"


def _train_run(model_name, cfg: RLConfig, base, tok, train, cancelled, keep, session: Session, progress,
               settings: Settings):
    task = get_task(TASK)
    examples = task.examples("test", BEFORE_AFTER_PROMPTS)
    session.run_count += 1
    label = run_label(session.run_count, cfg)
    earlier = {r["label"]: r["metrics"] for r in session.runs}  # overlaid on this run's curves

    def curves(metrics, smooth=3):
        return responsive(viz.training_curves({**earlier, label: metrics}, smooth=smooth))

    yield TrainView(status_html("Measuring the model before training…", 0, cfg.steps), use_finetuned=keep,
                    session=session)
    before = before_after_rollouts(base, tok, Mode.preset(cfg.mode), examples)
    if cancelled():
        yield TrainView(status_html("Cancelled before the first step: the model is unchanged."), use_finetuned=keep,
                        session=session)
        return
    model = copy.deepcopy(base)  # the shared model stays read-only; this copy is the visitor's alone
    metrics, t0, stopped = [], time.perf_counter(), False
    for m in train(model, tok, cfg, output_dir=None, progress=False):
        metrics.append(m)
        progress((m["step"], cfg.steps), desc="RL steps", unit="steps")
        yield TrainView(_train_status(m, cfg, t0), curves=curves(metrics), use_finetuned=keep, session=session)
        if cancelled():
            stopped = True
            break
    if session.closed:
        return
    done = metrics[-1]["step"] if metrics else 0
    if done == 0:
        yield TrainView(status_html(f"Cancelled before the first step ({time.perf_counter() - t0:.0f} s): the model "
                                    "is unchanged."), curves=curves(metrics, 1) if metrics else None,
                        use_finetuned=keep, session=session)
        return
    after = before_after_rollouts(model, tok, Mode.preset(cfg.mode), examples)
    session.runs.append({"model": model, "tokenizer": tok, "base": model_name, "config": cfg, "metrics": metrics,
                         "label": label})
    dropped = ""
    while len(session.runs) > settings.max_runs:  # each run holds a copy of the model
        dropped = f" Run {session.runs.pop(0)['label']} was dropped: this server keeps {settings.max_runs} per session."
    vals = [x for x in metrics if "val/greedy_accuracy" in x]
    moved = ""
    if len(vals) > 1:
        n = cfg.eval_size
        moved = (f" Greedy validation on {n} held-out problems: {100 * vals[0]['val/greedy_accuracy']:.1f}% at step 0 "
                 f"→ {100 * vals[-1]['val/greedy_accuracy']:.1f}% at step {vals[-1]['step']}.")
    status = status_html(f"{'Cancelled' if stopped else 'Finished'} after {done} of {cfg.steps} steps "
                         f"({time.perf_counter() - t0:.0f} s).{moved} The fine-tuned model is yours for this session: "
                         f"tick 'use my fine-tuned model' in Compare to try it ({label}).{dropped}", done, cfg.steps)
    rollouts = BEFORE_AFTER_PROMPTS * BEFORE_AFTER_SAMPLES
    ok_before, ok_after = sum(before.meta["correct"]), sum(after.meta["correct"])
    summary = (f"### Before / after, on the same {len(examples)} held-out problems × {BEFORE_AFTER_SAMPLES} rollouts\n"
               f"Decoded as in training but with greedy answers ({decoding(Mode.preset(cfg.mode, answer_temperature=0.0))})."
               f" Correct (95% interval): **{share(ok_before, rollouts)}** before → **{share(ok_after, rollouts)}** "
               f"after. Mean CoT entropy: {mean_entropy(before):.3f} → {mean_entropy(after):.3f} nats.")
    yield TrainView(status, curves=curves(metrics), before_after=summary,
                    entropy=responsive(viz.entropy_before_after(before, after)),
                    answers=before_after_table(examples, before, after),
                    use_finetuned=gr.Checkbox(interactive=True, label="use my fine-tuned model (Train)"),
                    runs_menu=gr.Dropdown(choices=[r["label"] for r in session.runs], value=label, interactive=True),
                    session=session)


def on_train_requested(model_name, mode, algorithm, steps, learning_rate, group_size, prompts_per_step,
                       settings: Settings, session: Session, seed=0) -> str:
    """Train's first, unqueued step: check the settings (a mistake is said here, where the status stays, and again
    by on_train as a message), and note when Train was pressed, so that Cancel also stops a run still queued."""
    try:
        _checked_config(model_name, mode, algorithm, steps, learning_rate, group_size, prompts_per_step, settings, seed)
    except ValueError as err:
        session.train_requested_at = None
        return status_html(f"Not started: {err}")
    session.train_requested_at = time.monotonic()
    return status_html("Waiting for a free trainer (fine-tunes run one at a time on this server)…")


def on_cancel(session: Session) -> str:
    """Cancel: the fine-tune stops after its current step and still shows the before/after comparison."""
    if not session.training and session.train_requested_at is None:
        return status_html("Nothing to cancel: no fine-tune is running.")
    session.cancel_at = time.monotonic()
    return status_html("Stopping after the current step…")
