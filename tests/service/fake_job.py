"""Stand-in for ``jobs.train`` with the same command line: logs to MLflow, honours SIGINT.

``python tests/service/fake_job.py CONFIG --name N --experiment E [...] [--cfg-options k=v]``;
``--cfg-options train_cfg.max_epochs=E`` runs 4 E steps of 0.25 s (default E = 8).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import mlflow


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--name", required=True)
    p.add_argument("--experiment", required=True)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--cpus-per-worker", type=float, default=1)
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--cfg-options", nargs="*", default=[])
    args = p.parse_args()
    opts = dict(o.split("=", 1) for o in args.cfg_options)
    steps = int(opts.get("train_cfg.max_epochs", 8)) * 4

    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    mlflow.set_experiment(args.experiment)
    run = mlflow.start_run(run_name=args.name)
    print(f"bckd: mlflow_run_id={run.info.run_id}", flush=True)
    mlflow.log_params({"config": args.config, "kind": "fake"})
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
