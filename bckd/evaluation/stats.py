"""Seed statistics of a method comparison: per method mean ± std, per pair a paired t-interval.

The runs of an experiment are grouped by method (the MLflow run tag ``method``) and by seed
(``randomness.seed`` of the config, logged as the param of the same name). Which runs
count, in this order:

1. Only FINISHED runs with a method and a (finite) metric value. Any other run is
   ``excluded``, with the reason.
2. One run per (method, seed): the first of the given order, so pass the runs newest first
   (the service's compare reads them ``start_time DESC``): the latest run of a seed counts, an
   older one of the same seed is ``excluded`` as a duplicate. A rerun replaces what it reruns;
   averaging the two would count one seed twice.
3. A run without a seed (``randomness.seed = None``: mmengine then draws a random one) is an
   independent replicate of its method: it counts in the method's mean and std, but it cannot be
   paired, so it is ``unpaired``. So is a run whose seed no other method has.
4. Every other counted run is ``paired``: some other method has a run of its seed.

For two methods ``a`` and ``b`` sharing ``n`` seeds, the differences ``d_i = a_i - b_i`` of the
shared seeds give the mean difference ``mean(d)`` and its two-sided Student-t interval
``mean(d) ± t(1 - alpha/2, n - 1) * sd(d) / sqrt(n)``. Pairing by seed removes what a seed does
to both methods alike (the same initial weights, data order and augmentations), which is why the
interval is over the differences and not over two independent means. The pair is ``separated``
only when the interval excludes 0; with fewer than 2 shared seeds ``sd(d)`` and the interval are
undefined (``None``), and so is the verdict.

Pure Python (numbers in, numbers out); the t quantile comes from ``scipy.stats`` (installed with
mmdet and mlflow), imported when first needed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Literal

__all__ = [
    "Comparison",
    "MethodSummary",
    "PairedDifference",
    "RunPoint",
    "RunUse",
    "compare_methods",
    "mean_std",
    "paired_difference",
    "parse_seed",
    "t_interval",
    "t_quantile",
]

Role = Literal["paired", "unpaired", "excluded"]
FINISHED = "FINISHED"


@dataclass(frozen=True)
class RunPoint:
    """One run as the statistics see it.

    ``value`` is the metric in the unit to report (the service passes COCO points, x100);
    ``None`` when the run has no such metric. ``seed`` is ``None`` when the run had no fixed seed.
    """

    run_id: str
    method: str | None
    seed: int | None
    value: float | None
    status: str = FINISHED


@dataclass(frozen=True)
class RunUse:
    """What the statistics did with a run: ``paired``/``unpaired`` runs count in their method's
    mean, only ``paired`` ones in a difference; ``excluded`` ones in nothing. ``note`` says why
    (``None`` for a paired run)."""

    run_id: str
    role: Role
    note: str | None = None


@dataclass(frozen=True)
class MethodSummary:
    """A method over its counted runs: ``n`` of them, their ``mean`` and sample standard
    deviation ``std`` (``n - 1`` in the denominator; ``None`` with one run), the seeds (a run
    without a seed adds to ``n`` but not to ``seeds``) and the run ids."""

    method: str
    n: int
    mean: float
    std: float | None
    seeds: tuple[int, ...]
    run_ids: tuple[str, ...]


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` over the ``n`` seeds both have (``seeds``).

    ``mean_diff``: the mean of the per-seed differences; ``std_diff``: their sample standard
    deviation; ``ci_low``/``ci_high``: the two-sided ``confidence`` Student-t interval of the mean
    difference (t quantile with ``n - 1`` degrees of freedom); ``separated``: the interval
    excludes 0. The last four are ``None`` when ``n < 2`` (no spread to estimate).
    """

    a: str
    b: str
    n: int
    seeds: tuple[int, ...]
    mean_diff: float
    std_diff: float | None
    ci_low: float | None
    ci_high: float | None
    separated: bool | None
    confidence: float = 0.95


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare_methods`: methods by mean (highest first), the pairs of
    methods that share at least one seed (``a`` before ``b`` in that order), and a
    :class:`RunUse` for every run given, in the given order."""

    methods: list[MethodSummary] = field(default_factory=list)
    pairs: list[PairedDifference] = field(default_factory=list)
    runs: list[RunUse] = field(default_factory=list)
    confidence: float = 0.95


# --- numbers -----------------------------------------------------------------------------------


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (``None`` for one value); raises on none."""
    if not values:
        raise ValueError("mean_std of no values")
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else None


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``scipy.stats.t.ppf``).

    ``t_quantile(0.975, 2) = 4.303``: the factor of a 95 % two-sided interval from 3 values.
    """
    if df < 1:
        raise ValueError(f"t_quantile needs df >= 1, got {df}")
    from scipy.stats import t  # lazy: scipy.stats takes a moment to import

    return float(t.ppf(p, df))


def t_interval(values: Sequence[float], confidence: float = 0.95,
               ) -> tuple[float, float | None, float | None]:
    """``(mean, low, high)``: the two-sided ``confidence`` Student-t interval of the mean of
    ``values`` (``mean ± t(1 - alpha/2, n - 1) * sd / sqrt(n)``); low and high are ``None``
    for fewer than 2 values."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean, sd = mean_std(values)
    if sd is None:
        return mean, None, None
    n = len(values)
    half = t_quantile(1 - (1 - confidence) / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_difference(a: str, b: str, a_by_seed: dict[int, float], b_by_seed: dict[int, float],
                      confidence: float = 0.95) -> PairedDifference | None:
    """``a - b`` over the seeds both have; ``None`` when they share none."""
    seeds = tuple(sorted(a_by_seed.keys() & b_by_seed.keys()))
    if not seeds:
        return None
    diffs = [a_by_seed[s] - b_by_seed[s] for s in seeds]
    mean, low, high = t_interval(diffs, confidence)
    std = mean_std(diffs)[1]
    # an interval that excludes 0 separates the two; an undefined one says nothing
    separated = None if low is None or high is None else (low > 0 or high < 0)
    return PairedDifference(a, b, len(seeds), seeds, mean, std, low, high, separated, confidence)


# --- which runs count ----------------------------------------------------------------------------


def parse_seed(text: object) -> int | None:
    """A seed from an MLflow param value: ``"3"`` -> 3; ``None``, ``"None"``, ``""`` or anything
    that is not an integer -> ``None`` (the run had no fixed seed)."""
    if text is None or isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text
    try:
        return int(str(text).strip())
    except ValueError:
        return None


def _exclusion(run: RunPoint) -> str | None:
    """Why ``run`` enters no statistic, or ``None`` when it may count."""
    if run.status != FINISHED:
        return f"status {run.status}: only FINISHED runs count"
    if not run.method:
        return "no method tag"
    if run.value is None or not math.isfinite(run.value):
        return "no value of the metric"
    return None


def _counted(runs: Iterable[RunPoint]) -> tuple[dict[str, list[RunPoint]], dict[str, RunUse]]:
    """The runs that count, by method (given order kept), and a use for each excluded one."""
    by_method: dict[str, list[RunPoint]] = {}
    kept: dict[tuple[str, int], RunPoint] = {}
    excluded: dict[str, RunUse] = {}
    for run in runs:
        why = _exclusion(run)
        if why is None and run.seed is not None:
            first = kept.get((run.method, run.seed))
            if first is not None:  # an older run of the same (method, seed): the newer counts
                why = f"duplicate of seed {run.seed}: the newer run {first.run_id} counts"
            else:
                kept[(run.method, run.seed)] = run
        if why is not None:
            excluded[run.run_id] = RunUse(run.run_id, "excluded", why)
        else:
            by_method.setdefault(run.method, []).append(run)
    return by_method, excluded


def _summary(method: str, runs: list[RunPoint]) -> MethodSummary:
    mean, std = mean_std([r.value for r in runs])
    seeds = tuple(sorted(r.seed for r in runs if r.seed is not None))
    return MethodSummary(method, len(runs), mean, std, seeds, tuple(r.run_id for r in runs))


def compare_methods(runs: Sequence[RunPoint], confidence: float = 0.95) -> Comparison:
    """Per method mean ± std over its counted runs, per pair of methods the paired difference
    over their shared seeds, and what became of each run; see the module docstring for the rules.

    ``runs`` newest first: of two runs with the same method and seed the first counts.
    """
    by_method, uses = _counted(runs)
    methods = sorted((_summary(m, rs) for m, rs in by_method.items()),
                     key=lambda s: (-s.mean, s.method))
    values = {m: {r.seed: r.value for r in rs if r.seed is not None}
              for m, rs in by_method.items()}
    pairs = [p for a, b in combinations([s.method for s in methods], 2)
             if (p := paired_difference(a, b, values[a], values[b], confidence)) is not None]
    paired_seeds = {(m, s) for p in pairs for m in (p.a, p.b) for s in p.seeds}
    for method, rs in by_method.items():
        for r in rs:
            if r.seed is None:
                uses[r.run_id] = RunUse(r.run_id, "unpaired", "no seed: counts in the method's "
                                        "mean, in no paired difference")
            elif (method, r.seed) in paired_seeds:
                uses[r.run_id] = RunUse(r.run_id, "paired")
            else:
                uses[r.run_id] = RunUse(r.run_id, "unpaired", f"seed {r.seed}: no other method "
                                        "has it; counts in the method's mean only")
    return Comparison(methods, pairs, [uses[r.run_id] for r in runs], confidence)
