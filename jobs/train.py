"""Train a detector, or distill a student, as a Ray Train job tracked in MLflow.

    bckd data synth --out data/synth --num-train 2000 --num-val 500
    bckd train configs/synth/gfl_teacher.py                     # -> work_dirs/gfl_teacher/final.pth
    bckd train configs/synth/bckd_gfl.py --num-workers 2        # distills from that teacher
    python -m jobs.train configs/synth/bckd_gfl.py --name bckd_gfl --experiment synth
    python -m jobs.train --spec JOB.json                        # a job file the service wrote

Running the same --name again resumes from its last checkpoint. The job prints
``bckd: mlflow_run_id=<id>`` (for people: the service never reads it) and writes
``<work_dir>/run.json``; with --spec it trains in the MLflow run the job file names, the one the
service created for it, and no other; see docs/JOBS.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bckd.commandline import add_command
from jobs import add_resource_arguments, run_module, spec_fields

__all__ = ["add_parser", "main", "run"]


def _arguments(parser: argparse.ArgumentParser) -> None:
    from mmengine.config import DictAction

    parser.add_argument("config", nargs="?", help="mmengine/mmdet config file")
    parser.add_argument("--spec", default=None, metavar="FILE",
                        help="a job file written by the service: config, typed overrides, "
                        "resources, name and roots (instead of CONFIG and its options)")
    add_resource_arguments(parser)
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        metavar="KEY=VALUE",
                        help="override existing config keys (a leading '+' adds a new key)")
    parser.add_argument("--experiment", default="bckd", help="MLflow experiment (bckd)")
    parser.add_argument("--name", default=None, help="run name (default: the config's stem); "
                        "the same name again resumes")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (default: RAY_ADDRESS, else a local cluster)")
    parser.add_argument("--work-dir", default=None, help="default: work_dirs/<name>")
    parser.add_argument("--storage-path", default=None,
                        help="checkpoint storage, shared across nodes (path or s3:// URI); "
                        "default: the work dir")
    parser.add_argument("--progress-interval", type=int, default=10,
                        help="iterations between progress lines and MLflow writes (10)")


def _spec(args: argparse.Namespace):
    from bckd.config.spec import JobSpec

    fields, _ = spec_fields(args)
    return JobSpec(address=args.address, storage_path=args.storage_path,
                   progress_interval=args.progress_interval, **fields)


def run(args: argparse.Namespace) -> int:
    from bckd.runtime.launch import run_job

    result = run_job(_spec(args))
    print(f"bckd: run {result.name} {result.status} in {result.wall_s:.0f} s; "
          f"mlflow_run_id={result.mlflow_run_id}; final={result.final_checkpoint}", flush=True)
    if result.status == "FAILED":
        print(f"bckd: error: training failed: {result.error}", file=sys.stderr)
        return 1
    return 0 if result.status == "FINISHED" else 130


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``bckd train`` on the CLI's subparsers."""
    summary = "train or distill a detector on Ray Train, tracked in MLflow"
    return add_command(sub, "train", summary, __doc__, _arguments, run)


def main(argv: Sequence[str] | None = None) -> int:
    return run_module("train", __doc__, _arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
