"""One policy object per soft-token method: how a CoT step's input is drawn, and the log-prob of that draw.

Shaped like torch.distributions: a policy is built from a Mode, `act` draws one CoT step for every row from
next-token logits (at rollout time, no grad), and `log_prob` scores a stored action under the current model's
logits (at training time, with grad). generate() and rl.sequence_logprobs() both call them, so the density a
rollout is drawn from and the one training scores are the same code, with the same σ (the rollout's).

    policy = policy_for(Mode.preset("multiplex"))
    step = policy.act(logits, generators, E, sigma=0.0)      # step.input is fed, step.action is stored
    lp = policy.log_prob(new_logits, step.action, E, sigma=0.0)  # == step.log_prob for the same logits

A method is one subclass registered under its Mode.kind (see `register` and docs/methods.md, "Add your own
method"). Shapes: n rows, V vocabulary, d embedding size. All math is fp32.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
from torch import Tensor

from softviz import mixing
from softviz.config import Mode
from softviz.mixing import Generators


@dataclasses.dataclass
class Step:
    """What `act` decides for every row of one CoT step."""

    input: Tensor  # (n, d) fp32: the vector fed as the next input
    token: Tensor  # (n,) long: the text ("shadow") token of the step (paper App. C)
    action: dict[str, Tensor]  # (n, ...) each: what training scores with log_prob (and feeds again with replay)
    log_prob: Tensor  # (n,) fp32: log-density of the action (0 where the step is deterministic)
    probs: Tensor  # (n, V): the policy's distribution p = softmax(logits/τ) after its filters
    weights: Tensor | None = None  # (n, V): the mixture fed (None: a single token's embedding)
    noise: Tensor | None = None  # (n, d): σε, when the method adds Gaussian noise


REGISTRY: dict[str, type["Policy"]] = {}


def register(cls: type["Policy"]) -> type["Policy"]:
    """Class decorator: make `cls` the policy of Mode.kind == cls.kind (and let Mode accept that kind)."""
    from softviz import config

    REGISTRY[cls.kind] = cls
    config.KINDS[cls.kind] = cls.description
    return cls


def policy_for(mode: Mode | str) -> "Policy":
    """The policy of a Mode (or preset name)."""
    mode = Mode.preset(mode) if isinstance(mode, str) else mode
    return REGISTRY[mode.kind](mode)


def trainable_presets() -> list[str]:
    """The preset names whose policy has a density to train by policy gradient."""
    from softviz.config import PRESETS

    return [name for name in PRESETS if policy_for(Mode.preset(name)).trainable]


class Policy:
    """Base class. Subclasses set `kind` and `description` and implement `act` and, when trainable, `log_prob`."""

    kind: ClassVar[str]
    description: ClassVar[str]
    feeds_mixtures: ClassVar[bool] = True  # False: every input is one token's embedding (Rollouts keep no inputs)
    weights_name: ClassVar[str] = "weight"  # what the trace's top-k values are, in figure labels
    action_fill: ClassVar[dict[str, float]] = {}  # padding value of an action past a rollout's CoT (default 0)
    adds_noise: ClassVar[bool] = True  # the method adds Gaussian noise σε when the mode's γ > 0

    def __init__(self, mode: Mode):
        self.mode = mode

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.mode.label})"

    # ---- the distribution ------------------------------------------------------------------------
    def probs(self, logits: Tensor) -> Tensor:
        """p = softmax(logits/τ) after the mode's top-k / top-p / min-p filters. (n, V) -> (n, V) fp32."""
        m = self.mode
        return mixing.filter_probs(mixing.cot_probs(logits, m.cot_temperature), m.top_k, m.top_p, m.min_p)

    def act(self, logits: Tensor, gens: Generators, E: Tensor, sigma: float = 0.0) -> Step:
        """Draw one CoT step for every row. logits (n, V); gens one generator per row; E (V, d) fp32; σ of the
        Gaussian noise (used by methods that add it)."""
        raise NotImplementedError

    def log_prob(self, logits: Tensor, action: dict[str, Tensor], E: Tensor, sigma: float = 0.0) -> Tensor:
        """log π(action | logits) under the current model, differentiable in logits (and E, in the model's dtype;
        mixing.mixture_embedding upcasts the rows it reads). (n,) fp32."""
        raise ValueError(self.why_not_trainable())

    def replay(self, action: dict[str, Tensor], E: Tensor) -> Tensor:
        """The input that was fed, rebuilt for a teacher-forced pass: (n, d) fp32. E is in the model's dtype (index
        it, then compute in fp32). Default: the stored input (a constant); methods whose input is a function of the
        action and E rebuild it, so gradients reach E."""
        return action["input"]

    # ---- properties --------------------------------------------------------------------------------
    @property
    def trainable(self) -> bool:
        return False

    def why_not_trainable(self) -> str:
        return f"{self.kind} inputs have no density that a single teacher-forced pass can score"

    @property
    def uses_noise(self) -> bool:
        """This mode adds Gaussian noise σε (so a rollout records σ)."""
        return self.adds_noise and self.mode.noise_scale > 0

    @property
    def is_greedy(self) -> bool:
        """No randomness in the CoT."""
        return False

    def caption(self, sigma: float = 0.0) -> str:
        """The mode's settings in a few words, for figure and app captions."""
        m = self.mode
        s = f"τ = {m.cot_temperature:g}"
        return s + (f", γ = {m.noise_scale:g} (σ = {sigma:.3g})" if self.uses_noise else "")

    def greedy(self) -> Mode:
        """The greedy variant used for validation (paper §4): by default argmax tokens."""
        return Mode(kind="hard", cot_temperature=0.0, noise_scale=0.0, answer_temperature=0.0,
                    name=f"{self.mode.label}-greedy")

    # ---- helpers for subclasses -----------------------------------------------------------------------
    def _noisy(self, h: Tensor, gens: Generators, sigma: float) -> tuple[Tensor, Tensor | None, Tensor]:
        """h + σε and its Gaussian log-density (paper eq. 6 and 9), or h and 0 when σ = 0."""
        if sigma > 0 and self.uses_noise:
            noise = mixing.gaussian_noise(h.shape[-1], sigma, gens, h.device)
            x = h + noise
            return x, noise, mixing.gaussian_log_prob(x, h, sigma)
        return h, None, h.new_zeros(h.shape[0])


def _log_at(p: Tensor, ids: Tensor) -> Tensor:
    """log p at ids: (n, V), (n, ...) -> (n, ...)."""
    return torch.log(p.gather(-1, ids.reshape(len(ids), -1)).clamp_min(1e-30)).view(ids.shape)


@register
class Hard(Policy):
    """Ordinary tokens: sample from p (τ = 0: argmax), feed the token's embedding. log π = log p(token)."""

    kind = "hard"
    description = "sample a token from softmax(logits/τ) (τ = 0: argmax) and feed its embedding"
    feeds_mixtures = False
    weights_name = "probability"
    adds_noise = False

    def act(self, logits, gens, E, sigma=0.0):
        p = self.probs(logits)
        token = p.argmax(-1) if self.mode.cot_temperature == 0 else mixing.sample_categorical(p, gens)
        lp = _log_at(p, token) if self.mode.cot_temperature > 0 else p.new_zeros(len(token))
        return Step(E[token], token, {"token": token}, lp, p)

    def log_prob(self, logits, action, E, sigma=0.0):
        if not self.trainable:
            return super().log_prob(logits, action, E, sigma)
        m, tok = self.mode, action["token"]
        if m.top_k is None and m.top_p is None and m.min_p is None:  # the stable form when nothing is filtered
            return torch.log_softmax(mixing.fp32(logits) / m.cot_temperature, -1).gather(-1, tok[:, None])[:, 0]
        return _log_at(self.probs(logits), tok)

    def replay(self, action, E):
        return mixing.fp32(E[action["token"]])

    @property
    def trainable(self):
        return self.mode.cot_temperature > 0

    def why_not_trainable(self):
        return "argmax tokens (τ = 0) are deterministic: sample at τ > 0"

    @property
    def is_greedy(self):
        return self.mode.cot_temperature == 0


@register
class Gaussian(Policy):
    """The paper's soft and fuzzy tokens: feed p·E + σε (eq. 6). log π = log N(x; p·E, σ²I) (eq. 9)."""

    kind = "soft"
    description = "feed softmax(logits/τ)·E + σ·ε over the full vocabulary (the paper; fuzzy is τ = 1e-4)"

    def act(self, logits, gens, E, sigma=0.0):
        p = self.probs(logits)
        x, noise, lp = self._noisy(mixing.mixture_embedding(p, E), gens, sigma)
        return Step(x, p.argmax(-1), {"input": x}, lp, p, p, noise)

    def log_prob(self, logits, action, E, sigma=0.0):
        if not self.trainable:
            return super().log_prob(logits, action, E, sigma)
        return mixing.gaussian_log_prob(action["input"], mixing.mixture_embedding(self.probs(logits), E), sigma)

    @property
    def trainable(self):
        return self.uses_noise

    def why_not_trainable(self):
        return "a noiseless mixture (γ = 0) has no density: the noise σε gives it one (paper eq. 9)"

    @property
    def is_greedy(self):
        return not self.uses_noise

    def greedy(self):
        """The paper's greedy soft/fuzzy: the same mixture at the same τ, with σ = 0."""
        return self.mode.replace(noise_scale=0.0, answer_temperature=0.0, name=f"{self.mode.label}-greedy")


@register
class SoftThinking(Gaussian):
    """Soft Thinking (Zhang et al. 2025): the top-k/top-p renormalised mixture, optionally with a Cold Stop."""

    kind = "soft_thinking"
    description = "feed the top-k/top-p renormalised mixture (Zhang et al. 2025), optional Cold Stop"


@register
class MixtureOfInputs(Policy):
    """Mixture of Inputs (Zhuang et al. 2025): sample y from p, feed (H·p + (β+1−H)·onehot(y))/(β+1) · E."""

    kind = "mixture_of_inputs"
    description = "sample a token y, feed the Bayesian mix (H·p + (β+1−H)·onehot(y))/(β+1) (Zhuang et al. 2025)"

    def act(self, logits, gens, E, sigma=0.0):
        p = self.probs(logits)
        token = mixing.sample_categorical(p, gens)
        w = mixing.moi_weights(p, token, self.mode.moi_beta)
        x, noise, lp = self._noisy(mixing.mixture_embedding(w, E), gens, sigma)
        return Step(x, token, {"input": x, "token": token}, lp + _log_at(p, token), p, w, noise)

    def why_not_trainable(self):
        return ("its input mixes the model's own p into the fed vector, which a single teacher-forced pass "
                "cannot rebuild")


@register
class Gumbel(Policy):
    """Gumbel-softmax mixtures (Wu et al. 2025; SofT-GRPO, Zheng et al. 2025): perturb the log-probs of the top k,
    g' = log p + g with g ~ Gumbel(0, 1), feed softmax(g'/τ_g)·E. The action is g' at the top-k ids; its
    log-density is the Gumbel density around the current log p (mixing.gumbel_log_prob). The noise is drawn for
    the k kept entries only, never the whole vocabulary."""

    kind = "gumbel"
    description = "feed softmax((log p + g)/τ_g) over the top-k, g ~ Gumbel(0, 1) (Wu et al. 2025)"
    action_fill = {"noisy": -math.inf}
    adds_noise = False  # its randomness is the Gumbel noise on the log-probs; γ is ignored

    def caption(self, sigma=0.0):
        m = self.mode
        return f"τ = {m.cot_temperature:g}, top {m.top_k or 'all'}, τ_g = {m.gumbel_temperature:g}"

    def _k(self, V: int) -> int:
        return min(self.mode.top_k, V) if self.mode.top_k is not None else V

    def act(self, logits, gens, E, sigma=0.0):
        p = self.probs(logits)
        top, ids = p.topk(self._k(p.shape[-1]), dim=-1)  # (n, k)
        u = mixing._rand(gens, ids.shape[-1], p.device).clamp(1e-10, 1 - 1e-10)
        noisy = torch.where(top > 0, torch.log(top.clamp_min(1e-30)) - torch.log(-torch.log(u)), -math.inf)
        w_k = torch.softmax(noisy / self.mode.gumbel_temperature, -1)
        x = torch.einsum("nk,nkd->nd", w_k, E[ids])
        lp = mixing.gumbel_log_prob(noisy, torch.log(top.clamp_min(1e-30)))
        w = torch.zeros_like(p).scatter(-1, ids, w_k)
        return Step(x, ids.gather(-1, w_k.argmax(-1, keepdim=True))[:, 0], {"noisy": noisy, "ids": ids}, lp, p, w)

    def log_prob(self, logits, action, E, sigma=0.0):
        if not self.trainable:
            return super().log_prob(logits, action, E, sigma)
        return mixing.gumbel_log_prob(action["noisy"], _log_at(self.probs(logits), action["ids"]))

    def replay(self, action, E):
        w_k = torch.softmax(action["noisy"] / self.mode.gumbel_temperature, -1)
        return torch.einsum("nk,nkd->nd", w_k, mixing.fp32(E[action["ids"]]))

    @property
    def trainable(self):
        return self.mode.top_k is not None

    def why_not_trainable(self):
        return "gumbel without top_k perturbs the whole vocabulary; set top_k (e.g. the 'soft-grpo' preset)"


@register
class Dirichlet(Policy):
    """Dirichlet resampling (Wu et al. 2025): feed w·E with w ~ Dir(α·p) over p's support."""

    kind = "dirichlet"
    description = "feed weights drawn from Dir(α·p) over the top-k (Wu et al. 2025)"

    def act(self, logits, gens, E, sigma=0.0):
        p = self.probs(logits)
        w = mixing.dirichlet_weights(p, self.mode.dirichlet_alpha, gens)
        x, noise, lp = self._noisy(mixing.mixture_embedding(w, E), gens, sigma)
        return Step(x, w.argmax(-1), {"input": x}, lp, p, w, noise)


@register
class Multiplex(Policy):
    """Multiplex Thinking (Tang et al. 2026, arXiv 2601.08808): sample K tokens independently from p, feed the
    mean of their embeddings (or their p-weighted mean). log π = Σ_k log p(token_k): exact, so on-policy RL is
    the ordinary kind. The first sample is the shadow token, so K = 1 is hard sampling, token for token. When the
    model is sure the K samples agree and the step is an ordinary token."""

    kind = "multiplex"
    description = "sample K tokens from softmax(logits/τ), feed the mean of their embeddings (Tang et al. 2026)"
    adds_noise = False  # its randomness is the K samples; γ is ignored

    def act(self, logits, gens, E, sigma=0.0):
        p = self.probs(logits)
        tokens = mixing.sample_tokens(p, gens, self.mode.multiplex_k)  # (n, K); the first is hard sampling's
        w = self._weights(p, tokens)
        x = E[tokens].mean(1) if self.mode.multiplex_weighting == "uniform" else mixing.mixture_embedding(w, E)
        action = {"tokens": tokens} if self.mode.multiplex_weighting == "uniform" else {"tokens": tokens, "input": x}
        return Step(x, tokens[:, 0], action, _log_at(p, tokens).sum(-1), p, w)

    def caption(self, sigma=0.0):
        m = self.mode
        return f"K = {m.multiplex_k}, τ = {m.cot_temperature:g}, {'mean' if m.multiplex_weighting == 'uniform' else 'p-weighted mean'}"

    def _weights(self, p: Tensor, tokens: Tensor) -> Tensor:
        """The mixture over the vocabulary: counts / K (uniform), or p renormalised over the sampled set."""
        if self.mode.multiplex_weighting == "uniform":
            return torch.zeros_like(p).scatter_add(-1, tokens, torch.full(tokens.shape, 1 / tokens.shape[-1],
                                                                          dtype=p.dtype, device=p.device))
        chosen = torch.zeros_like(p).scatter(-1, tokens, 1.0)
        w = p * chosen
        return w / w.sum(-1, keepdim=True)

    def log_prob(self, logits, action, E, sigma=0.0):
        return _log_at(self.probs(logits), action["tokens"]).sum(-1)

    def replay(self, action, E):
        """Uniform: the mean of the K embeddings, rebuilt from E (gradients reach E, as for hard tokens). The
        p-weighted input depends on the previous step's p, which one teacher-forced pass cannot rebuild: the
        stored input is fed (as the paper's soft tokens are)."""
        return mixing.fp32(E[action["tokens"]]).mean(1) if "input" not in action else action["input"]

    @property
    def trainable(self):
        return True

