"""The full demo through the REST service: teacher, then baseline and BCKD students, compared.

    python -m service.demo                      # starts the embedded stack, ~15 min on 2 cores
    python -m service.demo --url http://127.0.0.1:8000 --token-file .bckd/admin_token

Every step goes through the API (``service.client``). Submissions carry idempotency keys, so a
re-run against the same data dir reuses finished jobs instead of training again.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from service.client import Client
from service.jobs_cli import compare_table
from service.models import TERMINAL
from service.settings import PROJECT_ROOT


def _progress(client: Client, job_id: str) -> str:
    lines = [ln for ln in client.logs(job_id, 400)["text"].splitlines() if "bckd: progress" in ln]
    return lines[-1].split("bckd: progress", 1)[1].strip() if lines else "starting"


def follow(client: Client, jobs: dict[str, str], poll_s: float = 10.0) -> dict[str, dict]:
    """Print each job's latest progress line every ``poll_s`` until all have ended; the jobs
    by label (``jobs`` maps a label to a job id)."""
    t0 = time.monotonic()
    labels = {job_id: label for label, job_id in jobs.items()}

    def show(states: dict[str, dict]) -> None:
        for job_id, job in states.items():
            shown = job["status"] if job["status"] in TERMINAL else _progress(client, job_id)
            print(f"  [{time.monotonic() - t0:5.0f} s] {labels[job_id]:9} {shown}", flush=True)

    ended = client.wait(jobs.values(), poll_s, on_poll=show)
    return {labels[job_id]: job for job_id, job in ended.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default=None, help="a running API; default: start the stack")
    p.add_argument("--token-file", type=Path, default=Path(".bckd/admin_token"))
    p.add_argument("--data-dir", type=Path, default=Path(".bckd"), help="embedded stack state")
    p.add_argument("--data", type=Path, default=Path("data/synth-demo"),
                   help="synthetic data set (written when missing)")
    # Sized for about 15 minutes on 2 cores: at 128 px the GFL teacher reaches ~9 mAP in 6
    # epochs of 800 images (~8 min), the two students then train side by side.
    p.add_argument("--num-train", type=int, default=800)
    p.add_argument("--num-val", type=int, default=200)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--teacher-epochs", type=int, default=6)
    p.add_argument("--student-epochs", type=int, default=4)
    p.add_argument("--experiment", default="demo")
    p.add_argument("--ports", type=int, nargs=3, default=(8000, 8265, 5000),
                   metavar=("API", "DASHBOARD", "MLFLOW"), help="embedded stack ports")
    args = p.parse_args(argv)

    stack = None
    if args.url is None:
        from service.stack import Stack, StackConfig

        api, dash, mlflow = args.ports
        stack = Stack(StackConfig(data_dir=args.data_dir, api_port=api, dashboard_port=dash,
                                  mlflow_port=mlflow))
        print("starting Ray, MLflow and the API ...", flush=True)
        stack.start()
        print(f"  API {stack.api_url}  Ray {stack.ray_url}  MLflow {stack.mlflow_url}\n"
              f"  admin token: {stack.admin_token_file}", flush=True)
        url, token_file = stack.api_url, stack.admin_token_file
    else:
        url, token_file = args.url, args.token_file
    try:
        client = Client(url, token_file.read_text().strip())
        data = args.data if args.data.is_absolute() else PROJECT_ROOT / args.data
        if not (data / "annotations" / "instances_val.json").exists():
            print(f"writing the synthetic data set to {data} ...", flush=True)
            subprocess.run([sys.executable, "-m", "cli", "data", "synth", "--out",
                            str(data), "--num-train", str(args.num_train), "--num-val",
                            str(args.num_val), "--image-size", str(args.image_size), "--quiet"],
                           check=True, cwd=PROJECT_ROOT)
        exp = args.experiment

        def submit(label: str, kind: str, config: str, epochs: int, **extra) -> str:
            body = {"kind": kind, "config": config, "experiment": exp, "name": f"{exp}-{label}",
                    "data_root": str(data), "overrides": {"train_cfg.max_epochs": epochs},
                    **extra}
            job = client.submit(body, idempotency_key=f"{exp}-{label}")
            print(f"{label}: job {job['id']} {job['status']}  {job['links']['ray_dashboard']}",
                  flush=True)
            return job["id"]

        teacher = submit("teacher", "train", "synth/gfl_teacher", args.teacher_epochs)
        trained = follow(client, {"teacher": teacher})["teacher"]
        if trained["status"] != "SUCCEEDED":
            print("the teacher failed; see `bckd jobs logs " + teacher + "`", file=sys.stderr)
            return 1
        # the teacher's weights as the job logged them to its MLflow run
        ckpt = f"runs:/{trained['mlflow_run_id']}/checkpoints/final.pth"
        students = {
            "baseline": submit("baseline", "train", "synth/gfl_student", args.student_epochs),
            "bckd": submit("bckd", "distill", "synth/bckd_gfl", args.student_epochs,
                           teacher_ckpt=ckpt),
        }
        ended = follow(client, students)
        print()
        print(compare_table(client.compare(exp)))
        return 0 if all(j["status"] == "SUCCEEDED" for j in ended.values()) else 1
    finally:
        if stack is not None:
            print("stopping the stack ...", flush=True)
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
