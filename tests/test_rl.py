"""RL math: advantages, the teacher-forced log-probs against rollout-time ones, the loss."""

import math
from pathlib import Path

import pytest

import torch

from softviz import Mode, generate, mixing
from softviz.rl import (grpo_advantages, policy_loss, rloo_advantages, sequence_logprobs,
                        SequenceLogProbs)
from softviz.tasks import ArithmeticTask

TASK = ArithmeticTask()
PROMPTS = [TASK.prompt(e) for e in TASK.examples("test", 3)]


def test_rloo_advantages_hand_computed():
    r = torch.tensor([100.0, 10.0, 0.0, 10.0, 10.0, 10.0])
    A = rloo_advantages(r, 3)
    # group 1: 100 − (10 + 0)/2 = 95, 10 − (100 + 0)/2 = −40, 0 − (100 + 10)/2 = −55
    assert A.tolist() == [95.0, -40.0, -55.0, 0.0, 0.0, 0.0]
    assert torch.allclose(A.view(2, 3).sum(1), torch.zeros(2))  # sums to zero per group
    with pytest.raises(ValueError, match="group_size >= 2"):
        rloo_advantages(r, 1)


def test_grpo_advantages_hand_computed():
    r = torch.tensor([1.0, 3.0, 5.0, 7.0, 7.0, 7.0])
    A = grpo_advantages(r, 3, eps=0.0 + 1e-12)
    # group 1: mean 3, std (unbiased) 2 -> (−1, 0, 1); group 2: all equal -> 0
    assert torch.allclose(A, torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(grpo_advantages(r, 3, scale=False), torch.tensor([-2.0, 0, 2, 0, 0, 0]))


def _fake_logp(requires_grad=True):
    torch.manual_seed(0)
    cot = torch.randn(4, 5, requires_grad=requires_grad)
    ans = torch.randn(4, 3, requires_grad=requires_grad)
    return SequenceLogProbs(cot, ans, torch.ones(4, 5, dtype=torch.bool), torch.ones(4, 3, dtype=torch.bool),
                            torch.zeros(4, 5))


def test_zero_advantages_give_zero_loss_and_gradient():
    lp = _fake_logp()
    loss, _ = policy_loss(lp, torch.zeros(4))
    loss.backward()
    assert loss.item() == 0.0 and lp.cot.grad.abs().sum() == 0


def test_paper_loss_value_and_clipping_on_policy():
    lp = _fake_logp()
    A = torch.tensor([1.0, -1.0, 2.0, 0.0])
    loss, m = policy_loss(lp, A)
    expected = -(A * (lp.cot.sum(1) + lp.answer.sum(1))).mean()  # no length normalisation
    assert torch.allclose(loss, expected)
    # on-policy (old == current) the clipped objective has the same gradient
    g1 = torch.autograd.grad(loss, lp.cot)[0]
    old = SequenceLogProbs(lp.cot.detach(), lp.answer.detach(), lp.cot_mask, lp.answer_mask, lp.cot_entropy)
    loss2, m2 = policy_loss(lp, A, old=old, epsilon=0.2)
    g2 = torch.autograd.grad(loss2, lp.cot)[0]
    assert torch.allclose(g1, g2) and m2["clip_ratio"] == 0.0
    with pytest.raises(ValueError, match="needs the rollout-time"):
        policy_loss(lp, A, epsilon=0.2)


def test_kl_penalty_is_zero_against_itself():
    lp = _fake_logp()
    ref = SequenceLogProbs(lp.cot.detach(), lp.answer.detach(), lp.cot_mask, lp.answer_mask, lp.cot_entropy)
    loss, m = policy_loss(lp, torch.ones(4), ref=ref, beta=0.1)
    assert m["kl"] == 0.0


@pytest.mark.parametrize("preset", ["hard", "soft", "fuzzy", "soft-grpo", "multiplex", "multiplex-weighted"])
def test_recomputed_logprobs_equal_rollout_logprobs(embedded, preset):
    """With the same weights, training's log-probs equal the rollout's, CoT and answer alike."""
    model, tok = embedded
    mode = Mode.preset(preset, answer_temperature=1.0)
    r = generate(model, tok, PROMPTS, mode, n=2, max_cot_tokens=48, max_answer_tokens=8, seed=1)
    with torch.no_grad():
        lp = sequence_logprobs(model, r)
    cm, am = lp.cot_mask, lp.answer_mask
    assert torch.allclose(lp.cot[cm], r.cot_logprobs[cm], rtol=1e-3, atol=1e-2)
    assert torch.allclose(lp.answer[am], r.answer_logprobs[am], atol=1e-3)
    assert torch.allclose(lp.cot_entropy[cm], r.cot_entropy[cm], atol=1e-3)


def test_soft_gradients_reach_every_block(embedded):
    model, tok = embedded
    r = generate(model, tok, PROMPTS[:2], Mode.preset("soft", answer_temperature=1.0), n=2, max_cot_tokens=24, seed=0)
    model.zero_grad()
    lp = sequence_logprobs(model, r)
    (lp.cot * lp.cot_mask).sum().backward()  # the Gaussian CoT terms alone
    for i, layer in enumerate(model.model.layers):
        g = sum(p.grad.abs().sum() for p in layer.parameters() if p.grad is not None)
        assert g > 0, f"no gradient reached layer {i}"
    assert model.get_input_embeddings().weight.grad.abs().sum() > 0
    model.zero_grad()


def test_gaussian_term_gradient_finite_difference(embedded):
    """d/dθ of the Gaussian CoT term, autograd against a central finite difference on one weight."""
    model, tok = embedded
    r = generate(model, tok, PROMPTS[:1], Mode.preset("soft", answer_temperature=1.0), n=1, max_cot_tokens=6, seed=0)
    w = model.model.layers[0].mlp.down_proj.weight
    model.double()
    try:
        r.cot_inputs = r.cot_actions["input"] = r.cot_inputs.double()
        model.zero_grad()
        f = lambda: (lambda lp: (lp.cot * lp.cot_mask).sum())(sequence_logprobs(model, r))
        f().backward()
        i, j = 3, 5
        auto = w.grad[i, j].item()
        eps = 1e-4
        with torch.no_grad():
            w[i, j] += eps
            up = f().item()
            w[i, j] -= 2 * eps
            down = f().item()
            w[i, j] += eps
        assert auto == pytest.approx((up - down) / (2 * eps), rel=1e-3, abs=1e-3)
    finally:
        model.float()
        model.zero_grad()


def test_untrainable_modes_are_refused(embedded):
    model, tok = embedded
    r = generate(model, tok, PROMPTS[:1], "soft-greedy", max_cot_tokens=4)
    with pytest.raises(ValueError, match="cannot be trained"):
        sequence_logprobs(model, r)


def _first_step_reinforce(model, tok, mode, opt, steps, reward):
    """`steps` updates of the paper's loss where reward(rollouts) depends on the first CoT step only."""
    for step in range(steps):
        r = generate(model, tok, PROMPTS[:1], mode, n=16, max_cot_tokens=2, max_answer_tokens=1, seed=step)
        lp = sequence_logprobs(model, r)
        lp.cot_mask[:, 1:] = False  # the reward depends on step 0 only
        lp.answer_mask[:] = False
        loss, _ = policy_loss(lp, rloo_advantages(reward(r), 16))
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_soft_policy_gradient_moves_the_mixture_toward_rewarded_inputs():
    """End-to-end direction check of the Gaussian REINFORCE estimator: reward the first fed input for being
    near a target embedding; a few SGD steps on the paper's loss move the clean mixture p·E toward it."""
    from softviz import load_model
    from softviz.generate import embedding_matrix

    model, tok = load_model(device="cpu")  # a private copy: this test changes the weights
    target = embedding_matrix(model)[tok.convert_tokens_to_ids("▁7")].detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)

    def distance():
        r = generate(model, tok, PROMPTS[:1], "soft-greedy", max_cot_tokens=1, max_answer_tokens=1)
        return (r.cot_inputs[0, 0] - target).norm().item()

    start = distance()
    _first_step_reinforce(model, tok, Mode.preset("soft", answer_temperature=1.0), opt, 12,
                          lambda r: -(r.cot_inputs[:, 0] - target).norm(dim=-1))
    assert distance() < start - 0.05


def test_detached_mixture_mean_leaves_fuzzy_cot_gradient_nowhere_but_p(embedded):
    """mixture_embedding_grad=False: in fuzzy mode (p one-hot) the Gaussian terms reach E only through the
    mean p·E, so detaching it leaves the embedding rows of the fed tokens untouched by the CoT term."""
    model, tok = embedded
    r = generate(model, tok, PROMPTS[:2], Mode.preset("fuzzy", answer_temperature=1.0), n=2, max_cot_tokens=16, seed=0)
    E = model.get_input_embeddings().weight
    grads = {}
    for flag in (True, False):
        model.zero_grad()
        lp = sequence_logprobs(model, r, mixture_embedding_grad=flag)
        (lp.cot * lp.cot_mask).sum().backward()
        fed = r.cot_tokens[r.cot_tokens >= 0].unique()
        grads[flag] = E.grad[fed].abs().sum().item() if E.grad is not None else 0.0
    model.zero_grad()
    assert grads[True] > 1.0
    assert grads[False] < 1e-3 * grads[True]


def test_gradient_snr_reads_signal_and_noise():
    from softviz.rl import gradient_snr

    g = torch.randn(1, 4000)
    same = gradient_snr(g.repeat(6, 1))
    assert same["snr"] == pytest.approx(1.0) and same["cos_halves"] == pytest.approx(1.0)
    torch.manual_seed(0)
    noise = gradient_snr(torch.randn(40, 4000))
    assert abs(noise["snr"]) < 0.01 and abs(noise["cos_halves"]) < 0.1
    # signal of norm 1 plus noise of norm 2 per estimate: ‖g‖² / (‖g‖² + E‖n‖²) = 1 / 5
    torch.manual_seed(1)
    signal = torch.randn(4000)
    signal /= signal.norm()
    est = signal + 2 * torch.randn(200, 4000) / 4000 ** 0.5
    r = gradient_snr(est)
    assert r["snr"] == pytest.approx(0.2, abs=0.02)
    assert r["signal_norm"] == pytest.approx(1.0, abs=0.06)
    with pytest.raises(ValueError, match="at least 2"):
        gradient_snr(g)


def test_gram_accumulator_matches_the_stacked_estimates(tmp_path):
    from softviz.rl import GramAccumulator, gradient_snr, gram_snr, snr_interval

    torch.manual_seed(2)
    signal = torch.randn(5000)
    est = signal / signal.norm() + 2 * torch.randn(60, 5000) / 5000 ** 0.5
    with GramAccumulator(folder=tmp_path, chunk=777) as acc:  # chunks that do not divide the size
        for g in est:
            acc.add(g.view(50, 100))
        folder = Path(acc.folder)
        assert len(list(folder.glob("*.f32"))) == 60
        with pytest.raises(ValueError, match="4999 entries"):
            acc.add(torch.zeros(4999))
        gram = acc.gram
    assert not folder.exists() and list(tmp_path.iterdir()) == []  # close() removes the stored estimates
    torch.testing.assert_close(gram, est.double() @ est.double().T, rtol=1e-6, atol=1e-9)
    assert gram_snr(gram) == pytest.approx(gradient_snr(est), rel=1e-6)
    lo, hi = snr_interval(gram)
    assert lo < gram_snr(gram)["snr"] < hi and lo < 0.2 < hi and hi - lo < 0.15
    # estimates that always agree: the interval collapses on 1; pure noise: it straddles 0
    same = torch.randn(1, 300).repeat(8, 1).double()
    assert snr_interval(same @ same.T) == pytest.approx((1.0, 1.0))
    noise = torch.randn(30, 3000).double()
    lo, hi = snr_interval(noise @ noise.T)
    assert lo < 0 < hi
    with pytest.raises(ValueError, match="at least 3"):
        snr_interval(same[:2] @ same[:2].T)


def test_gumbel_log_prob_value_and_score():
    """log Gumbel(ε) = −ε − exp(−ε) per kept coordinate; its gradient in log p is 1 − exp(−ε)."""
    from softviz.mixing import gumbel_log_prob

    log_p = torch.tensor([[-0.5, -1.5, -3.0]], requires_grad=True)
    noisy = torch.tensor([[0.2, -1.0, -math.inf]])  # the third token is outside the support
    lp = gumbel_log_prob(noisy, log_p)
    eps = torch.tensor([0.7, 0.5])
    assert lp.item() == pytest.approx(float((-eps - torch.exp(-eps)).sum()), abs=1e-6)
    lp.sum().backward()
    assert torch.allclose(log_p.grad[0, :2], 1 - torch.exp(-eps), atol=1e-6)
    assert log_p.grad[0, 2] == 0
    # the score has mean zero under its own noise (what makes REINFORCE unbiased)
    torch.manual_seed(0)
    g = -torch.log(-torch.log(torch.rand(200_000, 1).clamp(1e-10, 1 - 1e-10)))
    lp0 = torch.zeros(200_000, 1, requires_grad=True)
    gumbel_log_prob(g, lp0).sum().backward()
    assert abs(lp0.grad.mean().item()) < 0.01 and lp0.grad.var().item() == pytest.approx(1.0, abs=0.05)


def test_gumbel_needs_top_k_to_train(embedded):
    model, tok = embedded
    r = generate(model, tok, PROMPTS[:1], Mode.preset("soft-grpo", top_k=None, answer_temperature=1.0),
                 max_cot_tokens=4)
    assert r.cot_logprobs[0, 0] < 0  # still scored at rollout time, over the whole support
    with pytest.raises(ValueError, match="set top_k.*Trainable presets: hard, soft, fuzzy, gumbel, soft-grpo, multiplex"):
        sequence_logprobs(model, r)


def test_gumbel_policy_gradient_raises_the_rewarded_token():
    """Direction check of the Gumbel estimator: reward the first CoT step's Gumbel-max token for being the
    2nd or 3rd most likely; a few SGD steps on the loss move the model's probability mass onto them."""
    from softviz import load_model

    model, tok = load_model(device="cpu")  # a private copy: this test changes the weights
    # τ = 5 flattens the first step's top-5 so the rewarded tokens get sampled
    mode = Mode.preset("soft-grpo", cot_temperature=5.0, top_p=None, answer_temperature=1.0)
    opt = torch.optim.SGD(model.parameters(), lr=5e-2)

    def mass():
        with torch.no_grad():
            r = generate(model, tok, PROMPTS[:1], mode, n=1, max_cot_tokens=1, max_answer_tokens=1)
            logits = model(input_ids=torch.tensor([r.prompt_ids[0]])).logits[0, -1:]
            return mixing.filter_probs(mixing.cot_probs(logits, 5.0), top_k=5)[0, good].sum().item()

    good = generate(model, tok, PROMPTS[:1], mode, max_cot_tokens=1, max_answer_tokens=1).cot_actions["ids"][0, 0, 1:3]
    start = mass()
    _first_step_reinforce(model, tok, mode, opt, 10, lambda r: torch.isin(r.cot_tokens[:, 0], good).float())
    end = mass()
    assert end > start + 0.1, (start, end)


@pytest.mark.parametrize("over", [dict(mode="soft"), dict(mode="hard", epsilon=0.2, beta=0.05),
                                  dict(mode="multiplex")], ids=["soft", "hard-clip-kl", "multiplex"])
def test_micro_batches_accumulate_the_full_batch_gradient(embedded, over):
    """RLConfig.micro_batch splits one step's rollouts into forward-backward passes: same loss, metrics and
    gradient as one pass (here 12 rollouts in passes of 5, 5 and 2)."""
    import copy
    import dataclasses

    from softviz.config import RLConfig
    from softviz.train import rl_backward

    model, tok = embedded
    cfg = RLConfig(group_size=4, **over)
    r = generate(model, tok, PROMPTS, cfg.rollout_mode, n=4, max_cot_tokens=32, max_answer_tokens=8, seed=3)
    adv = rloo_advantages(torch.tensor([100.0, 0, 10, 100, 0, 0, 100, 10, 100, 100, 0, 10]), 4)
    ref = None
    if cfg.beta:
        ref = copy.deepcopy(model)
        with torch.no_grad():
            for p in ref.parameters():
                p.add_(1e-3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    params = [p for p in model.parameters() if p.requires_grad]
    runs = []
    for mb in (None, 5):
        model.zero_grad(set_to_none=True)
        loss, metrics = rl_backward(model, dataclasses.replace(cfg, micro_batch=mb), r, adv, ref)
        runs.append((loss, metrics, torch.cat([p.grad.flatten() for p in params])))
    model.zero_grad(set_to_none=True)
    model.eval()
    (l1, m1, g1), (l5, m5, g5) = runs
    assert g1.norm() > 0 and math.isclose(l1, l5, rel_tol=1e-4, abs_tol=1e-6)
    assert m1.keys() == m5.keys() and all(math.isclose(m1[k], m5[k], rel_tol=1e-4, abs_tol=1e-6) for k in m1)
    assert float((g1 - g5).norm()) <= 1e-4 * float(g1.norm())
    if cfg.beta:
        assert m1["kl"] > 0


def test_micro_batch_is_checked():
    from softviz.config import RLConfig

    for bad in (0, -2, 1.5, "4"):
        with pytest.raises(ValueError, match="micro_batch"):
            RLConfig(micro_batch=bad)
    assert RLConfig(micro_batch=3).micro_batch == 3


@pytest.mark.parametrize("preset", ["hard", "soft", "fuzzy", "soft-grpo", "multiplex"])
def test_shared_prompt_pass_equals_the_full_pass(embedded, preset):
    # a group's rows share their prompt: one prompt pass whose KV cache every row reuses must give the log-probs
    # and the gradient of running each row's whole sequence (prompts of different lengths, 3 rows each)
    model, tok = embedded
    ps = sorted(PROMPTS, key=len)
    assert len({len(tok.encode(p)) for p in ps}) > 1
    r = generate(model, tok, ps, Mode.preset(preset, answer_temperature=1.0), n=3, max_cot_tokens=20, seed=2)
    out = []
    for share in (True, False):
        model.zero_grad(set_to_none=True)
        lp = sequence_logprobs(model, r, share_prompts=share)
        ((lp.cot * lp.cot_mask).sum() + (lp.answer * lp.answer_mask).sum()).backward()
        out.append((lp, torch.cat([p.grad.flatten() for p in model.parameters()])))
    model.zero_grad(set_to_none=True)
    (a, ga), (b, gb) = out
    assert torch.equal(a.cot_mask, b.cot_mask) and torch.equal(a.answer_mask, b.answer_mask)
    scale = float(b.cot.detach().abs().max()) + 1.0  # Gaussian log-probs are large: compare relative to them
    torch.testing.assert_close(a.cot.detach(), b.cot.detach(), rtol=1e-5, atol=1e-5 * scale)
    torch.testing.assert_close(a.answer.detach(), b.answer.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.cot_entropy, b.cot_entropy, rtol=1e-4, atol=1e-5)
    assert float((ga - gb).norm() / gb.norm()) < 1e-4 and float(gb.norm()) > 0
