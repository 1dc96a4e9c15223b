import math

import pytest

from softviz.evaluate import pass_at_k


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    # 1 − C(n−c, k)/C(n, k), checked against math.comb
    for n, c, k in [(32, 3, 8), (10, 5, 3), (32, 1, 32), (7, 2, 6)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
