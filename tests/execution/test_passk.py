from fractions import Fraction
from math import comb

import pytest

from codecl.execution.passk import mean_pass_at_k, pass_at_k


def exact(n: int, c: int, k: int) -> float:
    return float(1 - Fraction(comb(n - c, k), comb(n, k)))


def test_hand_computed_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # c / n
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(3, 0, 2) == 0.0
    assert pass_at_k(4, 3, 2) == 1.0  # n - c < k: every pair holds a correct sample
    assert pass_at_k(1, 1, 1) == 1.0


@pytest.mark.parametrize("n", [1, 2, 7, 20])
def test_matches_the_binomial_definition(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(exact(n, c, k), abs=1e-12)


def test_stable_where_the_binomials_overflow_floats():
    assert comb(2000, 1000) > 1e308  # float(comb) would overflow
    assert pass_at_k(2000, 3, 1000) == pytest.approx(exact(2000, 3, 1000), rel=1e-9)


def test_rejects_k_above_n_and_bad_counts():
    with pytest.raises(ValueError, match="needs at least k=10 samples"):
        pass_at_k(5, 1, 10)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(3, 4, 1)


def test_mean_over_problems_leaves_out_k_above_the_smallest_n():
    counts = [(3, 1), (3, 3), (5, 0)]
    result = mean_pass_at_k(counts, [1, 3, 5])
    assert set(result) == {"1", "3"}
    assert result["1"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert result["3"] == pytest.approx((1 + 1 + exact(5, 0, 3)) / 3)
