"""Stand-in for ``jobs.train`` with the same command line: logs to MLflow, honours SIGINT.

``python tests/service/fake_job.py --spec JOB.json`` reads the job file the service wrote
(``bckd.config.jobfile``); the override ``train_cfg.max_epochs: E`` runs 4 E steps of 0.25 s
(default E = 8). Like jobs.train it trains in the MLflow run its job file names (the one the
service created) after the same check of its owner, and refuses to start without it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import mlflow

from bckd.config.jobfile import read_job_file
from bckd.tracking.runs import open_owned_run


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--spec", required=True)
    job = read_job_file(p.parse_args().spec)
    steps = int(job.overrides.get("train_cfg.max_epochs", 8)) * 4

    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    run_id = open_owned_run(mlflow.get_tracking_uri(), job.mlflow_run_id, job.owner, job.tags)
    mlflow.start_run(run_id=run_id)
    print(f"bckd: mlflow_run_id={run_id}", flush=True)
    mlflow.log_params({"config": job.config_name or "upload", "kind": "fake"})
    status = "FINISHED"
    for step in range(steps):
        if stop["now"]:
            status = "KILLED"
            break
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        print(f"step {step}", flush=True)
        time.sleep(0.25)
    if status == "FINISHED":
        mlflow.log_metric("coco/bbox_mAP", 0.5)
        mlflow.log_text("a stand-in checkpoint", "final.pth")  # for runs:/<id>/final.pth
    mlflow.end_run(status=status)  # no work_dirs/: the tests leave the project tree clean
    print(f"done {status}", flush=True)
    return 130 if status == "KILLED" else 0


if __name__ == "__main__":
    sys.exit(main())
