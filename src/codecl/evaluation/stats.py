"""Statistics over seeds: 95% Student-t intervals and the paired t-test, without scipy.

Pure functions on plain lists of floats (`None` = no value, dropped). The t critical values come
from a table for df ≤ 30 (NIST/SEMATECH e-Handbook 1.3.6.7.2) and the Cornish-Fisher expansion
of Abramowitz & Stegun 26.7.5 beyond; p-values from Student's t distribution function
written as a regularised incomplete beta function (A&S 26.7.1), evaluated by the continued
fraction of Numerical Recipes (3rd ed., §6.4) with Lentz's method.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist, fmean, stdev
from typing import Iterable, Optional, Sequence

__all__ = ["t_critical_95", "t_two_sided_p", "Interval", "interval95", "mean_ci95", "PairedTest", "paired_t_test"]

ALPHA = 0.05
"""Two-sided significance level; intervals are 1 − ALPHA = 95%."""

# Two-sided 95% critical values t_{0.975, df}, df = 1..30.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_critical_95(df: int) -> float:
    """Two-sided 95% critical value t_{0.975, df}: the table for df ≤ 30, A&S 26.7.5 beyond."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T95):
        return _T95[df - 1]
    z = NormalDist().inv_cdf(0.975)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (Numerical Recipes `betacf`, modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, for x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):  # the fraction converges fast here; else use the symmetry I_x(a,b) = 1 − I_{1−x}(b,a)
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| ≥ |t|) for Student's T with `df` degrees of freedom: I_{df/(df+t²)}(df/2, 1/2) (A&S 26.7.1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if math.isinf(t):
        return 0.0
    return min(1.0, _regularized_beta(df / 2.0, 0.5, df / (df + t * t)))


@dataclass(frozen=True)
class Interval:
    """Mean of `n` values and the half-width of its two-sided 95% t-interval (None for n < 2)."""

    mean: Optional[float]
    half_width: Optional[float]
    n: int

    @property
    def low(self) -> Optional[float]:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> Optional[float]:
        return None if self.half_width is None else self.mean + self.half_width

    def as_dict(self) -> dict:
        return {"mean": self.mean, "half_width": self.half_width, "low": self.low, "high": self.high, "n": self.n}


def interval95(values: Iterable[Optional[float]]) -> Interval:
    """Mean ± t_{0.975, n−1} · s / √n of the non-null values (s the sample standard deviation)."""
    xs = [v for v in values if v is not None]
    if not xs:
        return Interval(None, None, 0)
    if len(xs) < 2:
        return Interval(xs[0], None, 1)
    return Interval(fmean(xs), t_critical_95(len(xs) - 1) * stdev(xs) / math.sqrt(len(xs)), len(xs))


def mean_ci95(values: Iterable[Optional[float]]) -> tuple[Optional[float], Optional[float]]:
    """(mean, half-width of the 95% t-interval) of the non-null values; half-width None for n < 2."""
    found = interval95(values)
    return found.mean, found.half_width


@dataclass(frozen=True)
class PairedTest:
    """Paired t-test of a − b over matched pairs (here: the seeds two methods share)."""

    n: int
    """Number of pairs."""
    interval: Interval
    """Mean difference a − b and its 95% t-interval."""
    t: Optional[float]
    """t statistic mean / (s / √n); ±inf when every difference is the same non-zero number."""
    p_value: Optional[float]
    """Two-sided p-value (n − 1 degrees of freedom); None for n < 2."""

    @property
    def significant(self) -> Optional[bool]:
        """p < 0.05 (equivalently: the 95% interval excludes 0); None for n < 2."""
        return None if self.p_value is None else self.p_value < ALPHA

    def as_dict(self) -> dict:
        t = self.t if self.t is None or math.isfinite(self.t) else None  # JSON has no infinity
        return {"n": self.n, "mean_difference": self.interval.mean, "half_width": self.interval.half_width,
                "low": self.interval.low, "high": self.interval.high, "t": t, "df": self.n - 1 if self.n >= 2 else None,
                "p_value": self.p_value, "significant": self.significant}


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Paired t-test of the differences a[i] − b[i] (pairs with a None on either side are dropped)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples must have equal length, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b) if x is not None and y is not None]
    found = interval95(diffs)
    if found.n < 2:
        return PairedTest(found.n, found, None, None)
    sd = stdev(diffs)
    if sd == 0.0:  # every pair differs by the same amount: no spread to test against
        t = 0.0 if found.mean == 0.0 else math.copysign(math.inf, found.mean)
    else:
        t = found.mean / (sd / math.sqrt(found.n))
    return PairedTest(found.n, found, t, t_two_sided_p(t, found.n - 1))
