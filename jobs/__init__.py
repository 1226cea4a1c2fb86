"""Entrypoints that the CLI and the REST service run: ``python -m jobs.<name>``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from bckd.commandline import Handler, run_handler

__all__ = ["add_resource_arguments", "run_module"]


def add_resource_arguments(parser: argparse.ArgumentParser, run: str = "the run") -> None:
    """The options of what a run asks of the cluster, and of how it survives failures, that
    ``jobs.train`` and ``jobs.sweep`` (``run``: "each trial's run") share."""
    parser.add_argument("--num-workers", type=int, default=1,
                        help=f"Ray Train workers of {run} (1)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per worker (1)")
    parser.add_argument("--gpus-per-worker", type=int, default=0, choices=(0, 1),
                        help="GPUs per worker: 0, or 1 (nccl; one process per GPU)")
    parser.add_argument("--max-failures", type=int, default=0,
                        help=f"worker failures {run} recovers from by restarting from its last "
                        "checkpoint (0; with --spec, the job file's)")
    parser.add_argument("--capacity-timeout", type=float, default=600.0, metavar="S",
                        help="seconds to wait for nodes a cluster's autoscaler adds before "
                        "failing (600; with --spec, the job file's)")


def run_module(name: str, doc: str | None, arguments: Callable[[argparse.ArgumentParser], None],
               handler: Handler, argv: Sequence[str] | None = None) -> int:
    """``python -m jobs.<name> ARGS`` parses and runs as ``bckd <name> ARGS`` does, without
    going through the ``bckd`` dispatcher (which sits above this layer)."""
    parser = argparse.ArgumentParser(prog=f"bckd {name}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return run_handler(handler, args)
