"""The policy objects (softviz.policies): each method's act and log_prob agree, Multiplex Thinking's density and
its K = 1 limit, one σ per rollout while E trains, and a method added by one class."""

import dataclasses

import pytest
import torch

from softviz import Mode, generate, mixing, policies
from softviz.config import KINDS, PRESETS, RLConfig
from softviz.rl import check_trainable, sequence_logprobs
from softviz.tasks import ArithmeticTask

TASK = ArithmeticTask()
PROMPTS = [TASK.prompt(e) for e in TASK.examples("test", 3)]


def _logits(n=3, V=40, seed=0):
    torch.manual_seed(seed)
    return torch.randn(n, V) * 2


@pytest.mark.parametrize("preset", list(PRESETS))
def test_act_then_log_prob_agree_for_every_trainable_preset(preset):
    """What a step was drawn with is what scores it: log_prob(logits, act(...).action) == act(...).log_prob."""
    logits, E = _logits(), torch.randn(40, 8)
    policy = policies.policy_for(preset)
    step = policy.act(logits, mixing.row_generators([0, 1, 2]), E, sigma=0.3)
    assert step.input.shape == (3, 8) and step.token.shape == (3,) and torch.isfinite(step.input).all()
    assert torch.allclose(policy.replay(step.action, E), step.input, atol=1e-6)  # teacher forcing feeds the same
    if policy.trainable:
        assert torch.allclose(policy.log_prob(logits, step.action, E, sigma=0.3), step.log_prob, atol=1e-5)
    else:
        with pytest.raises(ValueError):
            policy.log_prob(logits, step.action, E, sigma=0.3)


def test_greedy_tokens_weights_and_entropy_per_method():
    logits, E = _logits(), torch.randn(40, 8)
    gens = mixing.row_generators([0, 1, 2])
    greedy = policies.policy_for("hard-greedy").act(logits, gens, E)
    assert torch.equal(greedy.token, logits.argmax(-1)) and greedy.weights is None
    assert torch.equal(greedy.input, E[logits.argmax(-1)]) and (greedy.log_prob == 0).all()
    soft = policies.policy_for("soft-greedy").act(logits, gens, E)
    assert torch.equal(soft.token, logits.argmax(-1))  # the shadow token is the argmax
    assert torch.allclose(soft.weights, torch.softmax(logits / 0.5, -1))
    assert torch.allclose(soft.input, torch.softmax(logits / 0.5, -1) @ E, atol=1e-6)
    st = policies.policy_for(Mode.preset("soft-thinking", top_k=1, top_p=None, min_p=None)).act(logits, gens, E)
    assert torch.equal(st.weights, torch.nn.functional.one_hot(logits.argmax(-1), 40).float())


def test_gumbel_and_dirichlet_stay_on_the_support():
    logits, E = _logits(2, 30), torch.randn(30, 4)
    for preset in ("gumbel", "dirichlet", "soft-grpo"):
        policy = policies.policy_for(Mode.preset(preset, top_p=None))
        p = policy.probs(logits)
        w = policy.act(logits, mixing.row_generators([0, 1]), E).weights
        assert torch.allclose(w.sum(-1), torch.ones(2)) and ((w > 0) <= (p > 0)).all()


def test_soft_grpo_draws_its_gumbel_noise_over_the_top_k_only():
    """One uniform per kept entry: the generator advances by top_k draws, whatever the vocabulary size."""
    for V in (40, 4000):
        gens = mixing.row_generators([7])
        policies.policy_for("soft-grpo").act(_logits(1, V), gens, torch.randn(V, 4))
        ref = mixing.row_generators([7])
        torch.rand(5, generator=ref[0])  # top_k = 5 draws
        assert torch.equal(torch.rand(1, generator=gens[0]), torch.rand(1, generator=ref[0]))


def test_multiplex_density_against_an_independent_computation():
    """log π = Σ_k log Categorical(p).log_prob(token_k); the fed input is the mean (or p-weighted mean) of the
    K embeddings."""
    logits, E = _logits(4, 50), torch.randn(50, 6)
    for weighting in ("uniform", "probs"):
        mode = Mode.preset("multiplex", multiplex_k=3, cot_temperature=0.7, multiplex_weighting=weighting)
        step = policies.policy_for(mode).act(logits, mixing.row_generators(range(4)), E)
        tokens = step.action["tokens"]
        assert tokens.shape == (4, 3) and torch.equal(step.token, tokens[:, 0])
        dist = torch.distributions.Categorical(logits=logits / 0.7)
        want = sum(dist.log_prob(tokens[:, k]) for k in range(3))
        assert torch.allclose(step.log_prob, want, atol=1e-5)
        for b in range(4):
            chosen = tokens[b].unique()
            if weighting == "uniform":
                x = E[tokens[b]].mean(0)
            else:
                p = dist.probs[b, chosen]
                x = (p / p.sum()) @ E[chosen]
            assert torch.allclose(step.input[b], x, atol=1e-5)
            assert set(step.weights[b].nonzero().flatten().tolist()) == set(chosen.tolist())


def test_multiplex_k1_is_hard_sampling_token_for_token(embedded):
    model, tok = embedded
    hard = generate(model, tok, PROMPTS, "hard", n=3, max_cot_tokens=40, seed=5)
    one = generate(model, tok, PROMPTS, Mode.preset("multiplex", multiplex_k=1), n=3, max_cot_tokens=40, seed=5)
    assert torch.equal(one.cot_tokens, hard.cot_tokens) and one.answers == hard.answers
    assert torch.allclose(one.cot_logprobs, hard.cot_logprobs, atol=1e-6)
    assert one.cot_texts == hard.cot_texts


def test_multiplex_samples_appear_in_the_trace_and_its_greedy_variant_is_argmax(embedded):
    model, tok = embedded
    r = generate(model, tok, PROMPTS[:1], "multiplex", n=4, max_cot_tokens=30, seed=0, trace=True)
    t, tokens = r.trace, r.cot_actions["tokens"]
    assert t.meta["weights_name"] == "weight" and t.meta["mode"]["multiplex_k"] == 3
    for b in range(4):
        for s in range(int(r.cot_lengths[b])):
            ids = {int(i) for i, w in zip(t.topk_ids[b, s], t.topk_weights[b, s]) if w > 0}
            assert ids == set(tokens[b, s].tolist())  # the K samples are the step's mixture
            w = sorted(t.topk_weights[b, s][t.topk_weights[b, s] > 0].tolist())
            assert sum(w) == pytest.approx(1.0) and all(round(3 * x) == pytest.approx(3 * x, abs=1e-5) for x in w)
    agree = (tokens[..., 0] == tokens[..., 1]) & (tokens[..., 1] == tokens[..., 2])
    assert agree[r.trace.mask].float().mean() > 0.5  # a trained model is mostly sure: the K samples agree
    g = RLConfig(mode="multiplex").greedy_mode
    assert g.policy.is_greedy and g.kind == "hard" and g.cot_temperature == 0


def test_hard_with_filters_is_scored_under_the_filtered_distribution(embedded):
    model, tok = embedded
    mode = Mode.preset("hard", top_k=3, top_p=0.9, answer_temperature=1.0)
    r = generate(model, tok, PROMPTS, mode, n=2, max_cot_tokens=30, seed=2)
    with torch.no_grad():
        lp = sequence_logprobs(model, r)
    assert torch.allclose(lp.cot[lp.cot_mask], r.cot_logprobs[lp.cot_mask], atol=1e-4)


def test_one_sigma_per_rollout_while_the_embeddings_train(tmp_path):
    """σ₀ is fixed from the starting E and kept in the checkpoint; with a large embedding learning rate E moves
    far, yet rollouts drawn with σ₀ are scored with σ₀: recomputed == rollout-time log-probs for every trainable
    method."""
    from softviz import load_model
    from softviz.generate import embedding_matrix
    from softviz.train import CHECKPOINT, train

    model, tok = load_model(device="cpu")  # a private copy: trained here
    # CoTs long enough to finish (a cut CoT gets the same prefilled answer in a whole group: no update) and groups
    # of 4, so rewards vary within groups and E does move
    cfg = RLConfig(mode="soft", steps=4, prompts_per_step=2, group_size=4, learning_rate=3e-3,
                   embedding_lr_scale=30.0, max_cot_tokens=40, max_answer_tokens=4, eval_every=0, save_every=4)
    sigma0 = mixing.noise_std(embedding_matrix(model).detach(), 0.33)
    for _ in train(model, tok, cfg, output_dir=tmp_path, progress=False):
        pass
    ck = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert ck["sigma"] == pytest.approx(sigma0)
    now = mixing.noise_std(embedding_matrix(model).detach(), 0.33)
    assert abs(now / sigma0 - 1) > 0.02, "the embeddings did not move: this test would not tell σ₀ from σ(E)"
    for preset in policies.trainable_presets():
        mode = Mode.preset(preset, answer_temperature=1.0)
        r = generate(model, tok, PROMPTS[:2], mode, n=2, max_cot_tokens=24, max_answer_tokens=4, seed=3, sigma=ck["sigma"])
        assert r.sigma == (pytest.approx(sigma0) if mode.policy.uses_noise else 0.0)
        with torch.no_grad():
            lp = sequence_logprobs(model, r)
        m = lp.cot_mask
        assert torch.allclose(lp.cot[m], r.cot_logprobs[m], rtol=1e-3, atol=1e-2), preset


# ---- a method added by one class, a preset and this test (docs/methods.md shows the same) --------------------

@pytest.fixture
def top2_method():
    """A toy method: feed the mixture of the two most likely tokens plus Gaussian noise (trainable by its
    Gaussian density). Registered for the test only."""

    @policies.register
    class TopTwo(policies.Gaussian):
        kind = "top_two"
        description = "the two most likely tokens' renormalised mixture, plus noise"

        def probs(self, logits):
            return mixing.filter_probs(mixing.cot_probs(logits, self.mode.cot_temperature), top_k=2)

    PRESETS["top-two"] = dict(kind="top_two", cot_temperature=1.0, noise_scale=0.33)
    yield TopTwo
    del PRESETS["top-two"], policies.REGISTRY["top_two"], KINDS["top_two"]


def test_a_method_added_by_one_class_runs_through_generate_trace_and_training(embedded, top2_method):
    model, tok = embedded
    mode = Mode.preset("top-two", answer_temperature=1.0)
    r = generate(model, tok, PROMPTS[:2], mode, n=2, max_cot_tokens=20, seed=0, trace=True)
    assert ((r.trace.topk_weights[..., 2:] == 0) & r.trace.mask[..., None]).all()  # two tokens per step
    assert r.sigma > 0 and "top-two" in policies.trainable_presets()
    with torch.no_grad():
        lp = sequence_logprobs(model, r)
    assert torch.allclose(lp.cot[lp.cot_mask], r.cot_logprobs[lp.cot_mask], rtol=1e-3, atol=1e-2)
    check_trainable(mode)
    assert RLConfig(mode="top-two").greedy_mode.noise_scale == 0


def test_untrainable_presets_are_refused_naming_the_trainable_ones():
    for preset in ("soft-greedy", "mixture-of-inputs", "dirichlet", "hard-greedy", "soft-thinking"):
        with pytest.raises(ValueError, match=r"cannot be trained.*Trainable presets: hard, soft, fuzzy"):
            check_trainable(Mode.preset(preset))
    assert dataclasses.asdict(Mode.preset("multiplex"))["multiplex_k"] == 3
    with pytest.raises(ValueError, match="multiplex_weighting"):
        Mode.preset("multiplex", multiplex_weighting="mean")


def test_every_preset_runs_through_the_figures_and_the_app_views(embedded):
    """Each preset's Trace draws every per-rollout figure and the app's column header and caption, labelled by its
    policy (sampling probabilities for one fed token, mixture weights otherwise)."""
    pytest.importorskip("gradio")
    from softviz import viz
    from softviz.app.views import column_header, rollout_figures

    model, tok = embedded
    for preset in PRESETS:
        r = generate(model, tok, PROMPTS[:1], preset, n=2, max_cot_tokens=12, max_answer_tokens=4, seed=0, trace=True)
        t = r.trace
        t.meta["golds"] = [None, None]
        fig = viz.mixture_topk(t, 0)
        assert fig.layout.yaxis.title.text == ("probability" if preset.startswith("hard") else "mixture weight")
        bars = [d for d in fig.data if d.type == "bar" and d.name == "rank 1"]
        assert bars and list(bars[0].y) == pytest.approx(t.topk_weights[0, : int(t.lengths[0]), 0].tolist())
        assert viz.noise_shift(t, 0).data and "<" in viz.soft_text_html(t, 0) and viz.entropy_heatmap(t).data
        view = rollout_figures(t, 0)
        assert view.mixture.data and view.noise.data and view.soft_text
        header = column_header(t)
        assert header.startswith(f"### {preset}\n") and t.mode.policy.caption(r.sigma) in header
    mp = generate(model, tok, PROMPTS[:1], "multiplex", n=1, max_cot_tokens=12, max_answer_tokens=4, trace=True)
    assert "K = 3, τ = 1, mean" in column_header(mp.trace)


def test_every_trainable_preset_trains_and_the_others_are_refused(embedded):
    """One RL step per trainable preset through train(): finite loss and gradient, the weights move; an
    untrainable preset is refused before any rollout, naming the trainable ones."""
    from softviz import load_model
    from softviz.train import train

    model, tok = load_model(device="cpu")  # a private copy: trained here
    for preset in policies.trainable_presets():
        before = model.model.layers[0].mlp.down_proj.weight.detach().clone()
        cfg = RLConfig(mode=preset, steps=1, prompts_per_step=2, group_size=2, max_cot_tokens=24, max_answer_tokens=4,
                       learning_rate=1e-3, warmup_steps=0, eval_every=0, save_every=0, seed=1)
        alternate = lambda completions, **kw: [float(i % 2) for i in range(len(completions))]  # every group varies
        (m,) = list(train(model, tok, cfg, reward_fn=alternate, progress=False))
        assert m["step"] == 1 and torch.isfinite(torch.tensor([m["loss"], m["grad_norm"]])).all(), preset
        assert m["advantage_abs_mean"] == pytest.approx(1.0) and m["grad_norm"] > 0, preset
        assert not torch.equal(before, model.model.layers[0].mlp.down_proj.weight), preset
    for preset in ("dirichlet", "mixture-of-inputs", "soft-greedy"):
        with pytest.raises(ValueError, match="Trainable presets: hard, soft, fuzzy, gumbel, soft-grpo, multiplex"):
            next(train(model, tok, RLConfig(mode=preset, steps=1, eval_every=0), progress=False))
