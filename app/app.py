"""The softviz Gradio app: compare CoT decoding modes side by side, fine-tune live, explore saved Traces.

A thin UI over the library. Handlers are module-level functions: widget values, the host's
`Settings` and the visitor's `Session` in; widget values out. `build_demo()` wires them into gr.Blocks;
`main()` reads flags and SOFTVIZ_* environment variables and launches. Run `python app/app.py -h`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import html
import inspect
import logging
import numbers
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr

from softviz import Mode, Trace, TraceConfig, analysis, checks, generate, load_model, viz
from softviz.compare import compare_modes
from softviz.config import ALGORITHMS, PRESETS, RLConfig
from softviz.stats import mean_over_steps
from softviz.tasks import get_task

log = logging.getLogger("softviz.app")

TASK = "arithmetic"  # the embedded model's task: its prompt format, answer cue and checker
EMBEDDED = "embedded"
DEFAULT_MODES = ("hard", "soft", "fuzzy")
# the paper's trainable settings (the noise gives a density, eq. 9), and SofT-GRPO's Gumbel top-5 mixtures
TRAIN_MODES = ("hard", "soft", "fuzzy", "soft-grpo")
MAX_ANSWER_TOKENS = 16  # answers of the embedded task are a few digits (the paper allows 32)
DEFAULT_PROBLEM = 7  # index in the test split of the problem shown first (see first_problem)
BEFORE_AFTER_PROMPTS = 8  # held-out test problems rolled out before and after a fine-tune...
BEFORE_AFTER_SAMPLES = 4  # ...this many times each
MODE_HELP = {  # what each preset feeds back as the next CoT input (softviz.config.KINDS has the long form)
    "hard": "the embedding of a sampled token", "hard-greedy": "the embedding of the most likely token",
    "soft": "the mixture p·E over the vocabulary, plus noise σε", "soft-greedy": "the mixture p·E, no noise",
    "fuzzy": "an almost one-hot mixture p·E, plus noise σε", "fuzzy-greedy": "an almost one-hot p·E, no noise",
    "soft-thinking": "a top-k/top-p mixture (Zhang et al. 2025)",
    "soft-thinking-cold-stop": "Soft Thinking; the CoT stops once entropy stays low",
    "mixture-of-inputs": "a sampled token's embedding mixed with p·E (Zhuang et al. 2025)",
    "gumbel": "Gumbel-softmax weights on the top k (Wu et al. 2025)",
    "dirichlet": "Dirichlet-sampled weights on the top k (Wu et al. 2025)",
    "soft-grpo": "Gumbel-softmax weights (τ_g 0.1) on the top 5 (SofT-GRPO, Zheng et al. 2025)",
}


# ---- host settings -----------------------------------------------------------------------------------------

def _setting(default, help: str):
    """A Settings field; its help is the one description of the flag and environment variable."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the host allows. Visitors choose within these limits, and every handler checks them again on the
    server (a widget's maximum is only a hint to the browser). Each field reads SOFTVIZ_<FIELD> and --<field>."""

    models: tuple[str, ...] = _setting((EMBEDDED,), "comma-separated allow-list of model folders or Hub ids shown in "
                                        "the model menu, first = default; 'embedded' is the built-in model")
    max_rollouts: int = _setting(32, "rollouts per mode in Compare")
    max_modes: int = _setting(6, "modes per comparison (one result column each)")
    max_cot_tokens: int = _setting(128, "CoT length limit in Compare and Train")
    max_prompt_chars: int = _setting(2000, "longest problem text accepted")
    max_train_steps: int = _setting(60, "RL steps per fine-tune (a step of the embedded model takes ~0.8 s on 2 "
                                        "cores at 4 prompts x 8 rollouts)")
    max_train_rollouts: int = _setting(64, "prompts per step x group size in a fine-tune")
    max_upload_mb: int = _setting(20, "largest Trace file Explore accepts, in MB")
    concurrency: int = _setting(1, "comparisons running at once (more helps only with more cores or a GPU)")
    train_concurrency: int = _setting(1, "fine-tunes running at once; each holds a private copy of the model")
    max_queue: int = _setting(32, "waiting requests beyond which new ones are refused with a message")
    session_ttl_s: int = _setting(3600, "seconds after which an API client's unused session (fine-tuned model, "
                                        "traces) is dropped; a browser's is dropped when its tab closes")
    device: str | None = _setting(None, "cpu, cuda, ... (default: CUDA when available)")

    def __post_init__(self):
        models = tuple(m.strip() for m in self.models if m.strip())
        if not models:
            raise ValueError("Settings.models is empty: allow at least one model (e.g. 'embedded')")
        object.__setattr__(self, "models", tuple(dict.fromkeys(models)))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (not isinstance(value, int) or value < 1):
                raise ValueError(f"Settings.{f.name} = {value!r} is invalid: allowed an integer >= 1")

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Settings":
        """Defaults, then SOFTVIZ_<FIELD> environment variables, then `overrides` (e.g. parsed flags)."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f"SOFTVIZ_{f.name.upper()}")
            if raw not in (None, ""):
                values[f.name] = _parse_field(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _parse_field(f: dataclasses.Field, raw: str):
    if f.name == "models":
        return tuple(m for m in raw.split(",") if m.strip())
    if f.type == "int":
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{f.name} must be an integer, got {raw!r}") from None
    return raw


# ---- per-visitor state -------------------------------------------------------------------------------------

@dataclasses.dataclass
class Session:
    """One visitor's things, never shared: the last comparison, the trace being explored, a fine-tuned model."""

    compare: dict | None = None  # prompt, gold, traces {label: Trace}, files {label: path}, seconds
    explore: Trace | None = None
    finetuned: dict | None = None  # model, tokenizer, base, config, metrics: trained from a private copy
    train_requested_at: float | None = None  # when Train was pressed (time.monotonic()); the run may wait in the queue
    cancel_at: float | None = None  # when Cancel was pressed: stops a run requested before it, between steps
    closed: bool = False
    folder: str | None = None  # this visitor's trace files

    def files(self) -> Path:
        if self.folder is None:
            self.folder = new_folder()
        return Path(self.folder)

    def close(self) -> None:
        """Stop a running fine-tune, drop the model and traces, delete the files."""
        self.closed = True
        self.compare = self.explore = self.finetuned = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


class Sessions:
    """Binds each browser session (Gradio's session hash) to its Session, so closing the tab frees it at once.
    Gradio also deletes a Session when its gr.State expires (API clients never 'close a tab')."""

    def __init__(self):
        self._by_hash: dict[str, Session] = {}
        self._lock = threading.Lock()

    def bind(self, session: Session, request: gr.Request) -> None:
        with self._lock:
            self._by_hash[request.session_hash] = session

    def close(self, request: gr.Request) -> None:
        with self._lock:
            session = self._by_hash.pop(request.session_hash, None)
        if session is not None:
            session.close()

    def __len__(self) -> int:
        return len(self._by_hash)


def new_session() -> Session:
    """gr.State calls this once per visitor (a plain function: Gradio would try to serialise a dataclass type)."""
    return Session()


def _close_session(session: Session | None) -> None:
    if session is not None:
        session.close()


# ---- files on disk ----------------------------------------------------------------------------------------
# Each session's traces live in <temp folder>/softviz-app-<pid>-XXXXXXXX. The pid names the process that owns the
# folder, so a server deletes all of its folders when it stops, and one starting later deletes those of servers
# that were killed (SIGKILL, a crash) without ever touching a live server's.

FOLDER_PREFIX = "softviz-app-"
_FOLDER_NAME = re.compile(re.escape(FOLDER_PREFIX) + r"(\d+)-[a-z0-9_]+")  # mkdtemp's suffix has no "-"


def new_folder() -> str:
    """A new trace folder owned by this process."""
    return tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-")


def _folders(root: str | None = None) -> list[tuple[int, Path]]:
    """(owner pid, path) of every trace folder in `root` (default: the temp folder), in pid-named form."""
    found = []
    for path in Path(root or tempfile.gettempdir()).glob(FOLDER_PREFIX + "*"):
        m = _FOLDER_NAME.fullmatch(path.name)
        if m and path.is_dir() and not path.is_symlink():
            found.append((int(m.group(1)), path))
    return found


def _alive(pid: int) -> bool:
    if pid <= 0:  # os.kill(0, ...) would signal our own process group: such a pid owns nothing
        return False
    try:
        os.kill(pid, 0)  # signal 0: no signal is sent, only whether the process exists is checked
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but belongs to another user
        return True
    return True


def remove_stale_folders(root: str | None = None) -> list[Path]:
    """Delete the trace folders of processes that no longer exist; returns what was deleted."""
    stale = [path for pid, path in _folders(root) if pid != os.getpid() and not _alive(pid)]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def remove_own_folders(root: str | None = None) -> list[Path]:
    """Delete every trace folder of this process (all of its sessions'); returns what was deleted."""
    own = [path for pid, path in _folders(root) if pid == os.getpid()]
    for path in own:
        shutil.rmtree(path, ignore_errors=True)
    return own


def clean_up_on_signals(signums=(signal.SIGINT, signal.SIGTERM)) -> None:
    """On SIGINT or SIGTERM, delete this process's trace folders, then do what the signal did before: call the
    previous handler (SIGINT's raises KeyboardInterrupt, which Gradio answers by closing its server), or for a
    default action exit by SystemExit(128 + signal) (the status a shell shows), so `finally` blocks still run.
    A signal ignored when we start (nohup, a background job) stays ignored. Call it from the main thread."""
    for signum in signums:
        previous = signal.getsignal(signum)
        if previous == signal.SIG_IGN:
            continue

        def handler(num, frame, previous=previous):
            removed = remove_own_folders()
            log.info("%s: deleted %d session folder(s)", signal.Signals(num).name, len(removed))
            if callable(previous):
                previous(num, frame)
            else:  # SIG_DFL, or None (a handler not installed from Python)
                raise SystemExit(128 + num)

        signal.signal(signum, handler)


# ---- models and checks -------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _cached_model(name: str, device: str | None):
    return load_model(None if name == EMBEDDED else name, device=device)


def get_model(name: str, settings: Settings):
    """The shared, read-only (model, tokenizer) of an allow-listed model, loaded once per process."""
    if name not in settings.models:
        raise ValueError(f"model {name!r} is not offered here; choose one of: {', '.join(settings.models)}")
    return _cached_model(name, settings.device)


def _whole(name: str, value, low: int, high: int) -> int:
    """`value` as an int, or a ValueError naming the widget. Widgets send JSON numbers, so 8.0 is 8; NaN, ±inf,
    2.5, True and text are refused (softviz.checks' rule, with the widget's name and range)."""
    if checks.is_int(value) or (checks.is_real(value) and float(value).is_integer()):
        return int(value)
    raise ValueError(f"{name} must be a whole number between {low} and {high}, got {value!r}")


def _check_int(name: str, value, low: int, high: int) -> int:
    value = _whole(name, value, low, high)
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high} on this server, got {value}")
    return value


def _check_float(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # text, None, True: not a number
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not low <= value <= high:  # NaN fails here too
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value:g}")
    return value


def visitor_errors(fn):
    """A visitor's mistake (ValueError, or a gr.Error raised on purpose) becomes a readable message in the page
    (gr.Error) and one log line; anything else is a bug: logged with its traceback, and a polite message."""
    def convert(err: Exception) -> gr.Error:
        if isinstance(err, (gr.Error, ValueError)):
            message = err.message if isinstance(err, gr.Error) else str(err)
            log.info("visitor error in %s: %s", fn.__name__, " ".join(str(message).split()))  # one line
            shown = err if isinstance(err, gr.Error) else gr.Error(message)
        else:
            log.exception("unexpected error in %s", fn.__name__)
            shown = gr.Error(f"Something went wrong on the server ({type(err).__name__}: {err}). Please try "
                             "again; if it persists, tell the host.")
        shown.print_exception = False  # Gradio would print a traceback for every gr.Error; the log says enough
        return shown

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as err:
                raise convert(err) from err
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise convert(err) from err
    return wrapper


def _responsive(fig, narrow: bool = False):
    """Let the page size a figure to its container (viz figures may carry a fixed width for notebooks).

    `narrow`: for a mode's column (~450 px): a smaller title and no grey note lines (viz's "notes" annotation),
    which would run off the figure; the column's gr.Plot labels say what they said."""
    if fig is None:
        return None
    fig.update_layout(width=None, autosize=True)
    if narrow:
        kept = [a for a in fig.layout.annotations if a.name != "notes"]
        if len(kept) < len(fig.layout.annotations):
            below = 26 if kept else 8  # subplot titles sit between the title and the plot area
            fig.layout.annotations = kept
            fig.update_layout(title=dict(pad=dict(b=below + 4)), margin=dict(t=52 + below))
        fig.update_layout(title_font_size=13, margin=dict(l=50, r=10))
    return fig


# ---- Compare -----------------------------------------------------------------------------------------------

def random_problem() -> tuple[str, str]:
    """A random problem of the embedded task's test split: (question, gold answer)."""
    ex = get_task(TASK).example("test", random.randrange(2000))
    return ex.question, ex.answer


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
        if p["kind"] == "hard" and p["cot_temperature"] > 0:
            over["cot_temperature"] = hard_tau
        if p.get("noise_scale", 0) > 0:
            over["noise_scale"] = gamma
        modes.append(Mode.preset(name, **over))
    return modes


def compare(model_name, question, gold, mode_names, n, soft_tau, hard_tau, gamma, max_cot_tokens, seed,
            use_finetuned, settings: Settings, session: Session, progress=None) -> dict:
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
    n = _check_int("rollouts per mode", n, 1, settings.max_rollouts)
    max_cot_tokens = _check_int("max CoT tokens", max_cot_tokens, 1, settings.max_cot_tokens)
    seed = _check_int("seed", seed, 0, 2**31 - 1)
    modes = build_modes(mode_names, _check_float("soft τ", soft_tau, 1e-4, 10),
                        _check_float("hard τ", hard_tau, 1e-4, 10), _check_float("γ", gamma, 0, 10))
    if use_finetuned:
        if session.finetuned is None:
            raise ValueError("there is no fine-tuned model in this session yet: run one in the Train tab first")
        model, tok = session.finetuned["model"], session.finetuned["tokenizer"]
    else:
        model, tok = get_model(model_name, settings)
    task = get_task(TASK)
    folder = session.files()
    stamp = time.strftime("%H%M%S")

    def step(i, total, label):
        if progress is not None:
            progress((i, total), desc=f"rolling out {label}", unit="modes")

    result = compare_modes(model, tok, task, question, modes, n=n, gold=gold, max_cot_tokens=max_cot_tokens,
                           max_answer_tokens=MAX_ANSWER_TOKENS, seed=seed, trace=TraceConfig(keep_inputs=True),
                           progress=step)
    prompt, traces, files = result.prompt, {}, {}
    for summary in result.summaries:
        trace = summary.rollouts.trace
        if use_finetuned:
            trace.meta["model"] = f"fine-tuned from {session.finetuned['base']}"
        traces[summary.label] = trace
        files[summary.label] = str(trace.save(folder / f"trace-{summary.label}-{stamp}.safetensors"))
    session.compare = {"prompt": prompt, "gold": gold, "traces": traces, "files": files, "n": n,
                       "model": traces[modes[0].label].meta["model"], "seconds": time.perf_counter() - t0}
    return session.compare


def _accuracy(trace: Trace) -> tuple[int, int] | None:
    ok = analysis.rollout_correct(trace)
    return None if any(c is None for c in ok) else (sum(ok), len(ok))


def _mode_caption(trace: Trace) -> str:
    m = trace.meta["mode"]
    label = trace.meta["mode_label"]
    parts = [f"feeds back {MODE_HELP[label]}" if label in MODE_HELP else f"kind {m['kind']}"]
    if m["kind"] == "hard":
        parts.append(f"τ = {m['cot_temperature']:g}")
    else:
        parts.append(f"τ = {m['cot_temperature']:g}, γ = {m['noise_scale']:g} (σ = {trace.meta['sigma']:.3g})")
    return " · ".join(parts)


def _mean_entropy(trace: Trace) -> float:
    return mean_over_steps(trace.entropy, trace.lengths)  # the library's one definition (as `softviz compare`)


def column_header(trace: Trace) -> str:
    """Markdown over a mode's column: what the mode feeds, accuracy and distinct answers."""
    acc = _accuracy(trace)
    answers = analysis.distinct_answers(trace)
    shown = ", ".join(f"**{html.escape(a)}** ×{c}" for a, c in list(answers.items())[:5])
    more = f", … ({len(answers) - 5} more)" if len(answers) > 5 else ""
    acc_s = f"**{acc[0]}/{acc[1]} correct** ({100 * acc[0] / acc[1]:.0f}%) · " if acc else ""
    return (f"### {trace.meta['mode_label']}\n{_mode_caption(trace)}\n\n"
            f"{acc_s}{len(answers)} distinct answer{'s' if len(answers) != 1 else ''}: {shown}{more}  \n"
            f"mean entropy {_mean_entropy(trace):.3f} nats · "
            f"mean CoT {float(trace.lengths.float().mean()):.1f} tokens")


def shadow_text(trace: Trace, scale: float) -> list[tuple[str, float | None]]:
    """Every rollout's shadow text as (token, entropy / scale) pairs for gr.HighlightedText (redder = less sure),
    each rollout on its own line, headed by its number and answer (✓ right, ✗ wrong)."""
    ok = analysis.rollout_correct(trace)
    answers = trace.meta.get("answers") or [None] * trace.num_rollouts
    out: list[tuple[str, float | None]] = []
    for b in range(trace.num_rollouts):
        n = int(trace.lengths[b])
        mark = {True: " ✓", False: " ✗"}.get(ok[b], "")
        answer = analysis.NO_ANSWER if answers[b] is None else answers[b]
        out.append((f"{'' if b == 0 else chr(10)}#{b} → {answer}{mark}:", None))
        for tok, h in zip(trace.decode(trace.tokens[b, :n]), trace.entropy[b, :n].tolist()):
            out.append((tok, round(min(h / scale, 1.0), 3) if scale > 0 else 0.0))
    return out


def entropy_scale(traces) -> float:
    """The largest CoT entropy of a comparison: shadow texts of every column share one colour scale."""
    return max((float(t.entropy[t.mask].max()) for t in traces if bool(t.mask.any())), default=0.0)


def summary_markdown(result: dict) -> str:
    """The table above the columns: one line per mode."""
    gold = result["gold"]
    lines = [f"**Prompt** ({html.escape(str(result['model']))}): {html.escape(result['prompt'])}  ",
             f"**Gold answer:** {html.escape(gold)}" if gold else
             "**Gold answer:** not given, so answers are not marked right or wrong.",
             "", f"{len(result['traces'])} modes × {result['n']} rollouts in {result['seconds']:.1f} s.", "",
             "| mode | correct | distinct answers | most common answer | mean entropy (nats) | mean CoT length |",
             "|---|---|---|---|---|---|"]
    for label, tr in result["traces"].items():
        acc = _accuracy(tr)
        answers = analysis.distinct_answers(tr)
        top, count = next(iter(answers.items()))
        acc_s = f"{acc[0]}/{acc[1]}" if acc else "–"
        lines.append(f"| {label} | {acc_s} | {len(answers)} | {html.escape(top)} (×{count}) | "
                     f"{_mean_entropy(tr):.3f} | {float(tr.lengths.float().mean()):.1f} |")
    return "\n".join(lines)


def rollout_figures(trace: Trace, rollout: int) -> tuple:
    """One rollout step by step: its soft text (top-3 tokens per step), the mixture weights, and how far the
    fed input is from the nearest vocabulary (the noise shift)."""
    b = min(max(_whole("rollout", rollout, 0, trace.num_rollouts - 1), 0), trace.num_rollouts - 1)
    mixture = _responsive(viz.mixture_topk(trace, rollout=b), narrow=True)
    mixture.update_layout(showlegend=False)  # ranks stack bottom-up, hover names them; a legend would fill the column
    noise = _responsive(viz.noise_shift(trace, rollout=b), narrow=True)
    return viz.soft_text_html(trace, rollout=b, k=3), mixture, noise


def shared_figures(result: dict) -> tuple:
    """Figures across modes: entropy profiles, diversity, 2-D projection of the fed inputs, pass@k."""
    traces = result["traces"]
    curves = None
    if result["gold"]:
        curves = {}
        for label, tr in traces.items():
            counts, n = analysis.correct_counts(tr)
            curves[label] = analysis.pass_at_k_curve(counts, n)
    try:
        projection = _responsive(viz.projection(traces, color_by="mode"))
    except ValueError:  # under 3 fed inputs in all (e.g. 1 rollout of 2 CoT tokens): nothing to project
        projection = None
    return (_responsive(viz.entropy_profiles(traces)), _responsive(viz.diversity(traces)), projection,
            _responsive(viz.pass_at_k(curves)) if curves else None)


SLOT_PARTS = ("column", "header", "shadow text", "entropy heatmap", "soft text", "mixture", "noise", "download")


def compare_views(result: dict, rollout: int, slots: int, details: bool = True) -> list:
    """Widget values for the result area: summary, four shared figures, then for each of `slots` columns the
    SLOT_PARTS (unused columns are hidden). Without `details`, the figures of one rollout and those across
    modes are left blank (None, "")."""
    out = [summary_markdown(result), *(shared_figures(result) if details else [None] * 4)]
    traces = list(result["traces"].items())
    scale = entropy_scale(result["traces"].values())
    for i in range(slots):
        if i < len(traces):
            label, tr = traces[i]
            out += [gr.Column(visible=True), column_header(tr), shadow_text(tr, scale),
                    _responsive(viz.entropy_heatmap(tr), narrow=True),
                    *(rollout_figures(tr, rollout) if details else ["", None, None]),
                    gr.DownloadButton(f"Download the {label} trace (.safetensors)", value=result["files"][label],
                                      visible=True)]
        else:
            out += [gr.Column(visible=False), "", None, None, "", None, None, gr.DownloadButton(visible=False)]
    return out


def add_details(views: list, result: dict, rollout: int) -> list:
    """compare_views(..., details=False) completed with the figures of one rollout and those across modes."""
    out = list(views)
    out[1:5] = shared_figures(result)
    per = len(SLOT_PARTS)
    for i, trace in enumerate(result["traces"].values()):
        at = 5 + i * per + SLOT_PARTS.index("soft text")
        out[at:at + 3] = rollout_figures(trace, rollout)
    return out


@visitor_errors
def on_compare(model_name, question, gold, mode_names, n, soft_tau, hard_tau, gamma, max_cot_tokens, seed,
               use_finetuned, settings: Settings, session: Session, progress=gr.Progress()):
    """The Compare button: roll out, then fill the result area in two updates: answers, shadow texts and entropy
    first; then everything, with the figures of one rollout and those across modes (the last update is whole,
    so an API client's predict() gets it all). Offers the traces to Explore."""
    result = compare(model_name, question, gold, mode_names, n, soft_tau, hard_tau, gamma, max_cot_tokens, seed,
                     use_finetuned, settings, session, progress)
    first = compare_views(result, 0, settings.max_modes, details=False)
    rest = [gr.Slider(minimum=0, maximum=max(result["n"] - 1, 1), value=0, step=1, interactive=result["n"] > 1),
            gr.Dropdown(choices=list(result["traces"]), value=None), session]
    yield [*first, *rest]
    yield [*add_details(first, result, 0), *rest]


@visitor_errors
def on_rollout(rollout, settings: Settings, session: Session):
    """The rollout slider: redraw the per-rollout figures of every column from the stored traces."""
    out = []
    traces = list((session.compare or {}).get("traces", {}).values())
    for i in range(settings.max_modes):
        out += list(rollout_figures(traces[i], rollout)) if i < len(traces) else ["", None, None]
    return out


# ---- Train -------------------------------------------------------------------------------------------------

def before_after_rollouts(model, tok, mode: Mode, examples, seed: int = 0) -> Trace:
    """The same held-out problems, BEFORE_AFTER_SAMPLES rollouts each, greedy answers: a Trace with correctness."""
    task = get_task(TASK)
    r = generate(model, tok, [task.prompt(e) for e in examples], mode.replace(answer_temperature=0.0),
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


def _share_correct(trace: Trace) -> float:
    return sum(trace.meta["correct"]) / len(trace.meta["correct"])


def _train_config(mode, algorithm, steps, learning_rate, group_size, prompts_per_step, settings: Settings) -> RLConfig:
    if mode not in TRAIN_MODES:
        raise ValueError(f"training mode must be one of {', '.join(TRAIN_MODES)}, got {mode!r}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    steps = _check_int("steps", steps, 1, settings.max_train_steps)
    group_size = _check_int("group size", group_size, 2, settings.max_train_rollouts)
    prompts_per_step = _check_int("prompts per step", prompts_per_step, 1, settings.max_train_rollouts)
    if group_size * prompts_per_step > settings.max_train_rollouts:
        raise ValueError(f"prompts per step × group size = {prompts_per_step * group_size} rollouts per step; "
                         f"this server allows {settings.max_train_rollouts}")
    lr = _check_float("learning rate", learning_rate, 1e-7, 1e-2)
    # Validation (greedy accuracy) about five times per run, on 64 problems: ~1 s each on the embedded model.
    return RLConfig(mode=mode, algorithm=algorithm, steps=steps, learning_rate=lr, group_size=group_size,
                    prompts_per_step=prompts_per_step, warmup_steps=min(5, steps // 4),
                    max_cot_tokens=min(64, settings.max_cot_tokens), eval_every=max(1, steps // 5), eval_size=64,
                    save_every=0)


def status_html(text: str, done: int | None = None, total: int | None = None) -> str:
    """Train's status line, above a progress bar when the steps done are known (Gradio's own progress display
    hides while a generator streams its updates, so the bar is part of the status)."""
    bar = ""
    if total:
        bar = (f'<div class="sv-bar" role="progressbar" aria-valuenow="{done}" aria-valuemax="{total}">'
               f'<span style="width:{100 * done / total:.1f}%"></span></div>')
    return f'<div class="sv-status">{html.escape(text)}</div>{bar}'


def _train_status(m: dict, cfg: RLConfig, t0: float) -> str:
    if m["step"] == 0:
        text = (f"Step 0 / {cfg.steps}: greedy validation accuracy of the starting model "
                f"{100 * m['val/greedy_accuracy']:.1f}%")
    else:
        val = f" · greedy validation {100 * m['val/greedy_accuracy']:.1f}%" if "val/greedy_accuracy" in m else ""
        text = (f"Step {m['step']} / {cfg.steps} ({time.perf_counter() - t0:.0f} s): mean reward {m['reward']:.1f}, "
                f"accuracy of the step's rollouts {100 * m['accuracy']:.0f}%, CoT entropy {m['entropy']:.3f} nats{val}")
    return status_html(text, m["step"], cfg.steps)


@visitor_errors
def on_train(model_name, mode, algorithm, steps, learning_rate, group_size, prompts_per_step, settings: Settings,
             session: Session, progress=gr.Progress()):
    """Train: fine-tune a private copy of the model, yielding (status, curves, before/after text, figure, table,
    Compare's 'use my fine-tuned model' checkbox, session) after every step. Cancel stops it between steps."""
    from softviz.train import train

    cfg = _train_config(mode, algorithm, steps, learning_rate, group_size, prompts_per_step, settings)
    base, tok = get_model(model_name, settings)
    requested = session.train_requested_at or time.monotonic()  # API calls skip the button's pre-step
    session.train_requested_at = None

    def cancelled() -> bool:  # Cancel pressed after this run was requested (also while it waited), or tab closed
        return session.closed or (session.cancel_at is not None and session.cancel_at >= requested)

    keep = gr.Checkbox()  # leave Compare's checkbox as it is until the run ends
    if cancelled():
        yield (status_html("Cancelled before it started."), None, "", None, None, keep, session)
        return
    task = get_task(TASK)
    examples = task.examples("test", BEFORE_AFTER_PROMPTS)
    label = f"{cfg.mode} / {cfg.algorithm}"
    yield (status_html("Measuring the model before training…", 0, cfg.steps), None, "", None, None, keep, session)
    before = before_after_rollouts(base, tok, Mode.preset(cfg.mode), examples)
    model = copy.deepcopy(base)  # the shared model stays read-only; this copy is the visitor's alone
    metrics, t0, stopped = [], time.perf_counter(), False
    for m in train(model, tok, cfg, output_dir=None, progress=False):
        metrics.append(m)
        progress((m["step"], cfg.steps), desc="RL steps", unit="steps")
        yield (_train_status(m, cfg, t0), _responsive(viz.training_curves({label: metrics}, smooth=3)), "", None,
               None, keep, session)
        if cancelled():
            stopped = True
            break
    if session.closed:
        return
    after = before_after_rollouts(model, tok, Mode.preset(cfg.mode), examples)
    done = metrics[-1]["step"] if metrics else 0
    session.finetuned = {"model": model, "tokenizer": tok, "base": model_name, "config": cfg, "metrics": metrics}
    status = status_html(f"{'Cancelled' if stopped else 'Finished'} after {done} of {cfg.steps} steps "
                         f"({time.perf_counter() - t0:.0f} s). The fine-tuned model is yours for this session: tick "
                         "'use my fine-tuned model' in Compare to try it.", done, cfg.steps)
    summary = (f"### Before / after, on the same {len(examples)} held-out problems × {BEFORE_AFTER_SAMPLES} rollouts "
               f"({cfg.mode}, greedy answers)\nCorrect: **{100 * _share_correct(before):.0f}%** before → "
               f"**{100 * _share_correct(after):.0f}%** after. Mean CoT entropy: {_mean_entropy(before):.3f} → "
               f"{_mean_entropy(after):.3f} nats.")
    yield (status, _responsive(viz.training_curves({label: metrics}, smooth=3)), summary,
           _responsive(viz.entropy_before_after(before, after)), before_after_table(examples, before, after),
           gr.Checkbox(interactive=True, label=f"use my fine-tuned model ({label}, {done} steps)"), session)


def on_train_requested(session: Session) -> str:
    """Train's first, unqueued step: note when it was pressed, so that Cancel also stops a run still queued."""
    session.train_requested_at = time.monotonic()
    return status_html("Waiting for a free trainer (fine-tunes run one at a time on this server)…")


def on_cancel(session: Session) -> str:
    """Cancel: the fine-tune stops after its current step and still shows the before/after comparison."""
    session.cancel_at = time.monotonic()
    return status_html("Stopping after the current step…")


# ---- Explore -----------------------------------------------------------------------------------------------

def step_table(trace: Trace, rollout: int, step: int) -> list[list]:
    """Rows for one step: rank, mixed token, its weight, nearest vocabulary token of the fed input, its score."""
    k = trace.topk_ids.shape[-1]
    kn = trace.nearest_ids.shape[-1]
    mixed = trace.decode(trace.topk_ids[rollout, step])
    near = trace.decode(trace.nearest_ids[rollout, step]) if kn else []
    rows = []
    for i in range(max(k, kn)):
        rows.append([i + 1, repr(mixed[i]) if i < k else "",
                     f"{float(trace.topk_weights[rollout, step, i]):.4g}" if i < k else "",
                     repr(near[i]) if i < kn else "",
                     f"{float(trace.nearest_scores[rollout, step, i]):.4g}" if i < kn else ""])
    return rows


def explore_summary(trace: Trace) -> str:
    meta = trace.meta
    prompts = meta.get("prompts") or ["?"]
    gold = (meta.get("golds") or [None])[0]
    acc = _accuracy(trace)
    return (f"**{meta.get('mode_label', '?')}** on model {html.escape(str(meta.get('model')))} · seed "
            f"{meta.get('seed')} · {trace.num_rollouts} rollouts × up to {trace.num_steps} CoT steps"
            + (f" · {acc[0]}/{acc[1]} correct" if acc else "") + f"  \n**Prompt:** {html.escape(prompts[0])}"
            + (f" (+{len(prompts) - 1} more)" if len(prompts) > 1 else "")
            + (f"  \n**Gold:** {html.escape(str(gold))}" if gold else ""))


def explore_step(rollout, step, session: Session) -> list:
    """(step text, step table) of one step of the explored trace."""
    trace = session.explore
    if trace is None:
        raise ValueError("open a trace first: upload a .safetensors file or pick one from your last comparison")
    b = min(max(_whole("rollout", rollout, 0, trace.num_rollouts - 1), 0), trace.num_rollouts - 1)
    length = int(trace.lengths[b])
    if length == 0:
        return [f"Rollout {b} has no CoT steps.", []]
    t = min(max(_whole("CoT step", step, 0, length - 1), 0), length - 1)
    return [f"**Step {t}** of rollout {b} ({length} steps): shadow token {trace.decode([trace.tokens[b, t]])[0]!r} · "
            f"entropy {float(trace.entropy[b, t]):.3f} nats · noise ‖σε‖ {float(trace.noise_norm[b, t]):.3f}",
            step_table(trace, b, t)]


def explore_view(rollout, step, session: Session) -> list:
    """(rollout text, entropy heatmap, mixture figure, noise figure, step text, step table) of the explored trace."""
    step_md, rows = explore_step(rollout, step, session)
    trace = session.explore
    text, mix, noise = rollout_figures(trace, rollout)
    return [text, _responsive(viz.entropy_heatmap(trace), narrow=True), mix, noise, step_md, rows]


def _open_trace(trace: Trace, session: Session) -> list:
    session.explore = trace
    longest = int(trace.lengths.max()) if trace.num_rollouts else 1
    return [explore_summary(trace),
            gr.Slider(minimum=0, maximum=max(trace.num_rollouts - 1, 1), value=0, step=1,
                      interactive=trace.num_rollouts > 1),
            gr.Slider(minimum=0, maximum=max(longest - 1, 1), value=0, step=1),
            *explore_view(0, 0, session)]


@visitor_errors
def on_upload(path, settings: Settings, session: Session) -> list:
    """Explore: open an uploaded Trace file (written by Trace.save: the CLI, a notebook or Compare)."""
    if not path:
        raise ValueError("no file received")
    if not os.path.isfile(path):
        raise ValueError("the uploaded file is no longer on the server; upload it again")
    size_mb = os.path.getsize(path) / 2**20
    if size_mb > settings.max_upload_mb:
        raise ValueError(f"the file has {size_mb:.1f} MB; this server accepts traces up to {settings.max_upload_mb} MB")
    try:
        trace = Trace.load(path)
    except ValueError as err:  # name the file as the visitor knows it, not by where the server keeps it
        raise ValueError(str(err).replace(str(Path(path)), Path(path).name)) from None
    return _open_trace(trace, session)


@visitor_errors
def on_pick(label, session: Session) -> list:
    """Explore: open one of the traces of this visitor's last comparison."""
    traces = (session.compare or {}).get("traces", {})
    if label not in traces:
        raise ValueError("run a comparison first, then pick one of its modes here")
    return _open_trace(traces[label], session)


@visitor_errors
def on_explore_rollout(rollout, step, session: Session) -> list:
    """Explore's rollout slider: that rollout's soft text and figures, and the step."""
    return explore_view(rollout, step, session)


@visitor_errors
def on_explore_step(rollout, step, session: Session) -> list:
    """Explore's step slider: what was mixed at that step, and where the fed input landed."""
    return explore_step(rollout, step, session)


MODES_TABLE = ("| mode | next CoT input | τ | γ |\n|---|---|---|---|\n"
               + "\n".join(f"| {m} | {MODE_HELP[m]} | {p['cot_temperature']:g} | {p['noise_scale']:g} |"
                           for m, p in PRESETS.items()))


# ---- layout ------------------------------------------------------------------------------------------------

INTRO = """# softviz: soft chain-of-thought tokens, side by side
A language model usually *thinks* in hard tokens: it picks one word, then reads it back. **Soft** thinking feeds
back the whole probability-weighted mixture of word embeddings (p·E) plus a little noise; **fuzzy** does the same
with an almost one-hot mixture (*Soft Tokens, Hard Truths*, Butt et al. 2025). The model here is a small one
trained on arithmetic word problems, so everything runs in seconds on a CPU.

**Start:** press **Compare** below. Each column is one way of decoding the same problem: its rollouts' "shadow" text
(the most likely token at each step, coloured by the model's uncertainty), their answers (✓ right, ✗ wrong) and
figures. **Train** fine-tunes a private copy of the model with RL while you watch; **Explore** opens a saved trace
step by step."""

# Shadow text as running text (gr.HighlightedText lays tokens out as spaced flex items), one rollout per line.
CSS = """
.sv-shadow .textfield {display: block !important; line-height: 1.55; max-height: 380px; overflow-y: auto;
  font-family: ui-monospace, Menlo, monospace; font-size: 13px;}
.sv-shadow .token-container {display: inline;}
.sv-shadow .token {margin: 0 !important; padding: 0 !important; border-radius: 2px;}
.sv-modes {font-size: 13px;}
.sv-bar {height: 8px; margin-top: 6px; border-radius: 4px; overflow: hidden; background: var(--neutral-200);}
.sv-bar span {display: block; height: 100%; background: var(--color-accent); transition: width 0.3s;}
"""


def placeholder_figure():
    """An empty figure saying where results will appear. Showing one when the page opens also makes the browser
    load plotly.js then, not after the first click (that saves ~1-2 s of the first comparison on 2 cores)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_annotation(text="Press Compare to fill this figure", showarrow=False, font=dict(size=14, color="#888"))
    fig.update_layout(height=220, template="plotly_white", xaxis_visible=False, yaxis_visible=False,
                      margin=dict(t=10, b=10, l=10, r=10))
    return fig


def first_problem() -> tuple[str, str]:
    """The problem shown when the page opens, (question, gold answer): test problem 7, on which the embedded
    model's modes disagree (hard 2/8, soft 4/8, fuzzy 2/8 correct at seed 0), so there is something to see."""
    ex = get_task(TASK).example("test", DEFAULT_PROBLEM)
    return ex.question, ex.answer


def _compare_tab(settings: Settings) -> dict:
    gr.Markdown("Pick a problem and the ways of decoding to compare, then press **Compare**.")
    question, gold = first_problem()
    c = {}
    with gr.Row():
        with gr.Column(scale=3):
            c["prompt"] = gr.Textbox(question, label="Problem", lines=3, max_lines=8,
                                     info="A question; the model sees 'User: <question> Assistant:'.")
            with gr.Row(equal_height=True):
                c["gold"] = gr.Textbox(gold, label="Gold answer (optional: marks answers right or wrong)", scale=3)
                c["shuffle"] = gr.Button("Random problem", scale=1)
        with gr.Column(scale=2):
            c["modes"] = gr.CheckboxGroup(list(PRESETS), value=list(DEFAULT_MODES),
                                          label=f"Modes to compare (up to {settings.max_modes}, one column each)",
                                          info="The paper's settings first (-greedy: no sampling, no noise), then "
                                               "related methods.")
            with gr.Accordion("What each mode feeds back as the next CoT input", open=False):
                gr.Markdown(MODES_TABLE, elem_classes=["sv-modes"])
    with gr.Row(equal_height=True):
        c["n"] = gr.Slider(1, settings.max_rollouts, value=min(8, settings.max_rollouts), step=1,
                           label="Rollouts per mode")
        c["max_cot"] = gr.Slider(8, settings.max_cot_tokens, value=min(96, settings.max_cot_tokens), step=1,
                                 label="Max CoT tokens")
        # no precision=0: Gradio would round 2.5 silently and refuse NaN with no message; compare() checks the seed
        c["seed"] = gr.Number(0, label="Seed", minimum=0)
        c["run"] = gr.Button("Compare", variant="primary", size="lg")
    with gr.Accordion("Temperatures, noise and model weights", open=False):
        with gr.Row():
            c["soft_tau"] = gr.Number(0.5, label="soft τ (CoT temperature of soft, soft-greedy)", minimum=1e-4)
            c["hard_tau"] = gr.Number(1.0, label="hard τ (sampling temperature of hard)", minimum=1e-4)
            c["gamma"] = gr.Number(0.33, label="γ (noise σ = γ·RMS(E), modes with noise)", minimum=0)
            c["use_ft"] = gr.Checkbox(False, label="use my fine-tuned model (run Train first)", interactive=False)
    c["summary"] = gr.Markdown("*Results appear here: one column per mode.*")
    c["rollout"] = gr.Slider(0, max(min(8, settings.max_rollouts) - 1, 1), value=0, step=1,
                             label="Rollout shown step by step in each column (soft text, mixture weights, "
                                   "nearest vocabulary)")
    c["slots"] = []
    with gr.Row(equal_height=False):
        for _ in range(settings.max_modes):
            with gr.Column(visible=False, min_width=380, elem_classes=["sv-mode-column"]) as col:
                slot = [col, gr.Markdown(),
                        gr.HighlightedText(label="Shadow text of each rollout: redder = higher entropy",
                                           show_legend=False, elem_classes=["sv-shadow"]),
                        gr.Plot(label="Entropy per rollout and step (hover a cell for its tokens; blank: the CoT "
                                      "had ended)"),
                        gr.HTML(),
                        gr.Plot(label="Mixture weights of one rollout: the top 10 stacked, rank 1 at the bottom, "
                                      "grey = rest of the vocabulary"),
                        gr.Plot(label="Nearest vocabulary of one rollout's fed inputs: cosine 1 = exactly a "
                                      "token's embedding; rank 1 = the shadow token is the nearest"),
                        gr.DownloadButton("Download trace", visible=False, size="sm")]
            c["slots"].append(slot)
    c["across"] = gr.Markdown("### Across modes", visible=True)
    with gr.Row():
        c["profiles"] = gr.Plot(placeholder_figure(), label="Entropy per step, all modes")
        c["diversity"] = gr.Plot(placeholder_figure(), label="Diversity of answers")
    with gr.Row():
        c["projection"] = gr.Plot(placeholder_figure(), label="Fed inputs, 2-D projection (PCA)")
        c["passk"] = gr.Plot(placeholder_figure(), label="pass@k (needs a gold answer)")
    return c


def _train_tab(settings: Settings) -> dict:
    gr.Markdown("Fine-tune a private copy of the model with RL (RLOO as in the paper, or GRPO) on the task's "
                "training problems. The curves update after every step; at the end the same held-out problems are "
                "solved before and after. In runs this short, hard-token training learns fastest.")
    c = {}
    with gr.Row(equal_height=True):
        c["mode"] = gr.Radio(list(TRAIN_MODES), value="hard", label="Training mode (CoT inputs)")
        c["algorithm"] = gr.Radio(list(ALGORITHMS), value="rloo", label="Algorithm")
        c["steps"] = gr.Slider(1, settings.max_train_steps, value=min(20, settings.max_train_steps), step=1,
                               label="Steps")
        c["lr"] = gr.Number(1e-4, label="Learning rate", minimum=1e-7, maximum=1e-2)
    with gr.Row(equal_height=True):
        c["group"] = gr.Slider(2, min(32, settings.max_train_rollouts), value=min(8, settings.max_train_rollouts),
                               step=1, label="Group size (rollouts per prompt)")
        c["prompts"] = gr.Slider(1, max(2, settings.max_train_rollouts // 2), value=4, step=1,
                                 label="Prompts per step")
        c["start"] = gr.Button("Train", variant="primary", size="lg")
        c["cancel"] = gr.Button("Cancel", variant="stop", size="lg")
    c["status"] = gr.HTML(status_html("Press Train to start (20 steps take about 30 s here)."))
    c["curves"] = gr.Plot(label="Training curves, updated after every step")
    c["ba_summary"] = gr.Markdown()
    c["ba_figure"] = gr.Plot(label="Entropy before and after")
    c["ba_table"] = gr.Dataframe(headers=["problem", "gold", "before", "after"], label="Answers before and after",
                                 wrap=True, interactive=False, column_widths=["46%", "8%", "23%", "23%"])
    return c


def _explore_tab(settings: Settings) -> dict:
    gr.Markdown("Open a Trace (a `.safetensors` file written by `softviz`, a notebook's `trace.save(...)` or "
                "Compare's download), or a mode of your last comparison, and walk through it step by step.")
    c = {}
    with gr.Row():
        c["upload"] = gr.File(label=f"Trace file (.safetensors, up to {settings.max_upload_mb} MB)",
                              file_types=[".safetensors"], type="filepath", height=140)
        c["pick"] = gr.Dropdown([], label="…or a mode of your last comparison", value=None)
    c["summary"] = gr.Markdown("*No trace open.*")
    with gr.Row():
        c["rollout"] = gr.Slider(0, 1, value=0, step=1, label="Rollout")
        c["step"] = gr.Slider(0, 1, value=0, step=1, label="CoT step")
    c["text"] = gr.HTML()
    c["step_md"] = gr.Markdown()
    c["table"] = gr.Dataframe(headers=["rank", "mixed token", "weight", "nearest token of the fed input",
                                       "cosine (or L2 distance)"],
                              label="This step: the tokens mixed, and the vocabulary nearest to the fed input",
                              interactive=False)
    with gr.Row():
        c["heat"] = gr.Plot(label="Entropy per rollout and step")
        c["mix"] = gr.Plot(label="Mixture weights and nearest vocabulary")
        c["noise"] = gr.Plot(label="Noise shift")
    return c


def build_demo(settings: Settings | None = None) -> gr.Blocks:
    """The app, not launched. Per-visitor state is a Session in gr.State; the host's limits are `settings`."""
    settings = settings or Settings()
    sessions = Sessions()
    # Gradio's own copies of downloaded traces are deleted hourly once a day old (they hold visitors' prompts)
    with gr.Blocks(title="softviz: soft chain-of-thought tokens", fill_width=True,
                   delete_cache=(3600, 86400)) as demo:
        session = gr.State(new_session, time_to_live=settings.session_ttl_s, delete_callback=_close_session)
        host = gr.State(settings)  # server-side only: a State is never read from the visitor
        gr.Markdown(INTRO)
        model = gr.Dropdown(list(settings.models), value=settings.models[0], label="Model (set by the host)",
                            visible=len(settings.models) > 1)
        with gr.Tabs():
            with gr.Tab("Compare"):
                cmp = _compare_tab(settings)
            with gr.Tab("Train"):
                trn = _train_tab(settings)
            with gr.Tab("Explore"):
                exp = _explore_tab(settings)

        # Compare
        cmp["shuffle"].click(random_problem, outputs=[cmp["prompt"], cmp["gold"]], queue=False,
                             api_name="random_problem")
        slot_parts = [part for slot in cmp["slots"] for part in slot]
        cmp["run"].click(
            on_compare,
            inputs=[model, cmp["prompt"], cmp["gold"], cmp["modes"], cmp["n"], cmp["soft_tau"], cmp["hard_tau"],
                    cmp["gamma"], cmp["max_cot"], cmp["seed"], cmp["use_ft"], host, session],
            outputs=[cmp["summary"], cmp["profiles"], cmp["diversity"], cmp["projection"], cmp["passk"], *slot_parts,
                     cmp["rollout"], exp["pick"], session],
            api_name="compare", concurrency_id="rollouts", concurrency_limit=settings.concurrency)
        cmp["rollout"].release(on_rollout, inputs=[cmp["rollout"], host, session],
                               outputs=[p for slot in cmp["slots"] for p in slot[4:7]], api_name="rollout",
                               concurrency_limit=4)
        # Train
        trn["start"].click(on_train_requested, inputs=[session], outputs=[trn["status"]], queue=False,
                           api_visibility="private").then(
            on_train,
            inputs=[model, trn["mode"], trn["algorithm"], trn["steps"], trn["lr"], trn["group"], trn["prompts"],
                    host, session],
            outputs=[trn["status"], trn["curves"], trn["ba_summary"], trn["ba_figure"], trn["ba_table"], cmp["use_ft"],
                     session],
            api_name="train", concurrency_id="train", concurrency_limit=settings.train_concurrency)
        trn["cancel"].click(on_cancel, inputs=[session], outputs=[trn["status"]], api_name="cancel", queue=False)
        # Explore
        view = [exp["text"], exp["heat"], exp["mix"], exp["noise"], exp["step_md"], exp["table"]]
        opened = [exp["summary"], exp["rollout"], exp["step"], *view]
        exp["upload"].upload(on_upload, inputs=[exp["upload"], host, session], outputs=opened, api_name="open_trace",
                             concurrency_limit=4)
        exp["pick"].input(on_pick, inputs=[exp["pick"], session], outputs=opened, api_name="pick_trace",
                          concurrency_limit=4)
        exp["rollout"].release(on_explore_rollout, inputs=[exp["rollout"], exp["step"], session], outputs=view,
                               api_name="explore_rollout", concurrency_limit=4)
        exp["step"].release(on_explore_step, inputs=[exp["rollout"], exp["step"], session],
                            outputs=[exp["step_md"], exp["table"]], api_name="explore_step", concurrency_limit=4)
        # A closed tab frees its Session at once (fine-tuned model, traces, files) and stops its fine-tune.
        demo.load(sessions.bind, inputs=[session], queue=False)
        demo.unload(sessions.close)
    demo.sessions = sessions  # for tests and the host's curiosity: how many browser sessions are open
    return demo


# ---- launch ------------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """Errors as one line, `softviz app: error: ...` (exit 2), as the softviz command prints them."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def parse_args(argv=None, environ=None) -> tuple[Settings, argparse.Namespace]:
    """Flags override SOFTVIZ_* environment variables, which override the defaults."""
    parser = _Parser(prog="softviz app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (0.0.0.0 to serve a network)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="also open a temporary public *.gradio.live link")
    for f in dataclasses.fields(Settings):
        default = ",".join(f.default) if f.name == "models" else f.default
        doc = f"{f.metadata['help']} (env SOFTVIZ_{f.name.upper()}; default {default})"
        parser.add_argument("--" + f.name.replace("_", "-"), type=int if f.type == "int" else str, default=None,
                            help=doc)
    args = parser.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)}
    if overrides["models"] is not None:
        overrides["models"] = tuple(m for m in overrides["models"].split(",") if m.strip())
    return Settings.from_env(environ, **overrides), args


def warm_up(settings: Settings) -> None:
    """Load the default model and run one tiny rollout per default mode, so the first visitor waits for nothing."""
    model, tok = get_model(settings.models[0], settings)
    task = get_task(TASK)
    for name in DEFAULT_MODES:
        generate(model, tok, [task.prompt(first_problem()[0])], name, n=2, max_cot_tokens=8, max_answer_tokens=2,
                 trace=TraceConfig(keep_inputs=True), answer_cue=task.answer_cue)


def main(argv=None) -> None:
    """`python app/app.py [--share] [--host H] [--port P] [--models a,b] [--max-rollouts N] ...`

    Deletes the session folders of killed servers before it starts, and all of its own when it stops."""
    try:
        settings, args = parse_args(argv)
    except ValueError as err:
        print(f"softviz app: error: {' '.join(str(err).split())}", file=sys.stderr)
        raise SystemExit(2) from None
    # our lines (visitors' mistakes, folders deleted) at INFO; other libraries' only from WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("softviz").setLevel(logging.INFO)
    stale = remove_stale_folders()
    if stale:
        log.info("deleted %d session folder(s) left by stopped servers", len(stale))
    clean_up_on_signals()
    demo = None
    try:
        warm_up(settings)
        demo = build_demo(settings)
        launch(demo, settings, server_name=args.host, server_port=args.port, share=args.share)
    finally:  # Ctrl-C, SIGTERM or an error: close the server (Gradio deletes its cached files) and ours
        if demo is not None:
            demo.close(verbose=False)
        remove_own_folders()


def launch(demo: gr.Blocks, settings: Settings, **kwargs):
    """Queue with the host's limits and launch; the page's CSS goes to launch() since Gradio 6.
    kwargs go to gr.Blocks.launch (server_name, server_port, share, prevent_thread_lock, ...)."""
    demo.queue(max_size=settings.max_queue, default_concurrency_limit=settings.concurrency)
    # state_session_capacity bounds the page states Gradio keeps for closed sessions (its default is 10,000)
    return demo.launch(max_file_size=f"{settings.max_upload_mb}mb", css=CSS, footer_links=["api", "gradio"],
                       **{"state_session_capacity": 1000, **kwargs})


if __name__ == "__main__":
    main()
