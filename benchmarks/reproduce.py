"""The paper's comparison at the scale of this machine, trained as jobs through our REST service.

    python benchmarks/reproduce.py --plan               # the runs and an estimate; runs nothing
    python benchmarks/reproduce.py                      # the whole table: 1.5 h on 2 cores
    python benchmarks/reproduce.py --max-minutes 50     # submit for 50 min, then finish what runs
    python benchmarks/reproduce.py --url http://127.0.0.1:8000 --token-file .bckd/admin_token
    python benchmarks/reproduce.py --tiny               # end to end in minutes (the smoke test)

What runs (all on the synthetic data set, ``bckd.data.synth``, written once to ``--data``):

* per head family (GFL, ATSS, RetinaNet, FCOS, RTMDet) one teacher, ``synth/{family}_teacher``,
  seed 0, ``--teacher-epochs`` epochs;
* GFL students, one schedule (``--student-epochs``), each of ``--seeds``: student alone
  (``synth/gfl_student``), KD, LD, BCDL only, ILDL only, BCKD (``synth/{kd,ld,bcdl,ildl,
  bckd}_gfl``), distilled from the GFL teacher's final checkpoint (``runs:/<teacher run>/...``);
* ATSS, RetinaNet, FCOS, RTMDet: student alone and BCKD, each seed.

Each run is one job submitted to the service (``POST /v1/jobs``), named
``<prefix>-<config>-s<seed>`` in the MLflow experiment ``--experiment``. The step-decay
milestone follows the epochs (``param_scheduler.1``: at 3/4 of them), the seed is
``randomness.seed``. The script is resumable: a run whose MLflow run FINISHED (or whose job
SUCCEEDED) is skipped; a job that is running is waited for; one that ended FAILED, STOPPED or
LOST is submitted again under the same name, so the job resumes from its last checkpoint
(its run directory in the service), at most ``--max-attempts`` times. ``--parallel`` jobs
run at once (1 CPU each). ``--max-minutes`` stops submitting after that long and waits for the
jobs in flight.

Results: the final epoch's COCO mAP, AP50, AP75, APs of each run; per method the mean and
sample standard deviation over seeds, and the share of the teacher-student gap closed,
``(mAP(method) - mAP(student)) / (mAP(teacher) - mAP(student))`` on the seed means. Written to
``<results>/reproduction.{json,md,png}`` (``reproduction_tiny.*`` with ``--tiny``) and logged to
the same MLflow experiment as a run named ``<prefix>-summary``. Reported as measured: the order
of the methods is whatever the runs give. Two neighbours of that order are compared by seed
(``bckd.evaluation.stats``, as ``bckd jobs compare`` does): the mean of the per-seed differences
of mAP with its 95 % two-sided Student-t interval (n - 1 degrees of freedom over the n seeds
both have); they are separated only when the interval excludes 0, and with a single shared seed
the interval is undefined and said so. ``--restat FILE`` recomputes these from the runs recorded
in a results JSON, without training.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from common import RESULTS, finish_machine, machine_info, print_table, write_json

from bckd.evaluation.stats import PairedDifference, RunPoint, compare_methods

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("gfl", "atss", "retinanet", "fcos", "rtmdet")
GFL_METHODS = {"student": "gfl_student", "kd": "kd_gfl", "ld": "ld_gfl", "bcdl": "bcdl_gfl",
               "ildl": "ildl_gfl", "bckd": "bckd_gfl"}
METRICS = {"mAP": "coco/bbox_mAP", "AP50": "coco/bbox_mAP_50", "AP75": "coco/bbox_mAP_75",
           "APs": "coco/bbox_mAP_s"}
ACTIVE = ("PENDING", "SUBMITTED", "RUNNING")  # job states of the API that are not over
# Seconds per training image of one job on 1 CPU at 128 px, and per evaluated image; start-up
# per job. Fitted to the job times of the full run of 2026-11-25 (33 jobs, 2 at a time on this
# 2-core machine: results/reproduction.json), which they reproduce to within a few per cent.
TRAIN_S_PER_IMAGE = {"student": 0.022, "distill": 0.053, "teacher": 0.105}
FAMILY_COST = {"gfl": 1.0, "atss": 1.0, "retinanet": 1.05, "fcos": 1.05, "rtmdet": 1.0}
EVAL_S_PER_IMAGE = 0.03
STARTUP_S = 30.0


@dataclass(frozen=True)
class Schedule:
    num_train: int = 600  # images of --size px: the whole table took 1.5 h on 2 cores
    num_val: int = 150
    size: int = 128
    teacher_epochs: int = 12
    student_epochs: int = 6
    seeds: tuple[int, ...] = (0, 1)
    families: tuple[str, ...] = FAMILIES
    gfl_methods: tuple[str, ...] = tuple(GFL_METHODS)


TINY = Schedule(num_train=16, num_val=8, size=128, teacher_epochs=1, student_epochs=1,
                seeds=(0,), families=("gfl",), gfl_methods=("student", "bckd"))


@dataclass(frozen=True)
class Run:
    family: str
    method: str  # teacher, student, kd, ld, bcdl, ildl, bckd
    config: str  # a config name of GET /v1/configs, e.g. synth/bckd_gfl
    seed: int
    epochs: int
    prefix: str

    @property
    def name(self) -> str:
        return f"{self.prefix}-{self.config.rsplit('/', 1)[-1]}-s{self.seed}"

    @property
    def kind(self) -> str:
        return "train" if self.method in ("teacher", "student") else "distill"

    @property
    def teacher_key(self) -> str | None:
        return None if self.kind == "train" else f"{self.prefix}-{self.family}_teacher-s0"


def plan(s: Schedule, prefix: str) -> list[Run]:
    """Teachers first, then the students, seed-major (a partial run still covers every cell)."""
    runs = [Run(f, "teacher", f"synth/{f}_teacher", 0, s.teacher_epochs, prefix)
            for f in s.families]
    for seed in s.seeds:
        for f in s.families:
            if f == "gfl":
                methods = {m: GFL_METHODS[m] for m in s.gfl_methods}
            else:
                methods = {"student": f"{f}_student", "bckd": f"bckd_{f}"}
            runs += [Run(f, m, f"synth/{c}", seed, s.student_epochs, prefix)
                     for m, c in methods.items()]
    return runs


def estimate_s(run: Run, s: Schedule) -> float:
    kind = run.method if run.method in ("teacher", "student") else "distill"
    scale = (s.size / 128) ** 2 * FAMILY_COST[run.family]
    train = run.epochs * s.num_train * TRAIN_S_PER_IMAGE[kind] * scale
    evals = (run.epochs + (run.kind == "distill")) * s.num_val * EVAL_S_PER_IMAGE * scale
    return STARTUP_S + train + evals


def overrides(run: Run, s: Schedule) -> dict:
    return {"train_cfg.max_epochs": run.epochs, "randomness.seed": run.seed,
            "param_scheduler.1.end": run.epochs,
            "param_scheduler.1.milestones": [max(1, int(run.epochs * 0.75))]}


# --- the service side ----------------------------------------------------------------------


class Runs:
    """What the service knows about each run, by name: its jobs (API) and MLflow run."""

    def __init__(self, client, experiment: str) -> None:
        self.client = client
        self.experiment = experiment
        self.jobs: dict[str, list[dict]] = {}
        self.mlflow: dict[str, dict] = {}

    def refresh(self) -> None:
        jobs, offset = [], 0
        while True:
            page = self.client.list(limit=500, offset=offset)
            jobs += page["data"]
            offset += len(page["data"])
            if not page["data"] or offset >= page["count"]:
                break
        self.jobs = {}
        for job in sorted(jobs, key=lambda j: j["created_at"]):
            if job["experiment"] == self.experiment:
                self.jobs.setdefault(job["name"], []).append(job)
        try:
            rows = self.client.compare(self.experiment)["runs"]
        except Exception:  # noqa: BLE001 - no such experiment yet (404)
            rows = []
        self.mlflow = {}
        for row in sorted(rows, key=lambda r: r["status"] == "FINISHED"):  # FINISHED wins
            self.mlflow[row["run_name"]] = row

    def state(self, name: str) -> str:
        """done | running | failed (the latest attempt ended badly) | new."""
        row = self.mlflow.get(name)
        jobs = self.jobs.get(name, [])
        if jobs and jobs[-1]["status"] in ACTIVE:
            return "running"
        if row is not None and row["status"] == "FINISHED":
            return "done"
        if jobs and jobs[-1]["status"] == "SUCCEEDED":
            return "done"
        return "failed" if jobs else "new"

    def attempts(self, name: str) -> int:
        return len(self.jobs.get(name, []))

    def minutes(self, name: str) -> float:
        """Job time of all the run's attempts (start to end as the service saw them), minutes."""
        spans = [datetime.fromisoformat(j["ended_at"]) - datetime.fromisoformat(j["started_at"])
                 for j in self.jobs.get(name, []) if j["started_at"] and j["ended_at"]]
        return sum(span.total_seconds() for span in spans) / 60

    def run_id(self, name: str) -> str | None:
        row = self.mlflow.get(name)
        if row is not None:
            return row["run_id"]
        jobs = self.jobs.get(name, [])
        return jobs[-1]["mlflow_run_id"] if jobs else None


def submit(client, run: Run, s: Schedule, data: Path, runs: Runs, experiment: str,
           cpus: float) -> dict:
    body = {"kind": run.kind, "config": run.config, "experiment": experiment, "name": run.name,
            "data_root": str(data), "overrides": overrides(run, s),
            "resources": {"num_workers": 1, "cpus_per_worker": cpus}}
    if run.kind == "distill":
        teacher_run = runs.run_id(run.teacher_key)
        body["teacher_ckpt"] = f"runs:/{teacher_run}/checkpoints/final.pth"
    attempt = runs.attempts(run.name) + 1
    # one key per attempt: a retried POST of this attempt returns the same job
    return client.submit(body, idempotency_key=f"{experiment}:{run.name}:{attempt}")


def drive(client, runs_plan: list[Run], s: Schedule, data: Path, args) -> Runs:
    """Submit what is missing, at most ``--parallel`` at a time, until all ended or the budget
    is spent; return the final view of the runs."""
    runs = Runs(client, args.experiment)
    deadline = time.monotonic() + 60 * args.max_minutes if args.max_minutes else math.inf
    gave_up: set[str] = set()
    last_line = ""
    while True:
        runs.refresh()
        states = {r.name: runs.state(r.name) for r in runs_plan}
        running = [n for n, st in states.items() if st == "running"]
        budget_left = time.monotonic() < deadline
        for run in runs_plan:
            if len(running) >= args.parallel or not budget_left:
                break
            st = states[run.name]
            if st == "done" or st == "running" or run.name in gave_up:
                continue
            if st == "failed" and runs.attempts(run.name) >= args.max_attempts:
                print(f"  {run.name}: {runs.attempts(run.name)} attempts failed; giving up",
                      flush=True)
                gave_up.add(run.name)
                continue
            if run.teacher_key is not None:
                tstate = states.get(run.teacher_key, runs.state(run.teacher_key))
                if run.teacher_key in gave_up:
                    gave_up.add(run.name)
                    print(f"  {run.name}: its teacher failed; skipped", flush=True)
                    continue
                if tstate != "done":
                    continue  # waits for its teacher
            job = submit(client, run, s, data, runs, args.experiment, args.cpus_per_job)
            print(f"  submitted {run.name} (attempt {runs.attempts(run.name) + 1}): job "
                  f"{job['id']}", flush=True)
            running.append(run.name)
            states[run.name] = "running"
        done = sum(st == "done" for st in states.values())
        line = f"{done}/{len(runs_plan)} done, running: " + (", ".join(running) or "-")
        if line != last_line:  # print changes only
            print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
            last_line = line
        waiting = [n for n, st in states.items() if st != "done" and n not in gave_up]
        if not running and (not budget_left or not waiting):
            if waiting:
                print(f"budget of {args.max_minutes} min spent: {len(waiting)} runs left for "
                      "the next invocation", flush=True)
            return runs
        if not running and waiting and all(
                runs_plan_by(runs_plan, n).teacher_key in gave_up for n in waiting):
            return runs
        time.sleep(args.poll)


def runs_plan_by(runs_plan: list[Run], name: str) -> Run:
    return next(r for r in runs_plan if r.name == name)


# --- results -------------------------------------------------------------------------------


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def collect(runs_plan: list[Run], runs: Runs) -> dict:
    """Per run its metrics (x100, COCO points); per family and method the seed statistics."""
    per_run = []
    for r in runs_plan:
        row = runs.mlflow.get(r.name) or {}
        metrics = row.get("metrics", {})
        per_run.append(dict(name=r.name, family=r.family, method=r.method, seed=r.seed,
                            config=r.config, state=runs.state(r.name),
                            run_id=runs.run_id(r.name), minutes=runs.minutes(r.name),
                            **{k: 100 * metrics[m] if m in metrics else math.nan
                               for k, m in METRICS.items()}))
    cells: dict[str, dict] = {}
    for family in dict.fromkeys(r.family for r in runs_plan):
        teacher = next((x for x in per_run if x["family"] == family
                        and x["method"] == "teacher"), None)
        methods = {}
        for method in dict.fromkeys(r.method for r in runs_plan
                                    if r.family == family and r.method != "teacher"):
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
    jobs = [j for r in runs_plan for j in runs.jobs.get(r.name, [])]
    starts = [j["started_at"] for j in jobs if j["started_at"]]
    ends = [j["ended_at"] for j in jobs if j["ended_at"]]
    return {"runs": per_run, "families": cells,
            "job_hours": sum(x["minutes"] for x in per_run) / 60,
            "first_started": min(starts, default=None), "last_ended": max(ends, default=None)}


def paired_mAP(per_run: list[dict], family: str) -> list[dict]:
    """The students of ``family`` paired by seed (``bckd.evaluation.stats``): per two methods
    the mean mAP difference over their shared seeds with its 95 % Student-t interval. Only done
    runs with a mAP count; the teacher (one seed) is not compared."""
    points = [RunPoint(run_id=x["name"], method=x["method"], seed=x["seed"],
                       value=None if math.isnan(x["mAP"]) else x["mAP"],
                       status="FINISHED" if x["state"] == "done" else x["state"])
              for x in per_run if x["family"] == family and x["method"] != "teacher"]
    return [asdict(p) for p in compare_methods(points).pairs]


def _pair(pairs: list[dict], a: str, b: str) -> PairedDifference | None:
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


def pair_note(family: str, a: str, b: str, pair: PairedDifference | None) -> str:
    """One line on ``a - b``: the paired mean difference, its interval and the verdict."""
    if pair is None:
        return f"{family}: {a} and {b} share no seed: not compared"
    head = (f"{family}: {a} - {b} = {pair.mean_diff:+.2f} mAP, paired over "
            f"{pair.n} seed{'s' if pair.n != 1 else ''}")
    if pair.separated is None:
        return f"{head}: with one shared seed the interval is undefined, no verdict"
    verdict = "separated" if pair.separated else "not separated"
    return (f"{head}, {100 * pair.confidence:g} % interval [{pair.ci_low:+.2f}, "
            f"{pair.ci_high:+.2f}]: {verdict}")


def notes(cells: dict) -> list[str]:
    """What the numbers say, against the paper's order (BCKD > each single term > student)."""
    out = []
    for family, fam in cells.items():
        gap = fam["teacher_minus_student"]
        if gap <= 0:
            out.append(f"{family}: the teacher ({fam['teacher_mAP']:.1f} mAP) is not above the "
                       f"student alone ({fam['student_mAP']:.1f}): there is no gap to close, so "
                       "this family says nothing about distillation")
        elif not math.isnan(gap):
            out.append(f"{family}: teacher {fam['teacher_mAP']:.1f} mAP, student alone "
                       f"{fam['student_mAP']:.1f}: gap {gap:.1f} points"
                       + ("" if gap >= 10 else " (less than the 10 points aimed for)"))
        methods = {m: c for m, c in fam["methods"].items() if c["mAP_values"]}
        order = sorted(methods, key=lambda m: -methods[m]["mAP_mean"])
        if order:
            out.append(f"{family}: measured order " + " > ".join(
                f"{m} {methods[m]['mAP_mean']:.1f}" for m in order))
        # neighbours in the measured order, paired by seed: separated only when the 95 %
        # interval of the mean difference excludes 0 (a results JSON from before pairing has no
        # "pairs": it is recomputed from its runs by --restat)
        pairs = fam.get("pairs", [])
        for a, b in zip(order, order[1:], strict=False):
            out.append(pair_note(family, a, b, _pair(pairs, a, b)))
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


HEADERS = ["run", "seeds", *METRICS, "gap closed %", "MLflow run ids"]


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = [f for f in cells if cells[f]["methods"]]
    widths = [max(2, len(cells[f]["methods"])) for f in families] or [1]
    fig, axes = plt.subplots(1, max(1, len(families)), figsize=(2 + 1.1 * sum(widths), 3.6),
                             sharey=True, gridspec_kw={"width_ratios": widths}, squeeze=False)
    for ax, family in zip(axes[0], families, strict=False):
        fam = cells[family]
        methods = list(fam["methods"])
        for i, m in enumerate(methods):
            c = fam["methods"][m]
            ax.errorbar([i], [c["mAP_mean"]], yerr=[c["mAP_std"]], fmt="o", capsize=4,
                        color="C1" if m == "bckd" else "C0")
            ax.scatter([i] * len(c["mAP_values"]), c["mAP_values"], s=10, color="gray",
                       zorder=3)
        if not math.isnan(fam["teacher_mAP"]):
            ax.axhline(fam["teacher_mAP"], ls="--", color="k", lw=0.8, label="teacher")
            ax.legend(loc="lower right", fontsize=7)
        ax.set_xticks(range(len(methods)), methods, rotation=30)
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.set_title(family)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("COCO mAP, final epoch")
    fig.suptitle(f"{title}\nmean ± std over seeds; grey dots: single seeds", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def log_summary(mlflow_uri: str, experiment: str, name: str, files: list[Path],
                cells: dict) -> str:
    """The table, JSON and plot as artifacts of one run ``name`` in ``experiment`` (reused)."""
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


# --- main ----------------------------------------------------------------------------------


def ensure_data(data: Path, s: Schedule) -> None:
    marker = data / "dataset.json"
    if marker.is_file():
        cfg = json.loads(marker.read_text())["config"]
        want = {"num_train": s.num_train, "num_val": s.num_val, "image_size": s.size}
        if all(cfg.get(k) == v for k, v in want.items()):
            return
        raise SystemExit(f"{data} holds another data set ({ {k: cfg.get(k) for k in want} }); "
                         f"use --data for {want}")
    from bckd.data.synth import SynthConfig, generate

    print(f"writing the synthetic data set to {data} ...", flush=True)
    generate(SynthConfig(out=data, num_train=s.num_train, num_val=s.num_val, image_size=s.size),
             progress=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", action="store_true", help="print the runs and an estimate, exit")
    p.add_argument("--tiny", action="store_true",
                   help="2 methods (GFL student, BCKD), 1 seed, 16 images, 1 epoch")
    p.add_argument("--url", default=None, help="a running API; default: start the stack")
    p.add_argument("--token-file", type=Path, default=ROOT / ".bckd/admin_token")
    p.add_argument("--mlflow-uri", default=None,
                   help="with --url: the tracking server (default: from the jobs' links)")
    p.add_argument("--data-dir", type=Path, default=ROOT / ".bckd/repro",
                   help="embedded stack state (kept: the next invocation resumes)")
    p.add_argument("--data", type=Path, default=None,
                   help="synthetic data set dir, under the service's data roots "
                   "(default: data/repro, or <data-dir>/data/tiny with --tiny)")
    p.add_argument("--experiment", default=None, help="MLflow experiment (repro, repro-tiny)")
    p.add_argument("--prefix", default=None, help="run name prefix (repro, repro-tiny)")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--teacher-epochs", type=int, default=None)
    p.add_argument("--student-epochs", type=int, default=None)
    p.add_argument("--num-train", type=int, default=None)
    p.add_argument("--parallel", type=int, default=2)  # jobs at once: 1 CPU each on 2 cores
    p.add_argument("--cpus-per-job", type=float, default=1.0)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--max-attempts", type=int, default=3)
    p.add_argument("--poll", type=float, default=None, help="seconds between looks (15; 3)")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--restat", type=Path, default=None, metavar="JSON",
                   help="recompute the paired statistics and notes of this results JSON (and "
                   "the .md beside it) from the runs it records; trains nothing")
    args = p.parse_args(argv)
    if args.restat is not None:
        return restat(args.restat)

    base = TINY if args.tiny else Schedule()
    s = Schedule(**{**asdict(base), **{k: v for k, v in dict(
        seeds=tuple(args.seeds) if args.seeds else None, teacher_epochs=args.teacher_epochs,
        student_epochs=args.student_epochs, num_train=args.num_train).items() if v is not None}})
    tag = "repro-tiny" if args.tiny else "repro"
    args.experiment = args.experiment or tag
    prefix = args.prefix or tag
    args.poll = args.poll or (3.0 if args.tiny else 15.0)
    stem = "reproduction_tiny" if args.tiny else "reproduction"
    runs_plan = plan(s, prefix)

    total = sum(estimate_s(r, s) for r in runs_plan)
    print(f"plan: {len(runs_plan)} runs, schedule {asdict(s)}")
    print_table(["run", "kind", "epochs", "est. min"],
                [[r.name, r.kind, str(r.epochs), estimate_s(r, s) / 60] for r in runs_plan])
    wall_h = total / 3600 / max(1, args.parallel)
    print(f"estimated job time: {total / 3600:.2f} h; about {wall_h:.2f} h of wall time with "
          f"{args.parallel} jobs at once on 1 CPU each")
    if args.plan:
        return 0

    from service.client import Client

    machine = machine_info("cpu")
    # the data set lives beside the stack's state, never in it (data roots stay apart from it)
    tiny_data = args.data_dir.with_name(f"{args.data_dir.name}-data") / "tiny"
    data = (args.data or (tiny_data if args.tiny else ROOT / "data/repro")).resolve()
    stack = None
    if args.url is None:
        from service.stack import Stack, StackConfig, free_port

        stack = Stack(StackConfig(data_dir=args.data_dir, api_port=free_port(),
                                  dashboard_port=free_port(), mlflow_port=free_port(),
                                  extra_env={"BCKD_DATA_ROOTS": json.dumps([str(data.parent)])}))
        print(f"starting Ray, MLflow and the API (state in {args.data_dir}) ...", flush=True)
        stack.start()
        url, token_file, mlflow_uri = stack.api_url, stack.admin_token_file, stack.mlflow_url
    else:
        url, token_file, mlflow_uri = args.url, args.token_file, args.mlflow_uri
    t0 = time.monotonic()
    try:
        ensure_data(data, s)
        client = Client(url, token_file.read_text().strip())
        runs = drive(client, runs_plan, s, data, args)
        result = collect(runs_plan, runs)
        if mlflow_uri is None:  # from a job's link: <mlflow>/#/runs/<id>
            links = [j["links"]["mlflow_run"] for js in runs.jobs.values() for j in js
                     if j.get("links") and j["links"].get("mlflow_run")]
            mlflow_uri = links[0].split("/#/")[0] if links else None
        return report(result, runs_plan, s, args, machine, stem, mlflow_uri,
                      time.monotonic() - t0, prefix)
    finally:
        if stack is not None:
            print("stopping the stack (unfinished jobs resume on the next invocation) ...",
                  flush=True)
            stack.stop()


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


def report(result: dict, runs_plan: list[Run], s: Schedule, args, machine: dict, stem: str,
           mlflow_uri: str | None, wall_s: float, prefix: str) -> int:
    cells = result["families"]
    print()
    rows = table_rows(cells)
    table = print_table(HEADERS, rows)
    said = notes(cells)
    for line in said:
        print("  " + line)
    finish_machine(machine)
    done = sum(r["state"] == "done" for r in result["runs"])
    title = (f"{args.experiment}: {done}/{len(runs_plan)} runs, {s.num_train} train images of "
             f"{s.size} px, teacher {s.teacher_epochs} / students {s.student_epochs} epochs, "
             f"seeds {list(s.seeds)}")
    args.results.mkdir(parents=True, exist_ok=True)
    png = plot(cells, args.results / f"{stem}.png", title)
    md = args.results / f"{stem}.md"
    md_table = markdown(rows, HEADERS)
    md.write_text(f"# {title}\n\n{md_table}\n\n"
                  + "".join(f"- {line}\n" for line in said)
                  + f"\nmAP etc.: COCO bbox metrics x100 of the final epoch on {s.num_val} val "
                  "images; mean ± sample std over seeds; gap closed = (method - student) / "
                  "(teacher - student) on seed means; neighbours in the measured order paired "
                  "by seed: mean difference and its 95 % Student-t interval, separated when it "
                  "excludes 0.\nMachine: "
                  f"{machine['cpu_count']} cores; jobs from {result['first_started']} to "
                  f"{result['last_ended']}, {result['job_hours']:.2f} h of job time, "
                  f"{args.parallel} at a time.\n")
    print(f"wrote {md}\nwrote {png}")
    js = write_json(args.results / f"{stem}.json", dict(
        machine=machine, schedule=asdict(s), experiment=args.experiment, wall_s=wall_s,
        parallel=args.parallel,
        runs_done=done, runs_planned=len(runs_plan), table=table, markdown=md_table,
        notes=said, **result))
    if mlflow_uri:
        try:
            run_id = log_summary(mlflow_uri, args.experiment, f"{prefix}-summary",
                                 [js, md, png], cells)
            print(f"logged the table and plot to MLflow run {run_id} ({args.experiment})")
        except Exception as err:  # noqa: BLE001 - the files are written; say what failed
            print(f"could not log the summary to MLflow {mlflow_uri}: {err}", file=sys.stderr)
    return 0 if done == len(runs_plan) else 1


if __name__ == "__main__":
    sys.exit(main())
