import math

import pytest
import torch

from softviz import mixing


def test_cot_probs_temperature_and_argmax_limit():
    logits = torch.tensor([[1.0, 3.0, 2.0]])
    p = mixing.cot_probs(logits, 0.5)
    assert torch.allclose(p, torch.softmax(logits / 0.5, -1)) and torch.allclose(p.sum(-1), torch.ones(1))
    assert mixing.cot_probs(logits, 0).tolist() == [[0.0, 1.0, 0.0]]
    # fuzzy: τ = 1e-4 is numerically one-hot in fp32
    assert mixing.cot_probs(logits, 1e-4).tolist() == [[0.0, 1.0, 0.0]]


def test_fuzzy_mixture_is_the_argmax_embedding():
    torch.manual_seed(0)
    E = torch.randn(50, 8)
    logits = torch.randn(4, 50)
    h = mixing.mixture_embedding(mixing.cot_probs(logits, 1e-4), E)
    assert torch.equal(h, E[logits.argmax(-1)])


def test_mixture_embedding_dense_and_sparse_paths_agree():
    torch.manual_seed(0)
    E = torch.randn(400, 16)
    dense = torch.softmax(torch.randn(3, 400), -1)
    assert torch.allclose(mixing.mixture_embedding(dense, E), dense @ E, atol=1e-6)
    sparse = mixing.filter_probs(dense, top_k=5)  # 5 columns of 400: the gather path
    assert torch.allclose(mixing.mixture_embedding(sparse, E), sparse @ E, atol=1e-6)


def test_filter_probs():
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert torch.allclose(mixing.filter_probs(p, top_k=2), torch.tensor([[0.625, 0.375, 0, 0]]))
    # top-p 0.7: mass before token 2 is 0.8 >= 0.7, so tokens 0 and 1 stay
    assert torch.allclose(mixing.filter_probs(p, top_p=0.7), torch.tensor([[0.625, 0.375, 0, 0]]))
    # min-p 0.2: keep tokens with p >= 0.1
    assert torch.allclose(mixing.filter_probs(p, min_p=0.2), torch.tensor([[0.5, 0.3, 0.15, 0]]) / 0.95)
    assert torch.equal(mixing.filter_probs(p), p)


def test_entropy():
    assert mixing.entropy(torch.tensor([0.5, 0.5])).item() == pytest.approx(math.log(2))
    assert mixing.entropy(torch.tensor([1.0, 0.0])).item() == 0.0
    assert mixing.entropy(torch.full((8,), 1 / 8)).item() == pytest.approx(math.log(8))


def test_sigma_is_gamma_times_per_coordinate_rms():
    E = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    # sqrt((9 + 16 + 0 + 0) / 4) = 2.5
    assert mixing.embedding_rms(E) == pytest.approx(2.5)
    assert mixing.noise_std(E, 0.33) == pytest.approx(0.825)


def test_noise_is_seeded_per_row_and_scaled():
    g1 = mixing.row_generators([1, 2], "cpu")
    g2 = mixing.row_generators([1, 2], "cpu")
    a = mixing.gaussian_noise(4096, 0.5, g1, "cpu")
    b = mixing.gaussian_noise(4096, 0.5, g2, "cpu")
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])
    assert a.std().item() == pytest.approx(0.5, rel=0.05)
    # a row's draws do not depend on the other rows
    c = mixing.gaussian_noise(4096, 0.5, mixing.row_generators([2], "cpu"), "cpu")
    assert torch.equal(c[0], a[1])


def test_gaussian_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    x, mu = torch.randn(3, 6), torch.randn(3, 6)
    ref = torch.distributions.Normal(mu, 0.7).log_prob(x).sum(-1)
    assert torch.allclose(mixing.gaussian_log_prob(x, mu, 0.7, include_constant=True), ref, atol=1e-5)
    # without the constant: -||x - mu||^2 / (2 sigma^2)
    assert torch.allclose(mixing.gaussian_log_prob(x, mu, 0.7), -((x - mu) ** 2).sum(-1) / (2 * 0.49))
    with pytest.raises(ValueError, match="σ > 0"):
        mixing.gaussian_log_prob(x, mu, 0.0)


def test_gaussian_log_prob_gradient_matches_finite_differences():
    torch.manual_seed(0)
    x = torch.randn(5, dtype=torch.float64)
    mu = torch.randn(5, dtype=torch.float64, requires_grad=True)
    lp = mixing.gaussian_log_prob(x, mu, 0.3)
    (g,) = torch.autograd.grad(lp, mu)
    assert torch.allclose(g.double(), ((x - mu) / 0.09).detach().double(), atol=1e-4)


def test_nearest_tokens_cosine_and_l2():
    E = torch.tensor([[1.0, 0.0], [0.0, 1.0], [10.0, 3.0], [-1.0, 0.0]])
    x = torch.tensor([[0.9, 0.1]])
    ids, s = mixing.nearest_tokens(x, E, 2, "cosine")
    assert ids.tolist() == [[0, 2]] and s[0, 0].item() == pytest.approx(0.9 / math.hypot(0.9, 0.1))
    ids, d = mixing.nearest_tokens(x, E, 2, "l2")
    assert ids.tolist() == [[0, 1]] and d[0, 0].item() == pytest.approx(math.hypot(0.1, 0.1))


def test_sample_categorical_follows_the_distribution():
    p = torch.tensor([[0.1, 0.6, 0.3]]).repeat(4000, 1)
    gens = mixing.row_generators(range(4000), "cpu")
    counts = torch.bincount(mixing.sample_categorical(p, gens), minlength=3).float() / 4000
    assert torch.allclose(counts, p[0], atol=0.03)


def test_moi_weights_limits():
    p = torch.tensor([[0.7, 0.2, 0.1]])
    y = torch.tensor([0])
    w = mixing.moi_weights(p, y, beta=1.0)
    assert torch.allclose(w.sum(-1), torch.ones(1))
    H = mixing.entropy(p) / math.log(3)
    assert torch.allclose(w, (H * p + (2 - H) * torch.tensor([[1.0, 0, 0]])) / 2)
    # a one-hot p has H = 0, so MoI feeds the sampled token
    assert torch.equal(mixing.moi_weights(torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([1]), 1.0),
                       torch.tensor([[0.0, 1.0, 0.0]]))


def test_mixture_embedding_skips_only_negligible_weights():
    torch.manual_seed(0)
    E = torch.randn(5000, 32)
    logits = torch.randn(2, 5000) * 8  # peaked: most weights at τ = 0.5 are far below 1e-12
    p = mixing.cot_probs(logits, 0.5)
    assert (p > mixing.TINY_WEIGHT).any(0).sum() * 4 <= 5000  # the gather path is taken
    exact = (p.double() @ E.double()).float()
    assert torch.allclose(mixing.mixture_embedding(p, E), exact, atol=1e-5, rtol=1e-6)
