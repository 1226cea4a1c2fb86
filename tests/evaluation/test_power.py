"""The seed count of the reproduction's protocol: the paired t-test's power."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bckd.evaluation.power import paired_power, seeds_for_power


def test_power_matches_a_simulation() -> None:
    # 4000 simulated experiments of 6 paired seeds at effect 1, sd 1: the share whose 95 %
    # interval excludes 0 is the power, within the simulation's own error
    from scipy import stats

    rng = np.random.default_rng(0)
    d = rng.normal(1.0, 1.0, size=(4000, 6))
    half = stats.t.ppf(0.975, 5) * d.std(axis=1, ddof=1) / math.sqrt(6)
    simulated = float(np.mean(np.abs(d.mean(axis=1)) > half))
    assert paired_power(6, 1.0, 1.0) == pytest.approx(simulated, abs=0.025)


def test_seeds_grow_with_spread_and_stop_at_the_power() -> None:
    n = seeds_for_power(effect=1.0, sd_diff=1.0)
    assert paired_power(n, 1.0, 1.0) >= 0.8 > paired_power(n - 1, 1.0, 1.0)
    assert seeds_for_power(1.0, 2.0) > n > seeds_for_power(1.0, 0.5)
    assert seeds_for_power(1.0, 0.01) == 3  # never fewer than the floor
    assert seeds_for_power(1.0, 100.0, most=20) == 20


def test_a_large_effect_at_few_seeds_has_full_power() -> None:
    # GFL's phase 1: a 6.5-point effect over a 0.14 spread, noncentrality ~80 at 2 degrees of
    # freedom, where scipy's nct.cdf answers nan; the power is 1, so 3 seeds suffice
    assert paired_power(3, 19.4 / 3, math.sqrt(2) * 0.1) == pytest.approx(1.0)
    assert seeds_for_power(19.4 / 3, math.sqrt(2) * 0.1) == 3
