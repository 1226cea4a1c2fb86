"""Entrypoints that the CLI and the REST service run: ``python -m jobs.<name>``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bckd.commandline import Handler, run_handler
from bckd.runtime.cluster import GPUS_PER_WORKER

__all__ = ["add_resource_arguments", "run_module", "spec_fields"]


def add_resource_arguments(parser: argparse.ArgumentParser, run: str = "the run") -> None:
    """The options of what a run asks of the cluster, and of how it survives failures, that
    ``jobs.train`` and ``jobs.sweep`` (``run``: "each trial's run") share."""
    parser.add_argument("--num-workers", type=int, default=1,
                        help=f"Ray Train workers of {run} (1)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per worker (1)")
    parser.add_argument("--gpus-per-worker", type=int, default=0, choices=GPUS_PER_WORKER,
                        help="GPUs per worker: 0, or 1 (nccl; one process per GPU)")
    parser.add_argument("--max-failures", type=int, default=0,
                        help=f"worker failures {run} recovers from by restarting from its last "
                        "checkpoint (0; with --spec, the job file's)")
    parser.add_argument("--capacity-timeout", type=float, default=600.0, metavar="S",
                        help="seconds to wait for nodes a cluster's autoscaler adds before "
                        "failing (600; with --spec, the job file's)")


def spec_fields(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """The fields a ``JobSpec`` and a ``SweepSpec`` take alike, and the job file (None at a
    terminal): from ``CONFIG`` and its options, or from ``--spec FILE``, a job file the service
    wrote (the config as data, its typed overrides, resources, name, MLflow run and roots; its
    ``max_failures`` and capacity timeout are the request's, not the options')."""
    from bckd.config.jobfile import read_job_file

    if args.spec is None:
        if args.config is None:
            raise ValueError("give a CONFIG file, or --spec FILE")
        return dict(config=args.config, num_workers=args.num_workers,
                    gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
                    cfg_options=dict(args.cfg_options or {}), experiment=args.experiment,
                    name=args.name, work_dir=args.work_dir, max_failures=args.max_failures,
                    capacity_timeout_s=args.capacity_timeout), None
    if args.config is not None or args.cfg_options:
        raise ValueError("--spec FILE holds the config and its overrides: give no CONFIG or "
                         "--cfg-options with it")
    job = read_job_file(args.spec)
    return dict(config=str(job.config_path()), num_workers=job.num_workers,
                gpus_per_worker=job.gpus_per_worker, cpus_per_worker=job.cpus_per_worker,
                cfg_options=job.overrides, experiment=job.experiment, name=job.name,
                work_dir=job.run_dir, tags=job.tags, policy=job.policy(),
                run_id=job.mlflow_run_id, max_failures=job.max_failures,
                capacity_timeout_s=job.capacity_timeout_s), job


def run_module(name: str, doc: str | None, arguments: Callable[[argparse.ArgumentParser], None],
               handler: Handler, argv: Sequence[str] | None = None) -> int:
    """``python -m jobs.<name> ARGS`` parses and runs as ``bckd <name> ARGS`` does, without
    going through the ``bckd`` dispatcher (which sits above this layer)."""
    parser = argparse.ArgumentParser(prog=f"bckd {name}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return run_handler(handler, args)
