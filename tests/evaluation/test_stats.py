"""Intervals and the paired t-test, against hand-computed numbers and closed forms of Student's t."""
import math

import pytest

from codecl.evaluation.stats import interval95, mean_ci95, paired_t_test, t_critical_95, t_two_sided_p


def test_t_critical_values_from_the_table_and_beyond():
    assert t_critical_95(1) == 12.706 and t_critical_95(2) == 4.303 and t_critical_95(30) == 2.042
    for df, table in ((40, 2.021), (60, 2.000), (120, 1.980)):
        assert t_critical_95(df) == pytest.approx(table, abs=1e-3)
    assert t_critical_95(10**6) == pytest.approx(1.95996, abs=1e-4)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_critical_95(0)


def test_two_sided_p_matches_closed_forms():
    # df = 1 (Cauchy): P(|T| > t) = 1 − (2/π)·atan(t); df = 2: 1 − t / √(2 + t²).
    for t in (0.5, 1.0, 3.0, 12.706):
        assert t_two_sided_p(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), abs=1e-10)
        assert t_two_sided_p(-t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-10)
    assert t_two_sided_p(0.0, 7) == 1.0 and t_two_sided_p(math.inf, 7) == 0.0


@pytest.mark.parametrize("df", [1, 2, 3, 5, 10, 20, 30, 31, 45, 100, 1000])
def test_the_critical_value_has_p_of_five_percent(df):
    assert t_two_sided_p(t_critical_95(df), df) == pytest.approx(0.05, abs=2e-4)


def test_interval_by_hand():
    found = interval95([1, 2, 3, 4, None, 5])  # mean 3, s = √2.5, se = s/√5, t(4) = 2.776
    assert (found.mean, found.n) == (3, 5)
    assert found.half_width == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5))
    assert found.low == pytest.approx(3 - found.half_width) and found.high == pytest.approx(3 + found.half_width)
    assert interval95([0.1, 0.3]).half_width == pytest.approx(12.706 * 0.1)
    assert interval95([0.2]).as_dict() == {"mean": 0.2, "half_width": None, "low": None, "high": None, "n": 1}
    assert interval95([None]).mean is None
    assert mean_ci95([0.2, None]) == (0.2, None)


def test_paired_t_test_by_hand():
    # differences 0.02, 0.03, 0.04: mean 0.03, s 0.01, t = 0.03 / (0.01/√3) = 3√3, df 2
    test = paired_t_test([0.30, 0.32, 0.34], [0.28, 0.29, 0.30])
    t = 3 * math.sqrt(3)
    assert test.n == 3 and test.t == pytest.approx(t)
    assert test.interval.mean == pytest.approx(0.03) and test.interval.half_width == pytest.approx(4.303 * 0.01 / math.sqrt(3))
    assert test.p_value == pytest.approx(1 - t / math.sqrt(2 + t * t)) and test.p_value == pytest.approx(0.0351, abs=1e-4)
    assert test.significant is True
    d = test.as_dict()
    assert d["df"] == 2 and d["low"] == pytest.approx(0.03 - 4.303 * 0.01 / math.sqrt(3)) and d["significant"] is True


def test_paired_t_test_not_significant_and_degenerate_cases():
    spans = paired_t_test([0.30, 0.31, 0.32], [0.29, 0.33, 0.30])  # differences 0.01, −0.02, 0.02
    assert spans.significant is False and spans.interval.low < 0 < spans.interval.high
    one = paired_t_test([0.3, None], [0.2, 0.1])  # a pair with a missing side is dropped
    assert one.n == 1 and one.p_value is None and one.significant is None and one.as_dict()["df"] is None
    same = paired_t_test([0.5, 0.75], [0.25, 0.5])  # identical differences (exact in binary): no spread
    assert same.t == math.inf and same.p_value == 0.0 and same.as_dict()["t"] is None
    assert paired_t_test([0.3, 0.4], [0.3, 0.4]).p_value == 1.0
    with pytest.raises(ValueError, match="equal length"):
        paired_t_test([0.1], [0.1, 0.2])
