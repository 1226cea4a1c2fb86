"""The full demo through the REST service: a teacher, then baseline and BCKD students on
paired seeds, compared with their paired differences.

    python -m service.client.demo               # starts the embedded stack, ~20 min on 2 cores
    python -m service.client.demo --url http://127.0.0.1:8000 --token-file .bckd/admin_token

Every step goes through the API (``service.client.api_client``). Submissions carry idempotency
keys, so a re-run against the same data dir reuses finished jobs instead of training again. Each
seed trains the student alone and the BCKD student from the same initial weights and data order, so
the table's paired difference (BCKD - student, with its 95 % interval over the seeds) shows the
method's effect against the spread the seeds give; a run on one machine repeats its numbers
exactly (docs/REPRODUCTION.md, "The demo").
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from bckd.data.synth import SynthConfig, ensure
from service.client.api_client import Client
from service.client.jobs_cli import compare_report
from service.core.states import TERMINAL
from service.settings import PROJECT_ROOT
from service.stack.serve import ray_token_line


def _state(client: Client, job_id: str, job: dict) -> str:
    """What a progress line says of a job: its end, what it waits for, or its latest
    ``bckd: progress`` line."""
    if job["status"] in TERMINAL:
        return job["status"]
    if job["status"] != "RUNNING":  # not on Ray's workers yet: say why, as the API does
        reason = job.get("queue_reason") or job.get("message") or "waiting for the cluster"
        return f"{job['status'].lower()} ({reason})"
    lines = [ln for ln in client.logs(job_id, 400)["text"].splitlines() if "bckd: progress" in ln]
    return lines[-1].split("bckd: progress", 1)[1].strip() if lines else "starting"


def follow(client: Client, jobs: dict[str, str], poll_s: float = 10.0) -> dict[str, dict]:
    """Print each job's latest progress line every ``poll_s`` until all have ended; the jobs
    by label (``jobs`` maps a label to a job id)."""
    t0 = time.monotonic()
    labels = {job_id: label for label, job_id in jobs.items()}
    last: dict[str, str] = {}

    def show(states: dict[str, dict]) -> None:
        for job_id, job in states.items():
            shown = _state(client, job_id, job)
            if last.get(job_id) != shown:  # a line only when the job's state moved
                last[job_id] = shown
                print(f"  [{time.monotonic() - t0:5.0f} s] {labels[job_id]:9} {shown}",
                      flush=True)

    ended = client.wait(jobs.values(), poll_s, on_poll=show)
    return {labels[job_id]: job for job_id, job in ended.items()}


def schedule_overrides(epochs: int, seed: int) -> dict:
    """A run of ``epochs`` on ``seed``: the step decay at 3/4 of the epochs, as the synth
    configs place it for their own length, and validation once, at the final epoch."""
    return {"train_cfg.max_epochs": epochs, "train_cfg.val_interval": epochs,
            "randomness.seed": seed, "param_scheduler.1.end": epochs,
            "param_scheduler.1.milestones": [max(1, int(epochs * 0.75))]}


def end_on_signals() -> None:
    """Ctrl-C and SIGTERM end the process through its ``finally``, which stops the embedded
    stack; also when it was started in the background (``&``, nohup), where SIGINT arrives
    ignored."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default=None, help="a running API; default: start the stack")
    p.add_argument("--token-file", type=Path, default=Path(".bckd/admin_token"))
    p.add_argument("--data-dir", type=Path, default=Path(".bckd"), help="embedded stack state")
    p.add_argument("--data", type=Path, default=Path("data/synth-demo"),
                   help="synthetic data set (written when missing)")
    # Sized from teacher and student-alone runs (docs/REPRODUCTION.md, "The demo")
    p.add_argument("--num-train", type=int, default=800)
    p.add_argument("--num-val", type=int, default=500)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--min-object-size", type=int, default=16)
    p.add_argument("--teacher-epochs", type=int, default=10)
    p.add_argument("--teacher-cpus", type=float, default=2.0, help="CPUs of the teacher's job")
    p.add_argument("--student-epochs", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="the students' seeds, each for the student alone and BCKD")
    p.add_argument("--experiment", default="demo")
    p.add_argument("--ports", type=int, nargs=3, default=(8000, 8265, 5000),
                   metavar=("API", "DASHBOARD", "MLFLOW"), help="embedded stack ports")
    args = p.parse_args(argv)

    end_on_signals()
    stack = None
    if args.url is None:
        from service.stack.embedded import Stack, StackConfig

        api, dash, mlflow = args.ports
        stack = Stack(StackConfig(data_dir=args.data_dir, api_port=api, dashboard_port=dash,
                                  mlflow_port=mlflow))
        print("starting Ray, MLflow and the API ...", flush=True)
        stack.start()
        print(f"  API {stack.api_url}  Ray {stack.ray_url}  MLflow {stack.mlflow_url}\n"
              f"  admin token: {stack.admin_token_file}\n{ray_token_line(stack.ray_token_file)}",
              flush=True)
        url, token_file = stack.api_url, stack.admin_token_file
    else:
        url, token_file = args.url, args.token_file
    try:
        client = Client(url, token_file.read_text().strip())
        data = args.data if args.data.is_absolute() else PROJECT_ROOT / args.data
        synth = SynthConfig(out=data, num_train=args.num_train, num_val=args.num_val,
                            image_size=args.image_size, min_object_size=args.min_object_size)
        try:
            if ensure(synth, progress=False):
                print(f"wrote the synthetic data set to {data}", flush=True)
        except ValueError as err:
            print(f"demo: {err} (--data)", file=sys.stderr)
            return 2
        exp = args.experiment

        def submit(label: str, kind: str, config: str, epochs: int, seed: int = 0,
                   **extra) -> str:
            body = {"kind": kind, "config": config, "experiment": exp, "name": f"{exp}-{label}",
                    "data_root": str(data), "overrides": schedule_overrides(epochs, seed),
                    **extra}
            job = client.submit(body, idempotency_key=f"{exp}-{label}")
            print(f"{label}: job {job['id']} {job['status']}  {job['links']['ray_dashboard']}",
                  flush=True)
            return job["id"]

        # the teacher trains alone: both cores (the students then run side by side, 1 each)
        teacher = submit("teacher", "train", "synth/gfl_teacher", args.teacher_epochs,
                         resources={"num_workers": 1, "cpus_per_worker": args.teacher_cpus})
        trained = follow(client, {"teacher": teacher})["teacher"]
        if trained["status"] != "SUCCEEDED":
            print("the teacher failed; see `bckd jobs logs " + teacher + "`", file=sys.stderr)
            return 1
        # the teacher's weights as the job logged them to its MLflow run
        ckpt = f"runs:/{trained['mlflow_run_id']}/checkpoints/final.pth"
        students = {}
        for seed in args.seeds:  # all at once: Ray runs them as CPUs free up
            students[f"base-s{seed}"] = submit(f"baseline-s{seed}", "train",
                                               "synth/gfl_student", args.student_epochs, seed)
            students[f"bckd-s{seed}"] = submit(f"bckd-s{seed}", "distill", "synth/bckd_gfl",
                                               args.student_epochs, seed, teacher_ckpt=ckpt)
        ended = follow(client, students)
        print()
        print(compare_report(client.compare(exp)))
        login = client.mlflow_login()  # the links above open in MLflow with the caller's own
        if login["username"] is not None:
            print(f"MLflow asks for your login: {login['username']} / {login['password']} "
                  "(`bckd jobs mlflow-login` prints it again)")
        return 0 if all(j["status"] == "SUCCEEDED" for j in ended.values()) else 1
    finally:
        if stack is not None:
            print("stopping the stack ...", flush=True)
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
