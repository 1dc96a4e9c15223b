"""Frozen configuration dataclasses: Mode (how CoT inputs are formed) and TraceConfig (what is recorded).

Field names follow the paper (Butt et al. 2025, §3-4): CoT temperature τ (`cot_temperature`) and the
noise scale γ (`noise_scale`, σ = γ·RMS(E)). Related methods follow their own papers (reference/paper.md §5).
"""

from __future__ import annotations

import dataclasses
import math

# How the input of the next CoT step is formed.
KINDS = {
    "hard": "sample a token from softmax(logits/τ) (τ = 0: argmax) and feed its embedding",
    "soft": "feed softmax(logits/τ)·E + σ·ε over the full vocabulary (the paper; fuzzy is τ = 1e-4)",
    "soft_thinking": "feed the top-k/top-p renormalised mixture (Zhang et al. 2025), optional Cold Stop",
    "mixture_of_inputs": "sample a token y, feed the Bayesian mix (H·p + (β+1−H)·onehot(y))/(β+1) (Zhuang et al. 2025)",
    "gumbel": "feed softmax((log p + g)/τ_g) over the top-k, g ~ Gumbel(0, 1) (Wu et al. 2025)",
    "dirichlet": "feed weights drawn from Dir(α·p) over the top-k (Wu et al. 2025)",
}
MIXTURE_KINDS = tuple(k for k in KINDS if k != "hard")


def _check(cond: bool, field: str, value, allowed: str) -> None:
    if not cond:
        raise ValueError(f"Mode.{field} = {value!r} is invalid: allowed {allowed}")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


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
    name: str | None = None  # display name; defaults to the preset's

    def __post_init__(self):
        _check(self.kind in KINDS, "kind", self.kind, f"one of {sorted(KINDS)}")
        tau = self.cot_temperature
        if self.kind == "hard":
            _check(_finite(tau) and tau >= 0, "cot_temperature", tau, "τ >= 0 for hard tokens (0 = greedy)")
            _check(self.noise_scale == 0, "noise_scale", self.noise_scale,
                   "0 for hard tokens (for hard tokens plus noise use the fuzzy preset)")
        else:
            _check(_finite(tau) and tau > 0, "cot_temperature", tau,
                   f"τ > 0 for {self.kind} (use 1e-4 for the almost one-hot 'fuzzy' mixture)")
        _check(_finite(self.noise_scale) and 0 <= self.noise_scale <= 100, "noise_scale", self.noise_scale,
               "0 <= γ <= 100 (the paper uses 0.33; γ = 3 already collapses training)")
        _check(_finite(self.answer_temperature) and self.answer_temperature >= 0, "answer_temperature",
               self.answer_temperature, ">= 0 (0 = greedy answer)")
        if self.top_k is not None:
            _check(isinstance(self.top_k, int) and self.top_k >= 1, "top_k", self.top_k, "an integer >= 1 or None")
        if self.top_p is not None:
            _check(_finite(self.top_p) and 0 < self.top_p <= 1, "top_p", self.top_p, "0 < top_p <= 1 or None")
        if self.min_p is not None:
            _check(_finite(self.min_p) and 0 <= self.min_p < 1, "min_p", self.min_p, "0 <= min_p < 1 or None")
        if self.cold_stop_entropy is not None:
            _check(_finite(self.cold_stop_entropy) and self.cold_stop_entropy > 0, "cold_stop_entropy",
                   self.cold_stop_entropy, "> 0 nats or None")
            _check(self.kind == "soft_thinking", "cold_stop_entropy", self.cold_stop_entropy,
                   "only with kind='soft_thinking'")
        _check(isinstance(self.cold_stop_steps, int) and self.cold_stop_steps >= 1, "cold_stop_steps",
               self.cold_stop_steps, "an integer >= 1")
        _check(_finite(self.moi_beta) and self.moi_beta >= 0, "moi_beta", self.moi_beta, "β >= 0")
        _check(_finite(self.gumbel_temperature) and self.gumbel_temperature > 0, "gumbel_temperature",
               self.gumbel_temperature, "τ_g > 0")
        _check(_finite(self.dirichlet_alpha) and self.dirichlet_alpha > 0, "dirichlet_alpha",
               self.dirichlet_alpha, "α > 0")

    # ---- derived properties -----------------------------------------------------------------------
    @property
    def is_mixture(self) -> bool:
        """True when CoT inputs are mixtures of embeddings rather than single tokens."""
        return self.kind != "hard"

    @property
    def is_greedy(self) -> bool:
        """No randomness anywhere: argmax hard tokens, or noiseless deterministic mixtures, greedy answer."""
        if self.answer_temperature > 0:
            return False
        if self.kind == "hard":
            return self.cot_temperature == 0
        return self.noise_scale == 0 and self.kind not in ("mixture_of_inputs", "gumbel", "dirichlet")

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
        soft-thinking-cold-stop, mixture-of-inputs, gumbel, dirichlet (paper.md §5).
        """
        key = name.strip().lower().replace("_", "-")
        if key not in PRESETS:
            raise ValueError(f"unknown mode {name!r}; choose one of: {', '.join(PRESETS)}")
        fields = dict(PRESETS[key])
        fields.setdefault("name", key)
        fields.update(overrides)
        return cls(**fields)


# The paper's six inference settings (§4) and the related methods (reference/paper.md §5).
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
    # SofT-GRPO's rollout (Zheng et al. 2025, paper.md §5.5): Gumbel noise on the top-5 log-probs, τ_g = 0.1.
    # Trainable: its action g' = log p + g has the Gumbel density (softviz.rl).
    "soft-grpo": dict(kind="gumbel", cot_temperature=1.0, noise_scale=0.0, top_k=5, top_p=0.95,
                      gumbel_temperature=0.1),
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
        if not (isinstance(self.top_k, int) and self.top_k >= 1):
            raise ValueError(f"TraceConfig.top_k = {self.top_k!r} is invalid: allowed an integer >= 1")
        if not (isinstance(self.nearest_k, int) and self.nearest_k >= 0):
            raise ValueError(f"TraceConfig.nearest_k = {self.nearest_k!r} is invalid: allowed an integer >= 0")
        if self.nearest_metric not in ("cosine", "l2"):
            raise ValueError(f"TraceConfig.nearest_metric = {self.nearest_metric!r} is invalid: allowed 'cosine' or 'l2'")
        object.__setattr__(self, "layers", tuple(self.layers))


ALGORITHMS = ("rloo", "grpo")


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """One RL run. Names follow TRL's GRPOConfig where they mean the same (num_generations -> group_size)."""

    mode: str = "soft"  # preset name of the rollout mode: hard, soft or fuzzy (paper §4)
    algorithm: str = "rloo"  # the paper's RLOO (App. A); "grpo" normalises by the group std
    task: str = "arithmetic"
    steps: int = 60
    prompts_per_step: int = 4  # B: the paper uses 2 prompts...
    group_size: int = 8  # ...x G = 32 samples; smaller here so a CPU step takes seconds
    learning_rate: float = 5e-5  # the paper's 3e-6..8e-6 suit 3B-8B models; the 3M-parameter embedded one needs more
    warmup_steps: int = 5  # the paper warms up 20 of 4000 steps
    weight_decay: float = 0.0  # [UNC] not stated in the paper
    max_grad_norm: float = 1.0  # [UNC] not stated; the sibling paper clips at 1.0
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
    eval_size: int = 128
    save_every: int = 10  # checkpoint every N steps (0: only at the end)
    trace_steps: tuple[int, ...] = ()  # steps whose rollouts are saved as Traces
    seed: int = 0

    def __post_init__(self):
        def bad(field, allowed):
            raise ValueError(f"RLConfig.{field} = {getattr(self, field)!r} is invalid: allowed {allowed}")

        if self.mode not in PRESETS:
            bad("mode", f"a preset name: {', '.join(PRESETS)}")
        if self.algorithm not in ALGORITHMS:
            bad("algorithm", f"one of {ALGORITHMS}")
        for f in ("steps", "prompts_per_step", "max_cot_tokens", "max_answer_tokens", "eval_size"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
                bad(f, "an integer >= 1")
        if not isinstance(self.group_size, int) or self.group_size < 2:
            bad("group_size", f"an integer >= 2 ({self.algorithm} compares samples within a group)")
        if not (_finite(self.learning_rate) and self.learning_rate > 0):
            bad("learning_rate", "> 0")
        for f in ("warmup_steps", "eval_every", "save_every"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 0:
                bad(f, "an integer >= 0")
        if not (_finite(self.weight_decay) and self.weight_decay >= 0):
            bad("weight_decay", ">= 0")
        if not (_finite(self.max_grad_norm) and self.max_grad_norm > 0):
            bad("max_grad_norm", "> 0")
        if not (_finite(self.answer_temperature) and self.answer_temperature > 0):
            bad("answer_temperature", "> 0 (training samples its answers)")
        if self.epsilon is not None and not (_finite(self.epsilon) and 0 < self.epsilon < 1):
            bad("epsilon", "0 < epsilon < 1 or None")
        if not (_finite(self.beta) and self.beta >= 0):
            bad("beta", ">= 0")
        if not (_finite(self.cot_weight) and self.cot_weight >= 0):
            bad("cot_weight", ">= 0")
        if not (_finite(self.embedding_lr_scale) and self.embedding_lr_scale >= 0):
            bad("embedding_lr_scale", ">= 0 (0 freezes the embeddings)")
        if self.noise_scale is not None:
            if PRESETS[self.mode]["kind"] != "soft":
                bad("noise_scale", "None: only soft and fuzzy rollouts have Gaussian noise to scale")
            if not (_finite(self.noise_scale) and 0 < self.noise_scale <= 100):
                bad("noise_scale", "0 < γ <= 100 or None (training needs noise: its density is the CoT log-prob)")
        object.__setattr__(self, "trace_steps", tuple(int(s) for s in self.trace_steps))

    @property
    def rollout_mode(self) -> Mode:
        extra = {} if self.noise_scale is None else {"noise_scale": self.noise_scale}
        return Mode.preset(self.mode, answer_temperature=self.answer_temperature, **extra)

    @property
    def greedy_mode(self) -> Mode:
        """The paper's greedy validation: argmax tokens, or the mixture at the training τ with σ = 0 (§4).
        soft-grpo validates with argmax tokens (its noiseless mixture at τ_g = 0.1 is near one-hot)."""
        m = self.rollout_mode
        if m.kind in ("hard", "gumbel"):  # gumbel (soft-grpo): its argmax, i.e. the Gumbel-max with no noise
            return Mode(kind="hard", cot_temperature=0.0, noise_scale=0.0, answer_temperature=0.0,
                        name=f"{m.label}-greedy")
        return m.replace(noise_scale=0.0, answer_temperature=0.0, name=f"{m.label}-greedy")
