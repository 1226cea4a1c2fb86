"""The paper's comparison at the scale of this machine, trained as jobs through our REST service.

    python benchmarks/reproduce.py --plan               # the runs and an estimate; runs nothing
    python benchmarks/reproduce.py                      # the whole table (estimate: --plan)
    python benchmarks/reproduce.py --max-minutes 50     # submit for 50 min, then finish what runs
    python benchmarks/reproduce.py --url http://127.0.0.1:8000 --token-file .bckd/admin_token
    python benchmarks/reproduce.py --tiny               # end to end in minutes (the smoke test)

The protocol (``Schedule``; docs/REPRODUCTION.md says how it was chosen, before the runs): the
synthetic data set (``bckd.data.synth``, written once to ``--data``); per head family (GFL, ATSS,
RetinaNet, FCOS, RTMDet) one teacher, ``synth/{family}_teacher``, seed 0; GFL students of every
method of ``GFL_METHODS`` (student alone, KD, LD, BCDL, ILDL, BCKD, CrossKD, PKD, BCKD+PKD, CWD) on
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
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

from common import RESULTS, finish_machine, machine_info, print_table, write_json
from repro_protocol import PROTOCOL, load_protocol, register
from repro_records import REPRO, Records, commit, git_commit, machine_key, sha256, teacher_to_fp16
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

from service.client.demo import end_on_signals, schedule_overrides

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("gfl", "atss", "retinanet", "fcos", "rtmdet")
GFL_METHODS = {"student": "gfl_student", "kd": "kd_gfl", "ld": "ld_gfl", "bcdl": "bcdl_gfl",
               "ildl": "ildl_gfl", "bckd": "bckd_gfl", "crosskd": "crosskd_gfl",
               "pkd": "pkd_gfl", "bckd_pkd": "bckd_pkd_gfl", "cwd": "cwd_gfl"}
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
    # Phase 1: the students alone on these seeds give each family's seed spread.
    setting_seeds: tuple[int, ...] = (0, 1, 2)
    # Phase 2: seeds 0..n-1 of each family, n from the power calculation registered after
    # phase 1 (PROTOCOL, ``--register``); empty until then.
    seed_counts: tuple[tuple[str, int], ...] = ()
    families: tuple[str, ...] = FAMILIES
    gfl_methods: tuple[str, ...] = tuple(GFL_METHODS)

    def seeds(self, family: str) -> tuple[int, ...]:
        """The seeds of ``family``'s phase 2 (every method on each): none before registration."""
        return tuple(range(dict(self.seed_counts).get(family, 0)))


TINY = Schedule(num_train=16, num_val=8, size=128, min_object_size=8, teacher_epochs=1,
                student_epochs=1, setting_seeds=(0,), seed_counts=(("gfl", 1),),
                families=("gfl",), gfl_methods=("student", "bckd"))


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
    """The setting's runs first, family by family (its teacher, then its student alone on the
    setting's seeds: a partial phase 1 judges whole families), then each family's registered
    seeds, seed-major (a partial run still covers every cell). ``setting_only``: the first part.

    Every method of a family runs each of the family's seeds, so their differences pair."""
    runs = [r for f in s.families for r in (
        Run(f, "teacher", f"synth/{f}_teacher", 0, s.teacher_epochs, prefix),
        *(Run(f, "student", f"synth/{f}_student", seed, s.student_epochs, prefix)
          for seed in s.setting_seeds))]
    if setting_only:
        return runs
    students: list[Run] = []
    for seed in sorted({x for f in s.families for x in s.seeds(f)}):
        for f in s.families:
            if seed not in s.seeds(f):
                continue
            methods = ({m: GFL_METHODS[m] for m in s.gfl_methods} if f == "gfl"
                       else {"student": f"{f}_student", "bckd": f"bckd_{f}"})
            students += [Run(f, m, f"synth/{c}", seed, s.student_epochs, prefix)
                         for m, c in methods.items() if m != "student"
                         or seed not in s.setting_seeds]
    return runs + [r for r in students if r.kind == "train"] + [
        r for r in students if r.kind == "distill"]


def protocol_hash(s: Schedule) -> str:
    """What a run measures besides its config and seed: data and epochs. A record made under
    another setting never counts here; the seeds and methods chosen do not change a run."""
    fixed = {k: v for k, v in asdict(s).items()
             if k not in ("setting_seeds", "seed_counts", "families", "gfl_methods")}
    return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:12]


def needed(runs_plan: list[Run], records: Records, here: str) -> list[Run]:
    """The runs of ``runs_plan`` that the committed records lack, to run on this machine.

    A teacher, once recorded anywhere, serves every machine (its weights are committed). The
    students of one family and seed form a block whose differences pair exactly only on one
    machine: a block one machine holds whole is finished; otherwise this machine runs each of
    the block's runs it has no record of (the student alone too, when it ran elsewhere)."""
    out = [r for r in runs_plan if r.method == "teacher" and records.teacher(r.family) is None]
    blocks: dict[tuple[str, int], list[Run]] = {}
    for r in runs_plan:
        if r.method != "teacher":
            blocks.setdefault((r.family, r.seed), []).append(r)
    for (family, seed), block in blocks.items():
        names = [r.name for r in block]
        machine = records.block_machine(family, seed, names)
        if machine is not None and all(records.of(n, machine) for n in names):
            continue
        out += [r for r in block if not records.of(r.name, here)]
    return [r for r in runs_plan if r in out]  # the plan's order: teachers, students, seeds


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


def submit(client, run: Run, data: Path, runs: Runs, experiment: str, cpus: float,
           teacher_ckpt: Path | None) -> dict:
    body = {"kind": run.kind, "config": run.config, "experiment": experiment, "name": run.name,
            "data_root": str(data), "overrides": overrides(run),
            "resources": {"num_workers": 1, "cpus_per_worker": cpus}}
    if run.kind == "distill":
        # the committed teacher, under the data roots: a user's own checkpoint comes this way
        body["teacher_ckpt"] = str(teacher_ckpt)
    attempt = runs.attempts(run.name) + 1
    # one key per attempt: a retried POST of this attempt returns the same job
    return client.submit(body, idempotency_key=f"{experiment}:{run.name}:{attempt}")


class Ledger:
    """Each run of this session that finishes becomes a committed record (a teacher also its
    fp16 weights); distillation runs read their family's committed teacher."""

    def __init__(self, records: Records, machine: dict, s: Schedule, args,
                 teachers_out: Path) -> None:
        self.records, self.machine, self.schedule, self.args = records, machine, s, args
        self.here = machine_key(machine)
        self.teachers_out = teachers_out  # under the service's data roots
        self.mlflow_uri: str | None = args.mlflow_uri
        self.commit_sha = git_commit()

    def teacher_ckpt(self, family: str) -> Path | None:
        """The committed teacher of ``family`` copied under the data roots, its sha256 checked;
        None while the family has no recorded teacher."""
        rec = self.records.teacher(family)
        if rec is None:
            return None
        src = self.records.dir.parent / rec["teacher_weights"]["file"]
        if not src.is_file() or sha256(src) != rec["teacher_weights"]["sha256"]:
            raise SystemExit(f"{src}: missing, or not the file its record's sha256 names; "
                             "`git checkout -- benchmarks/results/repro/teachers` restores it")
        dst = self.teachers_out / src.name
        if not dst.is_file() or sha256(dst) != rec["teacher_weights"]["sha256"]:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        return dst

    def record(self, run: Run, runs: Runs) -> None:
        from mlflow.tracking import MlflowClient

        run_id = runs.run_id(run.name)
        if self.mlflow_uri is None:  # from a job's link: <mlflow>/#/runs/<id>
            links = [j["links"]["mlflow_run"] for js in runs.jobs.values() for j in js
                     if j.get("links") and j["links"].get("mlflow_run")]
            self.mlflow_uri = links[0].split("/#/")[0] if links else None
        client = MlflowClient(self.mlflow_uri)
        mlrun = client.get_run(run_id)
        jobs = runs.jobs.get(run.name, [])
        rec = dict(
            name=run.name, family=run.family, method=run.method, config=run.config,
            seed=run.seed, epochs=run.epochs, protocol=self.records.protocol,
            schedule=asdict(self.schedule), config_hash=mlrun.data.tags.get("bckd.config_hash"),
            metrics={k: v for k, v in mlrun.data.metrics.items()
                     if k.startswith(("coco/", "teacher/coco/"))},
            job_minutes=round(runs.minutes(run.name), 2), attempts=len(jobs),
            started_at=jobs[0]["started_at"] if jobs else None,
            ended_at=jobs[-1]["ended_at"] if jobs else None,
            machine_key=self.here, machine={k: self.machine.get(k) for k in (
                "cpu_model", "cpu_count", "torch", "python", "device")},
            git_commit=self.commit_sha, mlflow_run_id=run_id, experiment=self.args.experiment)
        paths = []
        if run.method == "teacher":
            from mlflow.artifacts import download_artifacts

            ckpt = Path(download_artifacts(run_id=run_id, artifact_path="checkpoints/final.pth",
                                           tracking_uri=self.mlflow_uri))
            out = self.records.dir.parent / "teachers" / f"{run.family}_teacher.pth"
            rec["teacher_weights"] = dict(file=f"teachers/{out.name}", dtype="float16",
                                          sha256=teacher_to_fp16(ckpt, out),
                                          bytes=out.stat().st_size)
            paths.append(out)
        paths.append(self.records.write(rec))
        mAP = rec["metrics"].get("coco/bbox_mAP")
        print(f"  recorded {run.name}: mAP {'-' if mAP is None else f'{100 * mAP:.1f}'}, "
              f"{rec['job_minutes']:.1f} job minutes", flush=True)
        if self.args.commit:
            commit(paths, f"reproduce: record {run.name} ({run.family} {run.method}, seed "
                   f"{run.seed}) on {self.machine['cpu_model']}")


def drive(client, todo: list[Run], data: Path, args, ledger: Ledger) -> Runs:
    """Submit what is missing, at most ``--parallel`` at a time, until all ended or the budget
    is spent, recording each run as it finishes; return the final view of the runs."""
    runs = Runs(client, args.experiment)
    deadline = time.monotonic() + 60 * args.max_minutes if args.max_minutes else math.inf
    gave_up: set[str] = set()
    last_line = ""
    teacher_names = {r.family: r.name for r in todo if r.method == "teacher"}
    while True:
        runs.refresh()
        states = {r.name: runs.state(r.name) for r in todo}
        for run in todo:
            if states[run.name] == "done" and not ledger.records.of(run.name, ledger.here):
                ledger.record(run, runs)
        running = [n for n, st in states.items() if st == "running"]
        budget_left = time.monotonic() < deadline
        for run in todo:
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
            teacher = None
            if run.kind == "distill":
                teacher = ledger.teacher_ckpt(run.family)
                if teacher is None:
                    if teacher_names.get(run.family) in gave_up:
                        gave_up.add(run.name)
                        print(f"  {run.name}: its teacher failed; skipped", flush=True)
                    continue  # waits for its teacher's record
            job = submit(client, run, data, runs, args.experiment, args.cpus_per_job, teacher)
            print(f"  submitted {run.name} (attempt {runs.attempts(run.name) + 1}): job "
                  f"{job['id']}", flush=True)
            running.append(run.name)
            states[run.name] = "running"
        done = sum(st == "done" for st in states.values())
        line = f"{done}/{len(todo)} done, running: " + (", ".join(running) or "-")
        if line != last_line:  # print changes only
            print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
            last_line = line
        waiting = [n for n, st in states.items() if st != "done" and n not in gave_up]
        if not running and (not budget_left or not waiting):
            if waiting:
                print(f"budget of {args.max_minutes} min spent: {len(waiting)} runs left for "
                      "the next invocation", flush=True)
            return runs
        time.sleep(args.poll)


def per_run(runs_plan: list[Run], records: Records) -> list[dict]:
    """Each planned run as the report reads it, from the committed records: a block's runs
    from the one machine that holds most of it (pairs never mix machines), metrics in COCO
    points (x100; NaN where the run logged none)."""
    out = []
    for r in runs_plan:
        machine = None if r.method == "teacher" else records.block_machine(
            r.family, r.seed, [x.name for x in runs_plan
                               if x.family == r.family and x.seed == r.seed])
        found = (records.of(r.name) if r.method == "teacher" else
                 records.of(r.name, machine) if machine else [])
        rec = found[0] if found else None
        metrics = rec["metrics"] if rec else {}
        out.append(dict(name=r.name, family=r.family, method=r.method, seed=r.seed,
                        config=r.config, state="done" if rec else "missing",
                        run_id=rec["mlflow_run_id"] if rec else None,
                        machine=rec["machine_key"] if rec else None,
                        minutes=rec["job_minutes"] if rec else 0.0,
                        **{k: 100 * metrics[m] if m in metrics else math.nan
                           for k, m in METRICS.items()}))
    return out


def from_records(runs_plan: list[Run], records: Records) -> dict:
    """The report's input (``repro_report.collect``) from the committed records alone."""
    rows = per_run(runs_plan, records)
    spans = [r for r in records.all if r["started_at"] and r["ended_at"]]
    return collect(rows, spans)


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
    p.add_argument("--register", action="store_true",
                   help="after phase 1: fix each family's seed count by the power calculation "
                   "and write it to benchmarks/results/repro/protocol.json; trains nothing")
    p.add_argument("--teacher-epochs", type=int, default=None)
    p.add_argument("--student-epochs", type=int, default=None)
    p.add_argument("--num-train", type=int, default=None)
    p.add_argument("--parallel", type=int, default=2)  # jobs at once: 1 CPU each on 2 cores
    p.add_argument("--cpus-per-job", type=float, default=1.0)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--max-attempts", type=int, default=3)
    p.add_argument("--poll", type=float, default=None, help="seconds between looks (15; 3)")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--records", type=Path, default=None,
                   help="the committed records and teachers' records (default: "
                   "benchmarks/results/repro/records; <data-dir>/records with --tiny)")
    p.add_argument("--commit", action="store_true",
                   help="git-commit each record (and teacher) as its run finishes")
    p.add_argument("--restat", type=Path, default=None, metavar="JSON",
                   help="recompute the paired statistics and notes of this results JSON (and "
                   "the .md beside it) from the runs it records; trains nothing")
    args = p.parse_args(argv)
    if args.restat is not None:
        return restat(args.restat)

    base = TINY if args.tiny else Schedule()
    s = Schedule(**{**asdict(base), **{k: v for k, v in dict(
        teacher_epochs=args.teacher_epochs, student_epochs=args.student_epochs,
        num_train=args.num_train).items() if v is not None}})
    registered = None if args.tiny else load_protocol(PROTOCOL, protocol_hash(s))
    if registered is not None:
        s = replace(s, seed_counts=tuple((f, c["seeds"]) for f, c in
                                         registered["families"].items()))
    elif not args.tiny and not args.setting_only and not args.register:
        print(f"phase 2 waits for its registered protocol ({os.path.relpath(PROTOCOL, ROOT)}): "
              "this runs phase 1; once it is recorded, `python benchmarks/reproduce.py "
              "--register` fixes the seeds by the power calculation", flush=True)
        args.setting_only = True
    tag = "repro-tiny" if args.tiny else "repro"
    args.experiment = args.experiment or tag
    prefix = args.prefix or tag
    args.poll = args.poll or (3.0 if args.tiny else 15.0)
    stem = "reproduction_tiny" if args.tiny else "reproduction"
    runs_plan = plan(s, prefix, setting_only=args.setting_only)
    import torch  # noqa: F401  (machine_info records its version: part of the machine's key)

    machine = machine_info("cpu")
    records = Records(args.records or (args.data_dir / "records" if args.tiny
                                       else REPRO / "records"), protocol_hash(s))
    todo = needed(runs_plan, records, machine_key(machine))
    total = sum(estimate_s(r, s) for r in todo)
    print(f"plan: {len(runs_plan)} runs, schedule {asdict(s)} (protocol {records.protocol}); "
          f"{len(records.all)} recorded in {records.dir}, {len(todo)} to run on this machine "
          f"({machine_key(machine)})")
    print_table(["run", "kind", "epochs", "est. min", "state"],
                [[r.name, r.kind, str(r.epochs), estimate_s(r, s) / 60,
                  "to run" if r in todo else "recorded"] for r in runs_plan])
    wall_h = total / 3600 / max(1, args.parallel)
    print(f"estimated job time: {total / 3600:.2f} h; about {wall_h:.2f} h of wall time with "
          f"{args.parallel} jobs at once on 1 CPU each")
    if args.plan:
        return 0
    if args.register:
        return register(records, s, prefix, PROTOCOL, args.commit)
    if not todo:  # everything is committed: the report alone, no stack, no training
        return report(from_records(runs_plan, records), runs_plan, s, args, machine, stem,
                      None, 0.0, prefix)

    from service.client.api_client import Client

    end_on_signals()
    # the data set lives beside the stack's state, never in it (data roots stay apart from it)
    tiny_data = args.data_dir.with_name(f"{args.data_dir.name}-data") / "tiny"
    data = (args.data or (tiny_data if args.tiny else ROOT / "data/repro")).resolve()
    stack = None
    if args.url is None:
        from service.stack.embedded import Stack, StackConfig, free_port

        stack = Stack(StackConfig(data_dir=args.data_dir, api_port=free_port(),
                                  dashboard_port=free_port(), mlflow_port=free_port(),
                                  extra_env={"BCKD_DATA_ROOTS": json.dumps([str(data.parent)])}))
        print(f"starting Ray, MLflow and the API (state in {args.data_dir}) ...", flush=True)
        stack.start()
        url, token_file, mlflow_uri = stack.api_url, stack.admin_token_file, stack.mlflow_admin_uri
    else:
        url, token_file, mlflow_uri = args.url, args.token_file, args.mlflow_uri
    t0 = time.monotonic()
    try:
        ensure_data(data, s)
        client = Client(url, token_file.read_text().strip())
        ledger = Ledger(records, machine, s, args, data.parent / f"{data.name}-teachers")
        ledger.mlflow_uri = mlflow_uri
        drive(client, todo, data, args, ledger)
        return report(from_records(runs_plan, records), runs_plan, s, args, machine, stem,
                      ledger.mlflow_uri, time.monotonic() - t0, prefix)
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
             f"seeds {dict(s.seed_counts) or 'not registered yet'}")
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
