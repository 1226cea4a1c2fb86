"""The paper's comparison at the scale of this machine, trained as jobs through our REST service.

    python benchmarks/reproduce.py --plan               # the runs and an estimate; runs nothing
    python benchmarks/reproduce.py                      # the whole table (estimate: --plan)
    python benchmarks/reproduce.py --max-minutes 50     # submit for 50 min, then finish what runs
    python benchmarks/reproduce.py --url http://127.0.0.1:8000 --token-file .bckd/admin_token
    python benchmarks/reproduce.py --tiny               # end to end in minutes (the smoke test)

The protocol (``Schedule``; docs/REPRODUCTION.md says how it was chosen, before the runs): the
synthetic data set (``bckd.data.synth``, written once to ``--data``); per head family (GFL, ATSS,
RetinaNet, FCOS, RTMDet) one teacher, ``synth/{family}_teacher``, seed 0; GFL students of every
method of ``GFL_METHODS`` (student alone, KD, LD, BCDL, ILDL, BCKD, CrossKD, PKD, BCKD+PKD) on
seeds 0-4, and for the other families the student alone and BCKD on seeds 0-2, all distilled
from their family's teacher as its job logged it to MLflow (``runs:/<teacher run>/...``).

Each run is one job submitted to the service (``POST /v1/jobs``), named
``<prefix>-<config>-s<seed>`` in the MLflow experiment ``--experiment``. The step-decay
milestone follows the epochs (at 3/4 of them), the seed is ``randomness.seed``, and validation
runs once, at the final epoch. The script is resumable: a run whose MLflow run FINISHED (or
whose job SUCCEEDED) is skipped; a job that is running is waited for; one that ended FAILED,
STOPPED or LOST is submitted again under the same name, so the job resumes from its last
checkpoint (its run directory in the service), at most ``--max-attempts`` times. ``--parallel``
jobs run at once (1 CPU each). ``--max-minutes`` stops submitting after that long and waits for
the jobs in flight.

Results (``repro_report``): the final epoch's COCO mAP, AP50, AP75, APs of each run; per method
the mean and sample standard deviation over seeds, and the share of the teacher-student gap
closed; each method against the student alone and BCKD against each other method, paired by
seed, with 95 % intervals. Written to ``<results>/reproduction.{json,md,png}``
(``reproduction_tiny.*`` with ``--tiny``) and logged to the same MLflow experiment as a run
named ``<prefix>-summary``. ``--restat FILE`` recomputes the statistics from the runs recorded
in a results JSON, without training.

Over 300 lines on purpose: the protocol (``Schedule``, ``plan``), the service driver (``Runs``,
``drive``) and the entry point read together as the one experiment they are; what the results
mean (statistics, notes, table, plot) lives in ``repro_report.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from common import RESULTS, finish_machine, machine_info, print_table, write_json
from repro_report import (
    HEADERS,
    METRICS,
    collect,
    log_summary,
    markdown,
    notes,
    plot,
    restat,
    table_rows,
)

from service.demo import end_on_signals, schedule_overrides

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("gfl", "atss", "retinanet", "fcos", "rtmdet")
GFL_METHODS = {"student": "gfl_student", "kd": "kd_gfl", "ld": "ld_gfl", "bcdl": "bcdl_gfl",
               "ildl": "ildl_gfl", "bckd": "bckd_gfl", "crosskd": "crosskd_gfl",
               "pkd": "pkd_gfl", "bckd_pkd": "bckd_pkd_gfl"}
ACTIVE = ("PENDING", "SUBMITTED", "RUNNING")  # job states of the API that are not over
# Seconds per training image of one job on 1 CPU at 128 px, and per evaluated image; start-up
# per job. Fitted to the job times of the run of 2026-11-25 (33 jobs, 2 at a time on this
# 2-core machine), which they reproduce to within a few per cent; CrossKD and PKD runs cost
# about what the other distillation runs cost (one teacher forward a step).
TRAIN_S_PER_IMAGE = {"student": 0.022, "distill": 0.053, "teacher": 0.105}
FAMILY_COST = {"gfl": 1.0, "atss": 1.0, "retinanet": 1.05, "fcos": 1.05, "rtmdet": 1.0}
EVAL_S_PER_IMAGE = 0.03
STARTUP_S = 30.0


@dataclass(frozen=True)
class Schedule:
    """The protocol, fixed before the runs (docs/REPRODUCTION.md says how it was chosen)."""

    num_train: int = 1000
    num_val: int = 500
    size: int = 128
    min_object_size: int = 16
    teacher_epochs: int = 24
    student_epochs: int = 6
    gfl_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # GFL: every method
    seeds: tuple[int, ...] = (0, 1, 2)  # the other families: student alone and BCKD
    families: tuple[str, ...] = FAMILIES
    gfl_methods: tuple[str, ...] = tuple(GFL_METHODS)


TINY = Schedule(num_train=16, num_val=8, size=128, min_object_size=8, teacher_epochs=1,
                student_epochs=1, gfl_seeds=(0,), seeds=(0,), families=("gfl",),
                gfl_methods=("student", "bckd"))


@dataclass(frozen=True)
class Run:
    family: str
    method: str  # teacher, or a key of GFL_METHODS
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


def plan(s: Schedule, prefix: str, setting_only: bool = False) -> list[Run]:
    """The setting's runs first (teachers, then every student alone), then the distillation
    runs, seed-major (a partial run still covers every cell). ``setting_only``: the first part.

    Every method of a family runs each of the family's seeds, so their differences pair."""
    runs = [Run(f, "teacher", f"synth/{f}_teacher", 0, s.teacher_epochs, prefix)
            for f in s.families]
    students: list[Run] = []
    for seed in sorted(set(s.gfl_seeds) | set(s.seeds)):
        for f in s.families:
            if f == "gfl" and seed in s.gfl_seeds:
                methods = {m: GFL_METHODS[m] for m in s.gfl_methods}
            elif f != "gfl" and seed in s.seeds:
                methods = {"student": f"{f}_student", "bckd": f"bckd_{f}"}
            else:
                continue
            students += [Run(f, m, f"synth/{c}", seed, s.student_epochs, prefix)
                         for m, c in methods.items()]
    runs += [r for r in students if r.kind == "train"]
    return runs if setting_only else runs + [r for r in students if r.kind == "distill"]


def estimate_s(run: Run, s: Schedule) -> float:
    """Job seconds of ``run`` on 1 CPU: training, one evaluation (two for a distillation run,
    which scores its teacher first) and start-up."""
    kind = run.method if run.method in ("teacher", "student") else "distill"
    scale = (s.size / 128) ** 2 * FAMILY_COST[run.family]
    train = run.epochs * s.num_train * TRAIN_S_PER_IMAGE[kind] * scale
    evals = (1 + (run.kind == "distill")) * s.num_val * EVAL_S_PER_IMAGE * scale
    return STARTUP_S + train + evals


def overrides(run: Run) -> dict:
    """The run's schedule and seed: validation at the final epoch only, the step decay at 3/4."""
    return schedule_overrides(run.epochs, run.seed)


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
            "data_root": str(data), "overrides": overrides(run),
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


def per_run(runs_plan: list[Run], runs: Runs) -> list[dict]:
    """Each planned run as the report reads it: state, MLflow run id, job minutes and the
    final epoch's metrics in COCO points (x100; NaN where the run logged none)."""
    out = []
    for r in runs_plan:
        metrics = (runs.mlflow.get(r.name) or {}).get("metrics", {})
        out.append(dict(name=r.name, family=r.family, method=r.method, seed=r.seed,
                        config=r.config, state=runs.state(r.name), run_id=runs.run_id(r.name),
                        minutes=runs.minutes(r.name),
                        **{k: 100 * metrics[m] if m in metrics else math.nan
                           for k, m in METRICS.items()}))
    return out


# --- main ----------------------------------------------------------------------------------


def ensure_data(data: Path, s: Schedule) -> None:
    from bckd.data.synth import SynthConfig, ensure

    try:
        if ensure(SynthConfig(out=data, num_train=s.num_train, num_val=s.num_val,
                              image_size=s.size, min_object_size=s.min_object_size),
                  progress=False):
            print(f"wrote the synthetic data set to {data}", flush=True)
    except ValueError as err:
        raise SystemExit(f"{err} (--data)") from err


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", action="store_true", help="print the runs and an estimate, exit")
    p.add_argument("--setting-only", action="store_true",
                   help="only the runs the setting is judged by: teachers and students alone")
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
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="seeds of every family (default: 0-4 for GFL, 0-2 for the others)")
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
        seeds=tuple(args.seeds) if args.seeds else None,
        gfl_seeds=tuple(args.seeds) if args.seeds else None, teacher_epochs=args.teacher_epochs,
        student_epochs=args.student_epochs, num_train=args.num_train).items() if v is not None}})
    tag = "repro-tiny" if args.tiny else "repro"
    args.experiment = args.experiment or tag
    prefix = args.prefix or tag
    args.poll = args.poll or (3.0 if args.tiny else 15.0)
    stem = "reproduction_tiny" if args.tiny else "reproduction"
    runs_plan = plan(s, prefix, setting_only=args.setting_only)

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

    end_on_signals()
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
        result = collect(per_run(runs_plan, runs),
                         [j for r in runs_plan for j in runs.jobs.get(r.name, [])])
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
             f"seeds {list(s.gfl_seeds)} (GFL), {list(s.seeds)} (others)")
    args.results.mkdir(parents=True, exist_ok=True)
    png = plot(cells, args.results / f"{stem}.png", title)
    md = args.results / f"{stem}.md"
    md_table = markdown(rows, HEADERS)
    md.write_text(f"# {title}\n\n{md_table}\n\n"
                  + "".join(f"- {line}\n" for line in said)
                  + f"\nmAP etc.: COCO bbox metrics x100 of the final epoch on {s.num_val} val "
                  "images; mean ± sample std over seeds; gap closed = (method - student) / "
                  "(teacher - student) on seed means; each method against the student alone and "
                  "BCKD against each other method, paired by seed: mean difference and its 95 % "
                  "Student-t interval, separated when it excludes 0.\nMachine: "
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
