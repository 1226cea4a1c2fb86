"""Seed statistics (bckd.evaluation.stats) on numbers whose answers are known."""

from __future__ import annotations

import math

import pytest

from bckd.evaluation.stats import (
    RunPoint,
    compare_methods,
    mean_std,
    paired_difference,
    parse_seed,
    t_interval,
    t_quantile,
)

# Student's t quantiles from the printed tables (e.g. NIST/SEMATECH e-Handbook of Statistical
# Methods, 1.3.6.7.2, "Critical values of the Student's t distribution"): df -> t(0.975, df).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 30: 2.042}


@pytest.mark.parametrize("df", sorted(T975))
def test_t_quantile_matches_the_printed_table(df):
    assert t_quantile(0.975, df) == pytest.approx(T975[df], abs=5e-4)


def test_t_quantile_one_sided_and_symmetric():
    assert t_quantile(0.95, 9) == pytest.approx(1.833, abs=5e-4)
    assert t_quantile(0.025, 4) == pytest.approx(-t_quantile(0.975, 4))
    with pytest.raises(ValueError):
        t_quantile(0.975, 0)


def test_mean_and_sample_std():
    assert mean_std([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == pytest.approx(
        (5.0, math.sqrt(32 / 7)))  # sum of squares 32 over n - 1 = 7
    assert mean_std([3.5]) == (3.5, None)
    with pytest.raises(ValueError):
        mean_std([])


def test_t_interval_by_hand():
    # [2, 3, 4]: mean 3, sd 1, se 1/sqrt(3); t(0.975, 2) = 4.302653 -> half width 2.484138
    mean, low, high = t_interval([2.0, 3.0, 4.0])
    assert mean == pytest.approx(3.0)
    assert (low, high) == pytest.approx((3 - 2.484138, 3 + 2.484138), abs=1e-6)
    # [1, 3]: mean 2, sd sqrt(2), se 1; t(0.975, 1) = 12.706205
    assert t_interval([1.0, 3.0])[1:] == pytest.approx((2 - 12.706205, 2 + 12.706205), abs=1e-6)
    assert t_interval([5.0]) == (5.0, None, None)


def test_paired_t_on_students_sleep_data():
    """Student (1908) / Cushny and Peebles: extra hours of sleep of 10 patients under two drugs.
    R's ``t.test(extra ~ group, data = sleep, paired = TRUE)`` prints mean difference -1.58,
    t = -4.0621, df = 9, 95 percent confidence interval -2.4598858 -0.7001142."""
    drug1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
    drug2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
    pair = paired_difference("drug1", "drug2", dict(enumerate(drug1)), dict(enumerate(drug2)))
    assert pair.n == 10 and pair.seeds == tuple(range(10))
    assert pair.mean_diff == pytest.approx(-1.58)
    assert pair.ci_low == pytest.approx(-2.4598858, abs=1e-6)
    assert pair.ci_high == pytest.approx(-0.7001142, abs=1e-6)
    assert pair.mean_diff / (pair.std_diff / math.sqrt(10)) == pytest.approx(-4.0621, abs=1e-4)
    assert pair.separated is True


def test_paired_difference_uses_shared_seeds_only_and_says_when_undefined():
    a = {0: 31.0, 1: 33.0, 2: 32.0, 7: 50.0}
    b = {0: 30.0, 1: 30.0, 2: 31.0, 9: 10.0}
    pair = paired_difference("a", "b", a, b)
    # diffs 1, 3, 1: mean 5/3, sd sqrt(4/3), half width 4.302653 * sqrt(4/3) / sqrt(3)
    half = 4.302653 * math.sqrt(4 / 3) / math.sqrt(3)
    assert pair.seeds == (0, 1, 2) and pair.mean_diff == pytest.approx(5 / 3)
    assert (pair.ci_low, pair.ci_high) == pytest.approx((5 / 3 - half, 5 / 3 + half), abs=1e-5)
    assert pair.separated is False  # 5/3 - 2.8685 < 0
    one = paired_difference("a", "b", {0: 2.0}, {0: 1.0})
    assert one.n == 1 and one.mean_diff == 1.0
    assert one.std_diff is one.ci_low is one.ci_high is one.separated is None
    assert paired_difference("a", "b", {0: 1.0}, {1: 1.0}) is None


def test_a_constant_difference_is_separated():
    pair = paired_difference("a", "b", {0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0})
    assert (pair.ci_low, pair.ci_high, pair.separated) == (1.0, 1.0, True)


@pytest.mark.parametrize("text,seed", [("3", 3), (" 12 ", 12), (0, 0), ("None", None),
                                       ("", None), (None, None), ("abc", None), (True, None)])
def test_parse_seed(text, seed):
    assert parse_seed(text) == seed


def test_compare_methods_pairs_by_seed_and_accounts_for_every_run():
    runs = [  # newest first, as the service reads them
        RunPoint("b0", "bckd", 0, 33.0), RunPoint("b1", "bckd", 1, 35.0),
        RunPoint("b2", "bckd", 2, 34.0),
        RunPoint("p0", "plain", 0, 30.0), RunPoint("p1", "plain", 1, 31.0),
        RunPoint("p2", "plain", 2, 32.0),
        RunPoint("p0-old", "plain", 0, 10.0),  # an older run of seed 0: the newer one counts
        RunPoint("k5", "kd", 5, 40.0),  # a seed no other method has
        RunPoint("bx", "bckd", None, 34.0),  # no seed: a replicate, never paired
        RunPoint("run", "bckd", 3, None, status="RUNNING"),
        RunPoint("nometric", "plain", 3, None),
        RunPoint("nomethod", None, 0, 20.0),
    ]
    cmp = compare_methods(runs)
    assert [m.method for m in cmp.methods] == ["kd", "bckd", "plain"]  # by mean
    kd, bckd, plain = cmp.methods
    assert (bckd.n, bckd.seeds, bckd.mean) == (4, (0, 1, 2), pytest.approx(34.0))
    assert bckd.std == pytest.approx(math.sqrt(2 / 3))  # 33, 35, 34, 34: squares 1+1+0+0 / 3
    assert (plain.n, plain.mean, plain.std) == (3, pytest.approx(31.0), pytest.approx(1.0))
    assert (kd.n, kd.std, kd.run_ids) == (1, None, ("k5",))

    (pair,) = cmp.pairs  # kd shares no seed with anyone
    assert (pair.a, pair.b, pair.n, pair.seeds) == ("bckd", "plain", 3, (0, 1, 2))
    # diffs 3, 4, 2: mean 3, sd 1; t(0.975, 2) = 4.302653 -> 3 ± 2.484138
    assert pair.mean_diff == pytest.approx(3.0)
    assert (pair.ci_low, pair.ci_high) == pytest.approx((0.515862, 5.484138), abs=1e-6)
    assert pair.separated is True

    uses = {u.run_id: u for u in cmp.runs}
    assert [u.run_id for u in cmp.runs] == [r.run_id for r in runs]
    assert {r for r, u in uses.items() if u.role == "paired"} == {"b0", "b1", "b2", "p0", "p1",
                                                                   "p2"}
    assert uses["k5"].role == uses["bx"].role == "unpaired"
    assert "no other method" in uses["k5"].note and "no seed" in uses["bx"].note
    assert uses["p0-old"].role == "excluded" and "p0 counts" in uses["p0-old"].note
    assert "RUNNING" in uses["run"].note and "metric" in uses["nometric"].note
    assert "method" in uses["nomethod"].note


def test_compare_methods_of_nothing_and_of_unfinished_runs():
    assert compare_methods([]).methods == []
    cmp = compare_methods([RunPoint("r", "bckd", 0, 30.0, status="FAILED")])
    assert cmp.methods == [] and cmp.pairs == [] and cmp.runs[0].role == "excluded"
