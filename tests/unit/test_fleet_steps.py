"""``bench --fleet``'s stepping: after the first failing step, one step halfway between it and
the highest sustained one says more closely where the ceiling lies."""

from __future__ import annotations

from bench.whole_fleet import SERVICES, FleetConfig, FleetResult, Step, markdown, refinement


def step(rate: float, sustained: bool) -> Step:
    return Step(rate, 2, sustained=sustained, why_not=None if sustained else "lag grows",
                lag_slope_per_s={s: 0.0 for s in SERVICES})


def test_a_refining_step_lies_halfway_and_the_lowest_failing_step_is_the_one_reported():
    result = FleetResult(FleetConfig())
    result.steps = [step(16_875, True), step(25_312.5, True),
                    step(37_968.75, False)]
    assert refinement(result) == 31_000  # √(25,312.5 × 37,968.75) = 31,001
    result.steps.append(step(31_000, False))
    assert result.first_failing.offered_per_s == 31_000 and result.highest_sustained.offered_per_s == 25_312.5
    assert refinement(result) == 28_010
    result.steps.append(step(28_010, True))
    assert result.highest_sustained.offered_per_s == 28_010
    rows = [line.split(" | ")[0] for line in markdown(result).splitlines() if line.startswith("| ") and "," in line[:9]]
    assert rows == ["| 16,875", "| 25,312", "| 28,010", "| 31,000", "| 37,969"]  # in order of rate


def test_no_refinement_without_a_sustained_and_a_failing_step():
    result = FleetResult(FleetConfig())
    result.steps = [step(5_000, True), step(7_500, True)]
    assert refinement(result) is None
    result.steps = [step(5_000, False)]
    assert refinement(result) is None
