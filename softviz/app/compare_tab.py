"""The Compare tab's handlers: one problem rolled out in several modes, a result column per mode, figures across
modes. Values are named (CompareView); softviz.app.layout lays out and wires the widgets."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import html
import random
import time
from typing import Any, NamedTuple

import gradio as gr

from softviz import Mode, TraceConfig, analysis, viz
from softviz.compare import compare_modes
from softviz.config import PRESETS
from softviz.tasks import get_task

from .checks import check_float, check_int, clamped, get_model, visitor_errors
from .session import Session
from .settings import DEFAULT_PROBLEM, EMBEDDED, MAX_ANSWER_TOKENS, TASK, Settings, real_model
from .selection import SELECT_HINT
from .views import (Outputs, RolloutView, column_header, entropy_scale, heatmap, nested, responsive, rollout_figures,
                    shadow_entries, summary_markdown, unsent)


class Problem(NamedTuple):
    """A problem of the embedded task, as the Problem and Gold answer boxes show it."""

    question: str
    gold: str


def random_problem() -> Problem:
    """A random problem of the embedded task's test split."""
    ex = get_task(TASK).example("test", random.randrange(2000))
    return Problem(ex.question, ex.answer)


def example_problems(per_family: int = 3) -> dict[str, Problem]:
    """A few test problems of each family of the embedded task, by a label that names the family (Compare's
    gallery, next to Random problem)."""
    from softviz.tasks.arithmetic import FAMILIES, ArithmeticTask

    out = {}
    for family in FAMILIES:
        for ex in ArithmeticTask(family).examples("test", per_family):
            out[f"{family}: {ex.question}"] = Problem(ex.question, ex.answer)
    return out


@visitor_errors
def pick_example(label) -> Problem:
    """The gallery: the chosen problem and its gold answer into the boxes."""
    examples = example_problems()
    if label not in examples:
        raise ValueError(f"pick one of the example problems ({len(examples)} of them)")
    return examples[label]


def reach_note(result: dict, settings: Settings) -> tuple[str, bool]:
    """(markdown, offer another model): a note when the question holds words the embedded model never saw."""
    words = result.get("unknown_words") or []
    if not words:
        return "", False
    other = real_model(settings)
    shown = ", ".join(f"'{html.escape(w)}'" for w in words[:8]) + (f" and {len(words) - 8} more" if len(words) > 8 else "")
    text = (f"**Out of the embedded model's reach:** it never saw {shown}. It is a 3M-parameter model of small "
            "arithmetic problems and reads questions like *What is 17 times 3?*, *Tom has 3 apples. Tom buys 2 more "
            "apples. How many apples does Tom have?* or the examples in the gallery; other words reach it as "
            "pieces of words, so its answer says nothing about them.")
    if other is not None:
        text += f" A real language model is offered here: **{other}** (press the button, or pick it above)."
    return text, other is not None


def first_problem() -> Problem:
    """The problem shown when the page opens: test problem 9, on which hard sampling goes astray where soft and
    fuzzy do not (the embedded model sha256 091ef06dd570 at seed 0, 8 rollouts: hard 3/8, soft 8/8, fuzzy 8/8
    correct), so there is something to see."""
    ex = get_task(TASK).example("test", DEFAULT_PROBLEM)
    return Problem(ex.question, ex.answer)


def build_modes(names, soft_tau: float, hard_tau: float, gamma: float) -> list[Mode]:
    """Presets with the visitor's τ and γ: soft τ for soft/soft-greedy, hard τ for sampled hard tokens,
    γ for every preset that adds noise. Fuzzy keeps its τ = 1e-4 (that is what makes it fuzzy)."""
    modes = []
    for name in names:
        if name not in PRESETS:
            raise ValueError(f"unknown mode {name!r}; choose from: {', '.join(PRESETS)}")
        p, over = PRESETS[name], {}
        if name in ("soft", "soft-greedy"):
            over["cot_temperature"] = soft_tau
        policy = Mode.preset(name).policy
        if not policy.feeds_mixtures and not policy.is_greedy:  # sampled hard tokens
            over["cot_temperature"] = hard_tau
        if p.get("noise_scale", 0) > 0:
            over["noise_scale"] = gamma
        modes.append(Mode.preset(name, **over))
    return modes


def _check_prompt_tokens(tok, model, task, question: str, max_cot_tokens: int) -> None:
    """The problem must fit the model's context beside the CoT, the cue and the answer: checked before any
    rollout, and said in tokens and characters (what the visitor can change)."""
    from softviz.tasks.base import BOX_OPEN

    context = getattr(model.config, "max_position_embeddings", None)
    if not context:
        return
    used = len(tok.encode(task.prompt(question, tok)))
    wrapper = used - len(tok.encode(question, add_special_tokens=False))
    cue = len(tok.encode(" " + task.answer_cue.rstrip() + " " + BOX_OPEN, add_special_tokens=False))
    room = context - max_cot_tokens - cue - MAX_ANSWER_TOKENS - wrapper
    if used - wrapper > room:
        chars = max(0, int(len(question) * room / max(used - wrapper, 1)))
        raise ValueError(f"the problem is {used - wrapper} tokens long, and this model reads {context} tokens in "
                         f"all: with Max CoT tokens at {max_cot_tokens} (and the answer), {max(room, 0)} tokens are "
                         f"left for the problem. Shorten it (about {chars:,} of its {len(question):,} characters "
                         "fit) or lower Max CoT tokens.")


def compare(model_name, question, gold, mode_names, n, soft_tau, hard_tau, gamma, max_cot_tokens, seed,
            use_finetuned, settings: Settings, session: Session, progress=None, finetuned_run=None) -> dict:
    """Roll out `n` CoTs per mode on one prompt, record Traces (with fed inputs, for projections) and save them.

    Returns (and keeps in session.compare): prompt, gold, traces {label: Trace}, files {label: path}, seconds.
    """
    t0 = time.perf_counter()
    question = (question or "").strip()
    if not question:
        raise ValueError("type a problem, or press 'Random problem'")
    if len(question) > settings.max_prompt_chars:
        raise ValueError(f"the problem has {len(question)} characters; this server accepts {settings.max_prompt_chars}")
    gold = (gold or "").strip() or None
    if gold and len(gold) > settings.max_prompt_chars:
        raise ValueError(f"the gold answer has {len(gold)} characters; this server accepts {settings.max_prompt_chars}")
    mode_names = list(mode_names or [])
    if not mode_names:
        raise ValueError("pick at least one mode to compare")
    if len(mode_names) > settings.max_modes:
        raise ValueError(f"pick at most {settings.max_modes} modes (one result column each); "
                         f"you picked {len(mode_names)}")
    n = check_int("rollouts per mode", n, 1, settings.max_rollouts)
    max_cot_tokens = check_int("max CoT tokens", max_cot_tokens, 1, settings.max_cot_tokens)
    seed = check_int("seed", seed, 0, 2**31 - 1)
    modes = build_modes(mode_names, check_float("soft τ", soft_tau, 1e-4, 10),
                        check_float("hard τ", hard_tau, 1e-4, 10), check_float("γ", gamma, 0, 10))
    run = session.run(finetuned_run) if use_finetuned else None  # None: the latest fine-tune
    if run is not None:
        model, tok = run["model"], run["tokenizer"]
    else:
        model, tok = get_model(model_name, settings)
    task = get_task(TASK)
    _check_prompt_tokens(tok, model, task, question, max_cot_tokens)
    folder = session.files()
    stamp = time.strftime("%H%M%S")

    def step(i, total, label):
        if progress is not None:
            progress((i, total), desc=f"rolling out {label}", unit="modes")

    unknown = []
    if (run["base"] if run is not None else model_name) == EMBEDDED:
        from softviz.tasks.arithmetic import unknown_words

        unknown = unknown_words(question)
    result = compare_modes(model, tok, task, question, modes, n=n, gold=gold, max_cot_tokens=max_cot_tokens,
                           max_answer_tokens=MAX_ANSWER_TOKENS, seed=seed, trace=TraceConfig(keep_inputs=True),
                           progress=step)
    prompt, traces, files = result.prompt, {}, {}
    for summary in result.summaries:
        trace = summary.rollouts.trace
        if run is not None:
            trace.meta["model"] = f"fine-tuned from {run['base']} ({run['label']})"
        traces[summary.label] = trace
        files[summary.label] = str(trace.save(folder / f"trace-{summary.label}-{stamp}.safetensors"))
    model_label = traces[modes[0].label].meta["model"]
    session.compare = {"prompt": prompt, "gold": gold, "traces": traces, "files": files, "n": n,
                       "model": model_label, "seconds": time.perf_counter() - t0, "comparison": result,
                       "unknown_words": unknown,
                       "settings": {"model": model_label, "modes": [m.label for m in modes], "n": n, "seed": seed,
                                    "max_cot_tokens": max_cot_tokens, "max_answer_tokens": MAX_ANSWER_TOKENS,
                                    "soft_tau": soft_tau, "hard_tau": hard_tau, "gamma": gamma}}
    return session.compare


# ---- what Compare shows --------------------------------------------------------------------------------------

@dataclasses.dataclass
class AcrossModes(Outputs):
    """The figures below the columns (None: left blank)."""

    profiles: Any = None  # entropy per step, all modes
    diversity: Any = None  # of the answers
    projection: Any = None  # the fed inputs in 2-D (PCA); None under 3 fed inputs in all
    pass_at_k: Any = None  # None without a gold answer


@dataclasses.dataclass
class CompareSlot(Outputs):
    """A mode's result column."""

    column: Any = unsent()  # gr.Column update: shown or hidden
    header: Any  # markdown: the mode, what it feeds back, accuracy, distinct answers
    shadow_text: Any  # [(token, entropy / scale)] of every rollout, for gr.HighlightedText
    entropy_heatmap: Any
    rollout: RolloutView = nested(RolloutView)  # the rollout chosen with the slider, step by step
    download: Any  # gr.DownloadButton update: the mode's trace file

    @classmethod
    def hidden(cls) -> "CompareSlot":
        """An unused column."""
        return cls(column=gr.Column(visible=False), header="", shadow_text=None, entropy_heatmap=None,
                   rollout=RolloutView(), download=gr.DownloadButton(visible=False))


@dataclasses.dataclass
class CompareView(Outputs):
    """Everything the Compare button sets: the summary table, the figures across modes, a column per mode (as
    many as the host allows; those unused hidden), the rollout slider's range, Explore's menu of modes."""

    summary: Any  # markdown table, one line per mode
    across: AcrossModes = nested(AcrossModes)
    slots: list[CompareSlot] = nested(CompareSlot, many=True)
    rollout_slider: Any  # gr.Slider update
    explore_menu: Any  # gr.Dropdown update: the modes of this comparison
    reach: Any = None  # gr.Markdown update: the out-of-reach note (hidden when there is none)
    reach_button: Any = unsent(default=None)  # gr.Button update: "ask the real model instead", shown when one is
    # offered (a button sends an API client no value)
    selection: Any = None  # markdown: what is selected (a new comparison: how to select)
    session: Any = unsent(default=None)


def shared_figures(result: dict) -> AcrossModes:
    """Figures across modes: entropy profiles, diversity, 2-D projection of the fed inputs, pass@k."""
    traces = result["traces"]
    curves = None
    if result["gold"]:
        curves = {}
        for label, tr in traces.items():
            counts, n = analysis.correct_counts(tr)
            curves[label] = analysis.pass_at_k_curve(counts, n)
    try:
        projection = responsive(viz.projection(traces, color_by="mode"))
    except ValueError:  # under 3 fed inputs in all (e.g. 1 rollout of 2 CoT tokens): nothing to project
        projection = None
    return AcrossModes(profiles=responsive(viz.entropy_profiles(traces)), diversity=responsive(viz.diversity(traces)),
                       projection=projection, pass_at_k=responsive(viz.pass_at_k(curves)) if curves else None)


def compare_view(result: dict, session: Session, rollout: int, slots: int, details: bool = True) -> CompareView:
    """The result area for `slots` columns (unused ones hidden). Without `details`, the figures of one rollout
    and those across modes are left blank."""
    traces = list(result["traces"].items())
    scale = entropy_scale(result["traces"].values())
    columns = []
    for label, tr in traces[:slots]:
        columns.append(CompareSlot(
            column=gr.Column(visible=True), header=column_header(tr), shadow_text=shadow_entries(tr, scale)[0],
            entropy_heatmap=heatmap(tr, scale),
            rollout=rollout_figures(tr, rollout) if details else RolloutView(),
            download=gr.DownloadButton(f"Download the {label} trace (.safetensors)", value=result["files"][label],
                                       visible=True)))
    columns += [CompareSlot.hidden() for _ in range(slots - len(columns))]
    n = result["n"]
    return CompareView(summary=summary_markdown(result), across=shared_figures(result) if details else AcrossModes(),
                       slots=columns,
                       rollout_slider=gr.Slider(minimum=0, maximum=max(n - 1, 1), value=0, step=1, interactive=n > 1),
                       explore_menu=gr.Dropdown(choices=list(result["traces"]), value=None), selection=SELECT_HINT,
                       session=session)


def add_details(view: CompareView, result: dict, rollout: int) -> CompareView:
    """compare_view(..., details=False) completed with the figures of one rollout and those across modes."""
    slots = list(view.slots)
    for i, trace in enumerate(result["traces"].values()):
        slots[i] = dataclasses.replace(slots[i], rollout=rollout_figures(trace, rollout))
    return dataclasses.replace(view, across=shared_figures(result), slots=slots)


def cleared_view(settings: Settings, session: Session, err: Exception) -> CompareView:
    """The result area after a Compare that did not run: the reason where the summary was, nothing else."""
    reason = err.message if isinstance(err, gr.Error) else str(err) if isinstance(err, ValueError) else \
        "something went wrong on the server"
    return CompareView(summary=f"**Not run:** {html.escape(str(reason))}", across=AcrossModes(),
                       slots=[CompareSlot.hidden() for _ in range(settings.max_modes)],
                       rollout_slider=gr.Slider(value=0, interactive=False), explore_menu=gr.Dropdown(),
                       reach=gr.Markdown(visible=False), reach_button=gr.Button(visible=False),
                       selection=SELECT_HINT, session=session)  # the visitor's session stays theirs (None would reset the gr.State)


@visitor_errors
def on_compare(model_name, question, gold, mode_names, n, soft_tau, hard_tau, gamma, max_cot_tokens, seed,
               use_finetuned, settings: Settings, session: Session, finetuned_run=None, progress=gr.Progress()):
    """The Compare button: roll out, then fill the result area in two updates (CompareViews): answers, shadow
    texts and entropy first; then everything, with the figures of one rollout and those across modes (the last
    update is whole, so an API client's predict() gets it all). Offers the traces to Explore."""
    try:
        result = compare(model_name, question, gold, mode_names, n, soft_tau, hard_tau, gamma, max_cot_tokens, seed,
                         use_finetuned, settings, session, progress, finetuned_run)
    except Exception as err:  # clear the last comparison's results, so they are not read as this one's
        yield cleared_view(settings, session, err)
        raise
    session.selection = None
    note, offer = reach_note(result, settings)
    first = dataclasses.replace(compare_view(result, session, 0, settings.max_modes, details=False),
                                reach=gr.Markdown(note, visible=bool(note)), reach_button=gr.Button(visible=offer))
    yield first
    full = add_details(first, result, 0)
    result["figures"] = {(label, 0): slot.rollout for label, slot in zip(result["traces"], full.slots)}
    yield full


def cached_rollout(result: dict, label: str, rollout: int) -> RolloutView:
    """The figures of one rollout of one mode of a comparison, drawn once and kept with it (result["figures"])."""
    key = (label, rollout)
    cache = result.setdefault("figures", {})
    if key not in cache:
        cache[key] = rollout_figures(result["traces"][label], rollout)
    return cache[key]


# One thread for the whole app draws the rollouts next to the one a visitor moved to (people step through rollouts
# one at a time): at most 2 rollouts x the modes per change, on one core whatever the number of visitors. It waits
# until the change's own answer has been sent: drawing beside it held the GIL while Gradio serialised that answer
# (~0.15 s later). As a chained event (.then) it was worse: the page sends no next change until it has finished.
_AHEAD = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="softviz-draw-ahead")
AHEAD_DELAY_S = 0.15


def draw_neighbours(session: Session, result: dict, rollout: int, change: int, delay: float = AHEAD_DELAY_S) -> None:
    """After `delay` seconds, draw (cached_rollout) rollouts rollout + 1 and rollout - 1 of every mode of `result`;
    stop once the visitor has another comparison or has changed rollout again (change: session.rollout_changes
    when this was asked for)."""
    time.sleep(delay)
    for b in (rollout + 1, rollout - 1):
        for label, trace in result["traces"].items():
            if session.compare is not result or session.rollout_changes != change:
                return
            if 0 <= b < trace.num_rollouts:
                cached_rollout(result, label, b)


@visitor_errors
def on_rollout(rollout, settings: Settings, session: Session) -> list[RolloutView]:
    """The rollout slider: the per-rollout figures of every column (blank for the unused columns), each drawn
    once per comparison (going back to a rollout only sends them)."""
    result = session.compare or {}
    labels = list(result.get("traces", {}))
    out = []
    for i in range(settings.max_modes):
        if i < len(labels):
            b = clamped("rollout", rollout, 0, result["traces"][labels[i]].num_rollouts - 1)
            out.append(cached_rollout(result, labels[i], b))
        else:
            out.append(RolloutView())
    if labels:
        session.rollout_changes += 1
        b = clamped("rollout", rollout, 0, result["n"] - 1)
        _AHEAD.submit(draw_neighbours, session, result, b, session.rollout_changes)
    return out


@visitor_errors
def on_export(settings: Settings, session: Session):
    """The Export button: the last comparison as one HTML page that opens offline (figures, every rollout's soft
    text, settings and seed) and as JSON, offered for download."""
    from softviz.export import write_comparison

    done = session.compare or {}
    if "comparison" not in done:
        raise ValueError("nothing to export yet: press Compare first")
    folder, stamp = session.files(), time.strftime("%H%M%S")
    paths = [str(write_comparison(done["comparison"], folder / f"comparison-{stamp}.{ext}", done["settings"]))
             for ext in ("html", "json")]
    return gr.update(value=paths, visible=True)


def hide_export():
    """A new comparison makes the exported files stale: hide them until Export is pressed again."""
    return gr.update(value=None, visible=False)
