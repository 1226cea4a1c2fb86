"""The results of ``reproduce.py``: per-run metrics, seed statistics, the notes, table and plots.

Which comparisons are reported is fixed here, before any run (docs/REPRODUCTION.md):

* per family and method, the final epoch's mAP as mean ± sample std over seeds;
* per family, every method against the student alone, and BCKD against every other method:
  the mean of the per-seed differences of mAP with its 95 % two-sided Student-t interval
  (``bckd.evaluation.stats``, as ``bckd jobs compare`` does), "separated" only when the interval
  excludes 0, "not separated" otherwise. Nothing else is tested, so nothing is chosen after the
  fact; the measured order of the means is printed, not tested.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common import write_json

from bckd.evaluation.stats import PairedDifference, RunPoint, compare_methods

METRICS = {"mAP": "coco/bbox_mAP", "AP50": "coco/bbox_mAP_50", "AP75": "coco/bbox_mAP_75",
           "APs": "coco/bbox_mAP_s"}
HEADERS = ["run", "seeds", *METRICS, "gap closed %", "MLflow run ids"]
# The protocol's aims (docs/REPRODUCTION.md), judged on the teachers and students alone:
MIN_GAP = 5.0  # mAP points a teacher should lead its student alone by (the paper's COCO: 4.8)
MIN_STUDENT = 5.0  # mAP a student alone should reach, so that distillation acts on a learner


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def collect(per_run: list[dict[str, Any]], jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per family and method the seed statistics of ``per_run`` (one dict per planned run with
    ``family, method, seed, state, run_id, minutes`` and the metrics of :data:`METRICS` in COCO
    points); ``jobs`` (the service's job rows) give the span of the whole table."""
    cells: dict[str, dict] = {}
    for family in dict.fromkeys(x["family"] for x in per_run):
        teacher = next((x for x in per_run if x["family"] == family
                        and x["method"] == "teacher"), None)
        methods = {}
        for method in dict.fromkeys(x["method"] for x in per_run
                                    if x["family"] == family and x["method"] != "teacher"):
            done = [x for x in per_run if x["family"] == family and x["method"] == method
                    and x["state"] == "done"]
            cell = {"seeds": [x["seed"] for x in done], "run_ids": [x["run_id"] for x in done]}
            for k in METRICS:  # a run without COCO metrics (no detection at all) is left out
                values = [x[k] for x in done if not math.isnan(x[k])]
                cell[f"{k}_values"] = values
                cell[f"{k}_mean"], cell[f"{k}_std"] = _mean_std(values)
            methods[method] = cell
        t_map = teacher["mAP"] if teacher and teacher["state"] == "done" else math.nan
        s_map = methods.get("student", {}).get("mAP_mean", math.nan)
        gap = t_map - s_map
        for cell in methods.values():  # a teacher not above the student leaves no gap to close
            cell["gap_closed"] = (cell["mAP_mean"] - s_map) / gap if gap > 0 else math.nan
        cells[family] = {"teacher": teacher, "teacher_mAP": t_map, "student_mAP": s_map,
                         "teacher_minus_student": t_map - s_map, "methods": methods,
                         "pairs": paired_mAP(per_run, family)}
    starts = [j["started_at"] for j in jobs if j["started_at"]]
    ends = [j["ended_at"] for j in jobs if j["ended_at"]]
    return {"runs": per_run, "families": cells,
            "job_hours": sum(x["minutes"] for x in per_run) / 60,
            "first_started": min(starts, default=None), "last_ended": max(ends, default=None)}


def paired_mAP(per_run: list[dict], family: str) -> list[dict]:
    """The students of ``family`` paired by seed: every two methods' mean mAP difference over
    their shared seeds with its 95 % interval. Only done runs with a mAP count; the teacher (one
    seed) is not compared."""
    points = [RunPoint(run_id=x["name"], method=x["method"], seed=x["seed"],
                       value=None if math.isnan(x["mAP"]) else x["mAP"],
                       status="FINISHED" if x["state"] == "done" else x["state"])
              for x in per_run if x["family"] == family and x["method"] != "teacher"]
    return [asdict(p) for p in compare_methods(points).pairs]


def pair(pairs: list[dict], a: str, b: str) -> PairedDifference | None:
    """``a - b`` from the pairs of :func:`paired_mAP`, whichever way round it was stored."""
    for p in pairs:
        if (p["a"], p["b"]) == (a, b):
            return PairedDifference(**{**p, "seeds": tuple(p["seeds"])})
        if (p["a"], p["b"]) == (b, a):  # the other way round: negate, swap the bounds
            return PairedDifference(
                a, b, p["n"], tuple(p["seeds"]), -p["mean_diff"], p["std_diff"],
                None if p["ci_high"] is None else -p["ci_high"],
                None if p["ci_low"] is None else -p["ci_low"], p["separated"], p["confidence"])
    return None


def registered_pairs(methods: list[str]) -> list[tuple[str, str]]:
    """The pre-registered comparisons among ``methods``: each against the student alone, then
    BCKD against each other distillation method."""
    out = [(m, "student") for m in methods if m != "student" and "student" in methods]
    if "bckd" in methods:
        out += [("bckd", m) for m in methods if m not in ("bckd", "student")]
    return out


def pair_note(family: str, a: str, b: str, p: PairedDifference | None) -> str:
    """One line on ``a - b``: the paired mean difference, its interval and the verdict."""
    if p is None:
        return f"{family}: {a} and {b} share no seed: not compared"
    head = (f"{family}: {a} - {b} = {p.mean_diff:+.2f} mAP, paired over "
            f"{p.n} seed{'s' if p.n != 1 else ''}")
    if p.separated is None:
        return f"{head}: with one shared seed the interval is undefined, no verdict"
    verdict = "separated" if p.separated else "not separated"
    return (f"{head}, {100 * p.confidence:g} % interval [{p.ci_low:+.2f}, "
            f"{p.ci_high:+.2f}]: {verdict}")


def notes(cells: dict) -> list[str]:
    """What the numbers say: the setting's checks, the measured order, the registered pairs."""
    out = []
    for family, fam in cells.items():
        gap, s_map = fam["teacher_minus_student"], fam["student_mAP"]
        if gap <= 0:
            out.append(f"{family}: the teacher ({fam['teacher_mAP']:.1f} mAP) is not above the "
                       f"student alone ({s_map:.1f}): there is no gap to close, so this family "
                       "says nothing about distillation")
        elif not math.isnan(gap):
            out.append(f"{family}: teacher {fam['teacher_mAP']:.1f} mAP, student alone "
                       f"{s_map:.1f}: gap {gap:.1f} points"
                       + ("" if gap >= MIN_GAP else f" (less than the {MIN_GAP:g} aimed for)")
                       + ("" if s_map >= MIN_STUDENT else
                          f"; the student alone is below {MIN_STUDENT:g} mAP"))
        methods = {m: c for m, c in fam["methods"].items() if c["mAP_values"]}
        order = sorted(methods, key=lambda m: -methods[m]["mAP_mean"])
        if order:
            out.append(f"{family}: measured order " + " > ".join(
                f"{m} {methods[m]['mAP_mean']:.1f}" for m in order))
        # a results JSON from before pairing has no "pairs": --restat recomputes them
        pairs = fam.get("pairs", [])
        for a, b in registered_pairs(list(methods)):
            out.append(pair_note(family, a, b, pair(pairs, a, b)))
    return out


def table_rows(cells: dict) -> list[list]:
    rows = []
    for family, fam in cells.items():
        t = fam["teacher"]
        if t is not None:
            rows.append([f"{family} teacher", "1", *(t[k] for k in METRICS), math.nan,
                         t["run_id"] or "-"])
        for method, c in fam["methods"].items():
            rows.append([f"{family} {method}", str(len(c["seeds"])),
                         *(_pm(c[f"{k}_mean"], c[f"{k}_std"]) for k in METRICS),
                         100 * c["gap_closed"] if not math.isnan(c["gap_closed"]) else math.nan,
                         " ".join((i or "-")[:8] for i in c["run_ids"]) or "-"])
    return rows


def _pm(mean: float, std: float) -> str:
    return "-" if math.isnan(mean) else f"{mean:.1f} ± {std:.1f}"


def markdown(rows: list[list], header: list[str]) -> str:
    def cell(v):
        return "-" if isinstance(v, float) and math.isnan(v) else (
            f"{v:.1f}" if isinstance(v, float) else str(v))

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def plot(cells: dict, path: Path, title: str) -> Path:
    """Two rows per family: mAP per method (mean ± std, single seeds grey, the teacher dashed),
    and each method's paired difference against the student alone with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = [f for f in cells if cells[f]["methods"]]
    widths = [max(2, len(cells[f]["methods"])) for f in families] or [1]
    fig, axes = plt.subplots(2, max(1, len(families)), figsize=(2 + 1.1 * sum(widths), 6.4),
                             sharey="row", gridspec_kw={"width_ratios": widths}, squeeze=False)
    for col, family in enumerate(families):
        fam, top, bottom = cells[family], axes[0][col], axes[1][col]
        methods = list(fam["methods"])
        for i, m in enumerate(methods):
            c = fam["methods"][m]
            top.errorbar([i], [c["mAP_mean"]], yerr=[c["mAP_std"]], fmt="o", capsize=4,
                         color="C1" if m == "bckd" else "C0")
            top.scatter([i] * len(c["mAP_values"]), c["mAP_values"], s=10, color="gray",
                        zorder=3)
            p = pair(fam.get("pairs", []), m, "student") if m != "student" else None
            if p is not None and p.ci_low is not None:
                bottom.errorbar([i], [p.mean_diff], yerr=[[p.mean_diff - p.ci_low],
                                                          [p.ci_high - p.mean_diff]],
                                fmt="o", capsize=4, color="C1" if m == "bckd" else "C0")
        if not math.isnan(fam["teacher_mAP"]):
            top.axhline(fam["teacher_mAP"], ls="--", color="k", lw=0.8, label="teacher")
            top.legend(loc="lower right", fontsize=7)
        bottom.axhline(0, color="k", lw=0.8)
        for ax in (top, bottom):
            ax.set_xticks(range(len(methods)), methods, rotation=30)
            ax.set_xlim(-0.6, len(methods) - 0.4)
            ax.grid(axis="y", alpha=0.3)
        top.set_title(family)
    axes[0][0].set_ylabel("COCO mAP, final epoch")
    axes[1][0].set_ylabel("method - student alone\n(mAP, paired, 95 % interval)")
    fig.suptitle(f"{title}\nmean ± std over seeds; grey dots: single seeds", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def log_summary(mlflow_uri: str, experiment: str, name: str, files: list[Path],
                cells: dict) -> str:
    """The table, JSON and plot as artifacts of one run ``name`` in ``experiment`` (reused).

    The summary is no job, so it is the one thing written to MLflow outside the service: the
    service records jobs' runs, and has no route for an analysis run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    found = client.search_runs([exp_id], f"attributes.run_name = '{name}'", max_results=1)
    run_id = found[0].info.run_id if found else client.create_run(
        exp_id, run_name=name, tags={"bckd.summary": "true"}).info.run_id
    for f in files:
        client.log_artifact(run_id, str(f))
    step = int(time.time())
    for family, fam in cells.items():
        for method, c in fam["methods"].items():
            if not math.isnan(c["mAP_mean"]):
                client.log_metric(run_id, f"{family}.{method}.mAP_mean", c["mAP_mean"], step=step)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def restat(path: Path) -> int:
    """Recompute ``pairs`` and ``notes`` of a results JSON from the per-run mAPs it records, and
    rewrite it (and the notes of the .md beside it). Everything measured is left as it was."""
    report = json.loads(path.read_text())
    for family, fam in report["families"].items():
        fam["pairs"] = paired_mAP(report["runs"], family)
    old, new = report["notes"], notes(report["families"])
    report["notes"] = new
    write_json(path, report)
    md = path.with_suffix(".md")
    if md.is_file():
        text = md.read_text()
        block = "".join(f"- {line}\n" for line in old)
        if block in text:
            md.write_text(text.replace(block, "".join(f"- {line}\n" for line in new)))
            print(f"wrote {md}")
        else:
            print(f"{md}: its notes differ from {path.name}; left alone", file=sys.stderr)
    for line in new:
        print("  " + line)
    return 0
