"""How many seeds a paired comparison needs: the power of the paired two-sided t-test.

The reproduction fixes its number of seeds per family before any distillation run
(docs/REPRODUCTION.md): from the students alone's seed spread, enough seeds that a paired
difference of a given size would be separated (its 95 % interval excludes 0) with 80 % power.

With ``n`` seeds and differences of standard deviation ``sd_diff``, the statistic
``mean(d) / (sd(d) / sqrt(n))`` follows a noncentral t with ``n - 1`` degrees of freedom and
noncentrality ``effect * sqrt(n) / sd_diff``; the test separates when its absolute value passes
the two-sided critical value ``t(1 - alpha / 2, n - 1)``, which is the interval excluding 0.
"""

from __future__ import annotations

import math

__all__ = ["paired_power", "seeds_for_power"]


def paired_power(n: int, effect: float, sd_diff: float, alpha: float = 0.05) -> float:
    """The probability that ``n`` paired seeds separate a true mean difference ``effect``."""
    if n < 2:
        return 0.0  # one difference has no spread, so no interval
    from scipy import stats

    df, nc = n - 1, abs(effect) * math.sqrt(n) / sd_diff
    crit = stats.t.ppf(1 - alpha / 2, df)
    # The lower tail P(T < -crit) is written as P(T > crit) at -nc (the same by symmetry):
    # scipy's nct.cdf answers nan far in the tail (noncentrality ~80 at 2 degrees of freedom).
    return float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc))


def seeds_for_power(effect: float, sd_diff: float, power: float = 0.8, alpha: float = 0.05,
                    least: int = 3, most: int = 100) -> int:
    """The fewest seeds (at least ``least``) whose paired test has ``power``; ``most`` if even
    that many don't reach it (the caller says so rather than running forever)."""
    if sd_diff <= 0:
        return least
    for n in range(max(2, least), most + 1):
        if paired_power(n, effect, sd_diff, alpha) >= power:
            return n
    return most
