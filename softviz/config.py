"""Frozen configuration dataclasses: Mode (how CoT inputs are formed) and TraceConfig (what is recorded).

Field names follow the paper (Butt et al. 2025, §3-4): CoT temperature τ (`cot_temperature`) and the
noise scale γ (`noise_scale`, σ = γ·RMS(E)). Related methods follow their own papers (named in docs/method.md).
"""

from __future__ import annotations

import dataclasses

from softviz import checks

# How the input of the next CoT step is formed: Mode.kind -> description. Each kind is a policy class in
# softviz.policies, which fills this table when it registers (softviz.policies.register).
KINDS: dict[str, str] = {}
MULTIPLEX_WEIGHTINGS = ("uniform", "probs")


def _set(obj, field: str, value) -> None:
    object.__setattr__(obj, field, value)  # frozen dataclass: store the checked, converted value


@dataclasses.dataclass(frozen=True)
class Mode:
    """How the chain of thought is decoded. Use the presets (`Mode.preset("soft")`) or set fields.

    The answer that follows the CoT is always hard tokens (paper §4), greedy when `answer_temperature` is 0.
    """

    kind: str = "soft"
    cot_temperature: float = 0.5  # τ: 0.5 soft, 1e-4 fuzzy, 1.0 hard sampling (paper §4); 0 = argmax (hard only)
    noise_scale: float = 0.33  # γ: σ = γ·RMS(E); 0.33 in the paper (§4, App. F.1); 0 = "greedy" soft/fuzzy
    answer_temperature: float = 0.0  # answers are greedy at test time (paper §4); training samples at 1.0
    top_k: int | None = None  # keep the k most likely tokens, renormalise (Soft Thinking's max_topk = 10)
    top_p: float | None = None  # nucleus filter before mixing (Soft Thinking, MoI use 0.95)
    min_p: float | None = None  # drop tokens below min_p × max prob (Soft Thinking uses 0.001)
    cold_stop_entropy: float | None = None  # Soft Thinking's Cold Stop: end the CoT once the entropy (nats)...
    cold_stop_steps: int = 256  # ...stays below cold_stop_entropy for this many steps (repository default 256)
    moi_beta: float = 1.0  # β of Mixture of Inputs; 1 is its "universal setting"
    gumbel_temperature: float = 0.5  # τ_g of Gumbel-softmax; 0.5 is Wu et al.'s best
    dirichlet_alpha: float = 1.0  # α in Dir(α·p) [UNC: no recommended value is published]
    multiplex_k: int = 3  # K tokens sampled per step by Multiplex Thinking (3 is its paper's sweet spot)
    multiplex_weighting: str = "uniform"  # feed their mean ("uniform") or their p-weighted mean ("probs")
    name: str | None = None  # display name; defaults to the preset's

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Mode.kind = {self.kind!r} is invalid: allowed one of {sorted(KINDS)}")
        hard = self.kind == "hard"
        _set(self, "cot_temperature", checks.temperature(
            "Mode.cot_temperature", self.cot_temperature, zero=hard,
            why="0 = argmax is for hard tokens only" if not hard else "0 = greedy"))
        if hard and self.noise_scale != 0:
            raise ValueError(f"Mode.noise_scale = {self.noise_scale!r} is invalid: allowed 0 for hard tokens "
                             "(for hard tokens plus noise use the fuzzy preset)")
        _set(self, "noise_scale", checks.real("Mode.noise_scale", self.noise_scale, 0, 100,
                                              why="γ; the paper uses 0.33, and γ = 3 already collapses training"))
        _set(self, "answer_temperature", checks.temperature("Mode.answer_temperature", self.answer_temperature,
                                                            zero=True, why="0 = greedy answer"))
        if self.top_k is not None:
            _set(self, "top_k", checks.integer("Mode.top_k", self.top_k, 1, why="or None"))
        if self.top_p is not None:
            _set(self, "top_p", checks.real("Mode.top_p", self.top_p, 0, 1, low_open=True, why="or None"))
        if self.min_p is not None:
            _set(self, "min_p", checks.real("Mode.min_p", self.min_p, 0, 1, high_open=True, why="or None"))
        if self.cold_stop_entropy is not None:
            _set(self, "cold_stop_entropy", checks.real("Mode.cold_stop_entropy", self.cold_stop_entropy, 0,
                                                        low_open=True, why="nats, or None"))
            if self.kind != "soft_thinking":
                raise ValueError(f"Mode.cold_stop_entropy = {self.cold_stop_entropy!r} is invalid: allowed only "
                                 "with kind='soft_thinking'")
        _set(self, "cold_stop_steps", checks.integer("Mode.cold_stop_steps", self.cold_stop_steps, 1,
                                                     checks.MAX_TOKENS))
        _set(self, "moi_beta", checks.real("Mode.moi_beta", self.moi_beta, 0, why="β"))
        _set(self, "gumbel_temperature", checks.temperature("Mode.gumbel_temperature", self.gumbel_temperature,
                                                            zero=False, why="τ_g"))
        _set(self, "dirichlet_alpha", checks.real("Mode.dirichlet_alpha", self.dirichlet_alpha, 0, low_open=True,
                                                  why="α"))
        _set(self, "multiplex_k", checks.integer("Mode.multiplex_k", self.multiplex_k, 1, 64, why="K samples per step"))
        if self.multiplex_weighting not in MULTIPLEX_WEIGHTINGS:
            raise ValueError(f"Mode.multiplex_weighting = {self.multiplex_weighting!r} is invalid: allowed one of "
                             f"{MULTIPLEX_WEIGHTINGS}")
        if self.name is not None and not isinstance(self.name, str):
            raise ValueError(f"Mode.name = {self.name!r} is invalid: allowed a string or None")

    # ---- derived properties -----------------------------------------------------------------------
    @property
    def policy(self):
        """The policy object of this mode (softviz.policies): how a CoT step is drawn and scored."""
        from softviz.policies import policy_for

        return policy_for(self)

    @property
    def is_mixture(self) -> bool:
        """True when CoT inputs can be mixtures of embeddings rather than single tokens."""
        return self.policy.feeds_mixtures

    @property
    def is_greedy(self) -> bool:
        """No randomness anywhere: a deterministic CoT and a greedy answer."""
        return self.answer_temperature == 0 and self.policy.is_greedy

    @property
    def label(self) -> str:
        return self.name or self.kind

    def replace(self, **changes) -> "Mode":
        return dataclasses.replace(self, **changes)

    # ---- presets ------------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides) -> "Mode":
        """A named preset: the paper's six inference settings and the related methods.

        hard, hard-greedy, soft, soft-greedy, fuzzy, fuzzy-greedy (paper §4); soft-thinking,
        soft-thinking-cold-stop, mixture-of-inputs, gumbel, dirichlet, soft-grpo (their own papers, see
        docs/method.md).
        """
        if isinstance(name, Mode):
            return name.replace(**overrides) if overrides else name
        if not isinstance(name, str):
            raise ValueError(f"mode {name!r} is not a preset name; choose one of: {', '.join(PRESETS)} "
                             "(or pass a Mode)")
        key = name.strip().lower().replace("_", "-")
        if key not in PRESETS:
            raise ValueError(f"unknown mode {name!r}; choose one of: {', '.join(PRESETS)}")
        fields = dict(PRESETS[key])
        fields.setdefault("name", key)
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"Mode has no field {', '.join(unknown)}; its fields: "
                             f"{', '.join(f.name for f in dataclasses.fields(cls))}")
        fields.update(overrides)
        return cls(**fields)


# The paper's six inference settings (§4) and the related methods (docs/method.md names their papers).
PRESETS: dict[str, dict] = {
    "hard": dict(kind="hard", cot_temperature=1.0, noise_scale=0.0),
    "hard-greedy": dict(kind="hard", cot_temperature=0.0, noise_scale=0.0),
    "soft": dict(kind="soft", cot_temperature=0.5, noise_scale=0.33),
    "soft-greedy": dict(kind="soft", cot_temperature=0.5, noise_scale=0.0),
    "fuzzy": dict(kind="soft", cot_temperature=1e-4, noise_scale=0.33),
    "fuzzy-greedy": dict(kind="soft", cot_temperature=1e-4, noise_scale=0.0),
    # Soft Thinking repository defaults: T 0.6, top-p 0.95, max_topk 10, min_p 0.001, no noise.
    "soft-thinking": dict(kind="soft_thinking", cot_temperature=0.6, noise_scale=0.0, top_k=10, top_p=0.95,
                          min_p=0.001),
    "soft-thinking-cold-stop": dict(kind="soft_thinking", cot_temperature=0.6, noise_scale=0.0, top_k=10,
                                    top_p=0.95, min_p=0.001, cold_stop_entropy=0.01, cold_stop_steps=256),
    # MoI universal setting: T 0.6, top-p 0.95, β = 1.
    "mixture-of-inputs": dict(kind="mixture_of_inputs", cot_temperature=0.6, noise_scale=0.0, top_p=0.95,
                              moi_beta=1.0),
    # Wu et al.: Soft Thinking's filters plus Gumbel-softmax (τ_g 0.5) or Dirichlet resampling.
    "gumbel": dict(kind="gumbel", cot_temperature=0.6, noise_scale=0.0, top_k=10, top_p=0.95,
                   gumbel_temperature=0.5),
    "dirichlet": dict(kind="dirichlet", cot_temperature=0.6, noise_scale=0.0, top_k=10, top_p=0.95,
                      dirichlet_alpha=1.0),
    # SofT-GRPO's rollout (Zheng et al. 2025, arXiv 2511.06411): Gumbel noise on the top-5 log-probs, τ_g = 0.1.
    # Trainable: its action g' = log p + g has the Gumbel density (softviz.rl).
    "soft-grpo": dict(kind="gumbel", cot_temperature=1.0, noise_scale=0.0, top_k=5, top_p=0.95,
                      gumbel_temperature=0.1),
    # Multiplex Thinking (Tang et al. 2026, arXiv 2601.08808): K = 3 tokens sampled at τ = 1, their mean fed.
    # Trainable: the step's log-prob is the sum of the K categorical log-probs.
    "multiplex": dict(kind="multiplex", cot_temperature=1.0, noise_scale=0.0, multiplex_k=3),
    "multiplex-weighted": dict(kind="multiplex", cot_temperature=1.0, noise_scale=0.0, multiplex_k=3,
                               multiplex_weighting="probs"),
}
PAPER_SETTINGS = ("hard-greedy", "hard", "soft-greedy", "soft", "fuzzy-greedy", "fuzzy")


@dataclasses.dataclass(frozen=True)
class TraceConfig:
    """What a rollout records besides its tokens. Sizes grow with steps × k, never with the vocabulary."""

    top_k: int = 10  # mixture weights kept per step
    nearest_k: int = 5  # nearest vocabulary tokens of the fed input kept per step
    nearest_metric: str = "cosine"  # or "l2"
    keep_inputs: bool = False  # keep the fed input vectors themselves (steps × d floats per rollout)
    layers: tuple[str, ...] = ()  # named modules (model.named_modules() paths) whose last-position output is kept

    def __post_init__(self):
        _set(self, "top_k", checks.integer("TraceConfig.top_k", self.top_k, 1, 100_000))
        _set(self, "nearest_k", checks.integer("TraceConfig.nearest_k", self.nearest_k, 0, 100_000))
        if self.nearest_metric not in ("cosine", "l2"):
            raise ValueError(f"TraceConfig.nearest_metric = {self.nearest_metric!r} is invalid: allowed 'cosine' or 'l2'")
        if not isinstance(self.keep_inputs, bool):
            raise ValueError(f"TraceConfig.keep_inputs = {self.keep_inputs!r} is invalid: allowed True or False")
        layers = (self.layers,) if isinstance(self.layers, str) else self.layers  # one name, not its characters
        try:
            layers = tuple(layers)
        except TypeError:
            layers = (layers,)
        for name in layers:
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"TraceConfig.layers = {self.layers!r} is invalid: allowed module names as in "
                                 f"model.named_modules(), e.g. ('model.norm', 'model.layers.3'); got {name!r}")
        _set(self, "layers", layers)


ALGORITHMS = ("rloo", "grpo")


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """One RL run. Names follow TRL's GRPOConfig where they mean the same (num_generations -> group_size)."""

    mode: str = "soft"  # preset name of the rollout mode: hard, soft or fuzzy (paper §4)
    algorithm: str = "rloo"  # the paper's RLOO (App. A); "grpo" normalises by the group std
    task: str = "arithmetic"
    chat_template: str = "auto"  # prompts of an instruct model: the task's default, "on" or "off" (tasks.get_task)
    steps: int = 60
    prompts_per_step: int = 4  # B: the paper uses 2 prompts...
    group_size: int = 8  # ...x G = 32 samples; smaller here so a CPU step takes seconds
    micro_batch: int | None = None  # rollouts per forward-backward pass (gradients accumulate); None: all at once
    learning_rate: float = 5e-5  # the paper's 3e-6..8e-6 suit 3B-8B models; the 3M-parameter embedded one needs more
    warmup_steps: int = 5  # the paper warms up 20 of 4000 steps
    weight_decay: float = 0.0  # not stated in the paper
    max_grad_norm: float = 1.0  # not stated; the authors' next paper (arXiv 2602.03979) clips at 1.0
    max_cot_tokens: int = 64  # the paper trains with 128 (GSM8K) and 512 (MATH)
    max_answer_tokens: int = 16  # the paper uses 32
    answer_temperature: float = 1.0  # answers are sampled in training (paper §3)
    scale_rewards: bool = True  # GRPO only: divide by the group std
    epsilon: float | None = None  # PPO-style ratio clip (not in the paper)
    beta: float = 0.0  # KL weight to the frozen initial model (not in the paper)
    embedding_lr_scale: float = 1.0  # E's learning rate = scale x learning_rate (the paper: 1)
    cot_weight: float = 1.0  # weight of the CoT log-prob terms in the loss (the paper: 1; 0 trains the answer only)
    mixture_embedding_grad: bool = True  # False: the Gaussian term trains p only, not E through the mean p·E
    noise_scale: float | None = None  # γ of soft/fuzzy rollouts (σ = γ·RMS(E)); None: the preset's 0.33 (paper)
    eval_every: int = 10  # greedy validation every N steps (0: never); the best checkpoint is kept
    validation_mode: str | None = None  # greedy preset to validate with; None: the rollout policy's greedy variant
    eval_size: int = 128
    save_every: int = 10  # checkpoint every N steps (0: only at the end)
    trace_steps: tuple[int, ...] = ()  # steps whose rollouts are saved as Traces
    seed: int = 0

    def __post_init__(self):
        def bad(field, allowed):
            raise ValueError(f"RLConfig.{field} = {getattr(self, field)!r} is invalid: allowed {allowed}")

        def number(field, check, *args, **kwargs):
            _set(self, field, check(f"RLConfig.{field}", getattr(self, field), *args, **kwargs))

        if not isinstance(self.mode, str) or self.mode not in PRESETS:
            bad("mode", f"a preset name: {', '.join(PRESETS)}")
        if self.algorithm not in ALGORITHMS:
            bad("algorithm", f"one of {ALGORITHMS}")
        if not isinstance(self.task, str) or not self.task:
            bad("task", "a task name, e.g. 'arithmetic' or 'gsm8k'")
        if self.chat_template not in ("auto", "on", "off"):
            bad("chat_template", "'auto' (the task's default), 'on' or 'off'")
        number("steps", checks.integer, 1, 10_000_000)
        number("prompts_per_step", checks.integer, 1, checks.MAX_ROLLOUTS)
        number("group_size", checks.integer, 2, checks.MAX_ROLLOUTS,
               why=f"{self.algorithm} compares samples within a group")
        if self.prompts_per_step * self.group_size > checks.MAX_ROLLOUTS:
            bad("group_size", f"prompts_per_step x group_size <= {checks.MAX_ROLLOUTS} rollouts per step")
        if self.micro_batch is not None:
            number("micro_batch", checks.integer, 1, checks.MAX_ROLLOUTS,
                   why="or None (every rollout of a step in one pass)")
        for f in ("max_cot_tokens", "max_answer_tokens"):
            number(f, checks.integer, 1, checks.MAX_TOKENS)
        number("eval_size", checks.integer, 1, checks.MAX_ROLLOUTS)
        for f in ("warmup_steps", "eval_every", "save_every"):
            number(f, checks.integer, 0, 10_000_000)
        number("learning_rate", checks.real, 0, 1, low_open=True)
        number("weight_decay", checks.real, 0)
        number("max_grad_norm", checks.real, 0, low_open=True)
        number("answer_temperature", checks.temperature, zero=False, why="training samples its answers")
        if self.epsilon is not None:
            number("epsilon", checks.real, 0, 1, low_open=True, high_open=True, why="or None")
        number("beta", checks.real, 0)
        number("cot_weight", checks.real, 0)
        number("embedding_lr_scale", checks.real, 0, why="0 freezes the embeddings")
        if self.noise_scale is not None:
            if not Mode.preset(self.mode).policy.adds_noise:
                bad("noise_scale", "None: this mode's rollouts have no Gaussian noise to scale (soft and fuzzy do)")
            number("noise_scale", checks.real, 0, 100, low_open=True,
                   why="or None; training needs noise: its density is the CoT log-prob")
        for f in ("scale_rewards", "mixture_embedding_grad"):
            if not isinstance(getattr(self, f), bool):
                bad(f, "True or False")
        number("seed", checks.seed)
        if self.validation_mode is not None and (self.validation_mode not in PRESETS
                                                 or not Mode.preset(self.validation_mode).is_greedy):
            bad("validation_mode", "None or a greedy preset: "
                + ", ".join(n for n in PRESETS if Mode.preset(n).is_greedy))
        steps = self.trace_steps
        if isinstance(steps, (str, bytes)) or not hasattr(steps, "__iter__"):
            bad("trace_steps", "a sequence of step numbers, e.g. (1, 60)")
        _set(self, "trace_steps", tuple(checks.integer("RLConfig.trace_steps[]", s, 1, self.steps) for s in steps))

    @property
    def rollout_mode(self) -> Mode:
        extra = {} if self.noise_scale is None else {"noise_scale": self.noise_scale}
        return Mode.preset(self.mode, answer_temperature=self.answer_temperature, **extra)

    @property
    def greedy_mode(self) -> Mode:
        """The rollout policy's greedy variant (softviz.policies): the paper's greedy validation is argmax
        tokens, or the soft/fuzzy mixture at the training τ with σ = 0 (§4); soft-grpo and multiplex validate
        with argmax tokens (their noiseless limits). `validation_mode` overrides it (e.g. hard-greedy for every
        method, to compare methods on one measure)."""
        if self.validation_mode is not None:
            return Mode.preset(self.validation_mode)
        return self.rollout_mode.policy.greedy()


from softviz import policies as _policies  # noqa: E402,F401 - registers the methods' kinds in KINDS
