"""The statistics of online evaluation: a sample of absolute errors summarised as ``Stats``, Welch's
t-test between two of them, confidence intervals, and the verdicts of a canary step and of an
A/B test. Pure functions of the summaries: the evaluator keeps only n, Σ|e| and Σ|e|² per time
bucket, which is all these need.

Each sample is a set of absolute errors |prediction − actual|; its mean is the MAE. The tests
compare MAEs, so they are tests on the means of absolute errors (Welch's unequal-variance t-test:
the two sides have their own spread and size, and with hundreds of samples the mean of even a
skewed error distribution is close to normal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from scipy import stats as _sps


@dataclass(frozen=True)
class Stats:
    """n absolute errors: their mean (the MAE) and standard deviation (n − 1 in the divisor)."""

    n: int
    mae: float
    sd: float

    @classmethod
    def from_sums(cls, n: float, total: float, total_sq: float) -> Stats:
        """From n, Σ|e| and Σ|e|² (what the evaluator keeps per bucket)."""
        n = int(n)
        if n <= 0:
            return cls(0, 0.0, 0.0)
        mean = total / n
        if n == 1:
            return cls(1, mean, 0.0)
        var = (total_sq - total * total / n) / (n - 1)
        return cls(n, mean, math.sqrt(var) if var > 0 else 0.0)  # rounding can leave a tiny negative

    @classmethod
    def of(cls, errors: Any) -> Stats:
        """From the errors themselves (made absolute)."""
        values = [abs(float(e)) for e in errors]
        return cls.from_sums(len(values), sum(values), sum(v * v for v in values))

    @property
    def se(self) -> float:
        """Standard error of the MAE."""
        return self.sd / math.sqrt(self.n) if self.n > 0 else math.inf

    def as_dict(self) -> dict[str, float]:
        return {"n": self.n, "mae": self.mae, "sd": self.sd}


def welch(a: Stats, b: Stats) -> tuple[float, float, float]:
    """Welch's t-test of mean(a) = mean(b): ``(t, two-sided p, Welch–Satterthwaite df)``;
    t > 0 when a's MAE is the larger. Needs n ≥ 2 on both sides (else t = 0, p = 1, df = 0).
    When neither side varies, equal means give p = 1 and different means p = 0."""
    if a.n < 2 or b.n < 2:
        return 0.0, 1.0, 0.0
    va, vb = a.sd ** 2 / a.n, b.sd ** 2 / b.n
    if va + vb == 0:
        if a.mae == b.mae:
            return 0.0, 1.0, float(a.n + b.n - 2)
        return math.copysign(math.inf, a.mae - b.mae), 0.0, float(a.n + b.n - 2)
    df = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))
    t, p = _sps.ttest_ind_from_stats(a.mae, a.sd, a.n, b.mae, b.sd, b.n, equal_var=False)
    return float(t), float(p), float(df)


def mean_ci(s: Stats, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the MAE; (mae, mae) below two samples' worth of spread."""
    if s.n < 2:
        return s.mae, s.mae
    half = _sps.t.ppf(0.5 + confidence / 2, s.n - 1) * s.se
    return s.mae - half, s.mae + half


def diff_ci(a: Stats, b: Stats, confidence: float = 0.95) -> tuple[float, float]:
    """Welch confidence interval of mae(b) − mae(a)."""
    d = b.mae - a.mae
    if a.n < 2 or b.n < 2:
        return d, d
    se = math.sqrt(a.sd ** 2 / a.n + b.sd ** 2 / b.n)
    if se == 0:
        return d, d
    _, _, df = welch(a, b)
    half = _sps.t.ppf(0.5 + confidence / 2, df) * se
    return d - half, d + half


CanaryVerdict = Literal["wait", "pass", "fail"]


def canary_verdict(stable: Stats, candidate: Stats, min_samples: int, max_mae_ratio: float,
                   alpha: float = 0.05, patience: float = 4.0) -> tuple[CanaryVerdict, str]:
    """Whether a canary step may go on, judged on each side's online MAE over the same span.

    The rule, in order:

    1. **wait** while either side has fewer than ``min_samples`` judged predictions;
    2. **pass** when ``candidate.mae ≤ stable.mae × max_mae_ratio``;
    3. **fail** when the candidate is over that limit *and* worse than the stable with
       significance: one-sided Welch's t-test of mae(candidate) > mae(stable), p < ``alpha``;
    4. **fail** as well when it is over the limit without significance but both sides already
       have ``patience × min_samples`` samples: with that much data a point estimate over the
       limit is to be believed — a canary must never be promoted on "not proven worse";
    5. otherwise **wait**: over the limit, but too little evidence yet to roll back.

    So a candidate as good as the stable is rolled back by chance at most about ``alpha`` of the
    time at the minimum sample size (the noise of a few hundred absolute errors easily moves an
    MAE by 10 %), and a clearly worse one is rolled back at the first judgement.
    """
    if stable.n < min_samples or candidate.n < min_samples:
        return "wait", (f"too few samples: stable {stable.n}, candidate {candidate.n} "
                        f"(need {min_samples} each)")
    limit = stable.mae * max_mae_ratio
    ratio = candidate.mae / stable.mae if stable.mae > 0 else (math.inf if candidate.mae > 0 else 1.0)
    figures = (f"candidate MAE {candidate.mae:.4g} (n={candidate.n}) vs stable {stable.mae:.4g} "
               f"(n={stable.n}), ratio {ratio:.3f}, limit {max_mae_ratio:g}")
    if candidate.mae <= limit:
        return "pass", figures
    t, p_two, _ = welch(candidate, stable)
    p_worse = p_two / 2 if t > 0 else 1 - p_two / 2
    if p_worse < alpha:
        return "fail", f"{figures}; worse with p={p_worse:.3g} (one-sided Welch)"
    if min(stable.n, candidate.n) >= patience * min_samples:
        return "fail", f"{figures}; over the limit on {patience:g}× the minimum sample (p={p_worse:.3g})"
    return "wait", f"{figures}; over the limit but not yet significant (p={p_worse:.3g}): waiting for more"


AbVerdict = Literal["A better", "B better", "inconclusive", "too few samples"]


def ab_verdict(a: Stats, b: Stats, min_samples: int, alpha: float = 0.05) -> tuple[AbVerdict, dict[str, Any]]:
    """An A/B test on online MAE: Welch's t-test (two-sided) on the absolute errors.

    "too few samples" while either side has fewer than ``min_samples``; else the side with the
    lower MAE is better when p < ``alpha``, and "inconclusive" otherwise. ``details`` has each
    side's n, MAE, sd and (1 − alpha) confidence interval, the difference mae(b) − mae(a) with
    its interval, t, df and p."""
    confidence = 1 - alpha
    t, p, df = welch(a, b)
    details: dict[str, Any] = {
        "test": "Welch's t-test on absolute errors (two-sided)",
        "alpha": alpha, "min_samples": min_samples,
        "a": {**a.as_dict(), "ci": mean_ci(a, confidence)},
        "b": {**b.as_dict(), "ci": mean_ci(b, confidence)},
        "diff": b.mae - a.mae, "diff_ci": diff_ci(a, b, confidence),
        "t": t, "df": df, "p": p,
    }
    if a.n < min_samples or b.n < min_samples:
        return "too few samples", details
    if p < alpha:
        return ("A better" if a.mae < b.mae else "B better"), details
    return "inconclusive", details
