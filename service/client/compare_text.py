"""The text of ``bckd jobs compare`` (and the demo's table): per method mean ± std, paired
differences by seed, the runs; from ``GET /v1/experiments/{name}/compare``'s JSON."""

from __future__ import annotations

__all__ = ["COMPARE_COLUMNS", "compare_report", "compare_table", "method_table", "pair_table",
           "run_notes"]

# Columns of the comparison table: (metric key, header); COCO AP in points, as papers print it.
COMPARE_COLUMNS = (
    ("coco/bbox_mAP", "mAP"), ("coco/bbox_mAP_50", "AP50"), ("coco/bbox_mAP_75", "AP75"),
    ("coco/bbox_mAP_s", "APs"), ("coco/bbox_mAP_m", "APm"), ("coco/bbox_mAP_l", "APl"),
    ("teacher/coco/bbox_mAP", "teacher"),
)


def compare_table(cmp: dict) -> str:
    """The runs of an experiment as a text table: method, seed, status, COCO AP (x100), what the
    statistics did with the run (paired, unpaired, excluded: see :func:`run_notes`), MLflow link."""
    def cell(metrics: dict, key: str) -> str:
        value = metrics.get(key)
        return f"{'-':>7}" if value is None or value < 0 else f"{100 * value:7.1f}"

    head = (f"{'RUN':24} {'METHOD':9} {'SEED':>5} {'STATUS':9}"
            + "".join(f"{h:>8}" for _, h in COMPARE_COLUMNS) + f"  {'USE':9} LINK")
    rows = [head]
    for r in cmp["runs"]:
        cells = "".join(" " + cell(r["metrics"], key) for key, _ in COMPARE_COLUMNS)
        name, method = (r["run_name"] or r["run_id"])[:24], r["params"].get("method", "")[:9]
        seed = "-" if r.get("seed") is None else str(r["seed"])
        rows.append(f"{name:24} {method:9} {seed:>5} {r['status'][:9]:9}{cells}  "
                    f"{r.get('use', ''):9} {r['link']}")
    return "\n".join(rows)


def _width(names) -> int:
    """A column as wide as its longest method name (at least 12): groups such as ``plain (GFL
    ResNet-18 128)`` and ``plain (GFL ResNet-18 16)`` differ only at their end."""
    return max([12, *(len(n) for n in names)])


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def method_table(cmp: dict) -> str:
    """Per method: the runs counted, mean ± sample std of the metric (COCO points), the seeds."""
    lines = [f"Per method: {cmp['metric']} in {cmp['unit']}, mean ± sample std over N runs",
             "(the latest FINISHED run of each seed, and each FINISHED run without a seed)"]
    if not cmp["methods"]:
        return "\n".join([*lines, f"  no FINISHED run with {cmp['metric']}"])
    w = _width(m["method"] for m in cmp["methods"])
    lines.append(f"{'METHOD':{w}} {'N':>3} {'MEAN':>8} {'STD':>8}  SEEDS")
    for m in cmp["methods"]:
        std = "-" if m["std"] is None else f"{m['std']:.2f}"
        seeds = ",".join(map(str, m["seeds"])) or "-"
        unseeded = m["n"] - len(m["seeds"])  # runs without a fixed seed count, unpaired
        seeds += f" (+{unseeded} without a seed)" if unseeded else ""
        lines.append(f"{m['method']:{w}} {m['n']:>3} {m['mean']:8.2f} {std:>8}  {seeds}")
    return "\n".join(lines)


def pair_table(cmp: dict) -> str:
    """Per pair of methods sharing seeds: the mean of the per-seed differences A - B (COCO
    points) and its Student-t interval; separated only when the interval excludes 0."""
    pct = f"{100 * cmp['confidence']:g}%"
    lines = [f"Paired differences A - B in {cmp['unit']} over the N seeds both have:",
             f"the mean difference and its {pct} Student-t interval (N - 1 degrees of freedom);",
             "separated only when the interval excludes 0"]
    # a pair with one shared seed has no interval: named below the table, not a row of dashes
    defined = [p for p in cmp["pairs"] if p["separated"] is not None]
    short = [f"{p['a']} - {p['b']}" for p in cmp["pairs"] if p["separated"] is None]
    if not defined:
        lines.append("  no two methods share 2 seeds")
    else:
        w = _width(name for p in defined for name in (p["a"], p["b"]))
        lines.append(f"{'A':{w}} {'B':{w}} {'N':>3} {'DIFF':>8}  {pct + ' CI':18}  VERDICT")
        for p in defined:
            ci = f"[{_signed(p['ci_low'])}, {_signed(p['ci_high'])}]"
            verdict = "separated" if p["separated"] else "not separated"
            lines.append(f"{p['a']:{w}} {p['b']:{w}} {p['n']:>3} {_signed(p['mean_diff']):>8}"
                         f"  {ci:18}  {verdict}")
    if short:
        lines.append(f"(one shared seed, no interval: {'; '.join(short)})")
    return "\n".join(lines)


def run_notes(cmp: dict) -> str:
    """One line per run the paired differences leave out (unpaired or excluded), with why."""
    out = [f"  {(r['run_name'] or r['run_id'])[:24]:24} {r['run_id'][:8]}  {r['use']}: {r['note']}"
           for r in cmp["runs"] if r.get("use") in ("unpaired", "excluded")]
    return "\n".join(["Runs not in any paired difference:", *out]) if out else ""


def compare_report(cmp: dict) -> str:
    """What ``bckd jobs compare`` prints: the method and pair statistics, then the runs."""
    link = f"; in MLflow: {cmp['link']}" if cmp.get("link") else ""
    parts = [method_table(cmp), pair_table(cmp),
             f"Runs of {cmp['experiment']} (newest first; AP in COCO points{link})\n"
             + compare_table(cmp)]
    notes = run_notes(cmp)
    return "\n\n".join([*parts, notes] if notes else parts)
