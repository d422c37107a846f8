"""The statistics of online evaluation, on numbers worked out by hand (and by scipy on raw data)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from consumers.analysis import Stats, ab_verdict, canary_verdict, diff_ci, mean_ci, welch

A = [1, 2, 3, 4, 5]  # mean 3, sd √2.5
B = [2, 4, 6, 8, 10]  # mean 6, sd √10


def test_stats_from_sums_match_the_sample() -> None:
    s = Stats.from_sums(5, 15.0, 55.0)
    assert s.n == 5 and s.mae == 3.0 and s.sd == pytest.approx(math.sqrt(2.5))
    assert Stats.of([-1, 2, -3, 4, -5]) == s  # absolute errors
    assert Stats.from_sums(0, 0, 0) == Stats(0, 0.0, 0.0)
    assert Stats.from_sums(1, 2.5, 6.25) == Stats(1, 2.5, 0.0)
    # all equal: rounding in Σ|e|² − (Σ|e|)²/n must not give a negative variance
    assert Stats.from_sums(3, 0.3, 0.030000000000000006 - 1e-18).sd >= 0


def test_welch_matches_the_textbook_figures() -> None:
    t, p, df = welch(Stats.of(A), Stats.of(B))
    # se = √(2.5/5 + 10/5) = √2.5; t = (3 − 6)/√2.5; df = 2.5² / (0.5²/4 + 2²/4) = 100/17
    assert t == pytest.approx(-3 / math.sqrt(2.5))
    assert df == pytest.approx(100 / 17)
    assert p == pytest.approx(0.10753119493, rel=1e-6)
    t2, p2, _ = welch(Stats.of(B), Stats.of(A))
    assert t2 == pytest.approx(-t) and p2 == pytest.approx(p)


def test_welch_edge_cases() -> None:
    assert welch(Stats(1, 1.0, 0.0), Stats(50, 2.0, 1.0)) == (0.0, 1.0, 0.0)
    assert welch(Stats(10, 1.0, 0.0), Stats(10, 1.0, 0.0)) == (0.0, 1.0, 18.0)
    t, p, _ = welch(Stats(10, 2.0, 0.0), Stats(10, 1.0, 0.0))
    assert t == math.inf and p == 0.0


def test_confidence_intervals() -> None:
    lo, hi = mean_ci(Stats.of(A))
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4) · se
    assert (lo, hi) == (pytest.approx(3 - half), pytest.approx(3 + half))
    # mae(B) − mae(A) = 3, the Welch interval scipy gives for A − B, mirrored
    lo, hi = diff_ci(Stats.of(A), Stats.of(B))
    assert lo == pytest.approx(-0.887741643736975) and hi == pytest.approx(6.887741643736975)
    assert mean_ci(Stats(1, 4.0, 0.0)) == (4.0, 4.0)


def test_stats_of_large_samples_agree_with_numpy() -> None:
    rng = np.random.default_rng(7)
    errors = np.abs(rng.normal(0, 2, 10_000))
    s = Stats.from_sums(len(errors), float(errors.sum()), float((errors ** 2).sum()))
    assert s.mae == pytest.approx(errors.mean()) and s.sd == pytest.approx(errors.std(ddof=1))


def test_canary_waits_for_samples_on_both_sides() -> None:
    verdict, reason = canary_verdict(Stats(500, 1.0, 1.0), Stats(199, 5.0, 1.0), min_samples=200, max_mae_ratio=1.1)
    assert verdict == "wait" and "too few" in reason


def test_canary_passes_within_the_ratio() -> None:
    assert canary_verdict(Stats(300, 1.0, 0.8), Stats(300, 1.09, 0.8), 200, 1.1)[0] == "pass"
    assert canary_verdict(Stats(300, 1.0, 0.8), Stats(300, 0.5, 0.8), 200, 1.1)[0] == "pass"


def test_canary_fails_a_clearly_worse_candidate() -> None:
    # 1.5 vs 1.0 with sd 0.8 and 300 each: t ≈ 7.7, p ≈ 1e-13
    verdict, reason = canary_verdict(Stats(300, 1.0, 0.8), Stats(300, 1.5, 0.8), 200, 1.1)
    assert verdict == "fail" and "Welch" in reason


def test_canary_over_the_limit_without_significance_waits_then_fails() -> None:
    # 1.15 vs 1.0 with sd 2: se ≈ 0.16 at n = 300, not significant → wait for more evidence
    stable, candidate = Stats(300, 1.0, 2.0), Stats(300, 1.15, 2.0)
    assert canary_verdict(stable, candidate, 200, 1.1)[0] == "wait"
    # at patience × min_samples the point estimate is believed (here it is also significant)
    assert canary_verdict(Stats(800, 1.0, 4.0), Stats(800, 1.15, 4.0), 200, 1.1)[0] == "fail"
    _, p, _ = welch(Stats(800, 1.15, 4.0), Stats(800, 1.0, 4.0))
    assert p / 2 > 0.05  # so the fail above came from the patience rule, not the test


def test_canary_with_a_perfect_stable() -> None:
    assert canary_verdict(Stats(300, 0.0, 0.0), Stats(300, 0.0, 0.0), 200, 1.1)[0] == "pass"
    assert canary_verdict(Stats(300, 0.0, 0.0), Stats(300, 0.2, 0.1), 200, 1.1)[0] == "fail"


def test_ab_verdicts() -> None:
    verdict, details = ab_verdict(Stats(1000, 1.0, 1.0), Stats(1000, 1.2, 1.0), min_samples=100)
    assert verdict == "A better"
    assert details["p"] < 1e-5 and details["diff"] == pytest.approx(0.2)
    lo, hi = details["diff_ci"]
    assert 0 < lo < 0.2 < hi
    lo, hi = details["a"]["ci"]
    assert lo < 1.0 < hi and details["a"]["n"] == 1000
    assert "Welch" in details["test"]

    assert ab_verdict(Stats(1000, 1.3, 1.0), Stats(1000, 1.0, 1.0), 100)[0] == "B better"
    verdict, details = ab_verdict(Stats(1000, 1.0, 1.0), Stats(1000, 1.03, 1.0), 100)
    assert verdict == "inconclusive" and details["p"] > 0.05
    assert details["diff_ci"][0] < 0 < details["diff_ci"][1]
    assert ab_verdict(Stats(99, 1.0, 1.0), Stats(1000, 5.0, 1.0), 100)[0] == "too few samples"


def test_ab_verdict_agrees_with_scipy_on_raw_errors() -> None:
    from scipy import stats

    rng = np.random.default_rng(3)
    a, b = np.abs(rng.normal(0, 1.0, 400)), np.abs(rng.normal(0, 1.2, 300))
    _, details = ab_verdict(Stats.of(a), Stats.of(b), min_samples=10)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert details["p"] == pytest.approx(ref.pvalue) and details["t"] == pytest.approx(ref.statistic)
    lo, hi = ref.confidence_interval(0.95)
    assert details["diff_ci"] == (pytest.approx(-hi), pytest.approx(-lo))
