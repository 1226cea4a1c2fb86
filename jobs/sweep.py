"""Sweep a distillation config's loss weights (or any config keys) with Ray Tune, in MLflow.

    bckd train configs/synth/gfl_teacher.py                     # the teacher the sweep distills
    bckd sweep configs/synth/bckd_gfl.py --num-samples 8        # the BCKD weights; ASHA
    bckd sweep configs/synth/bckd_gfl.py --num-samples 16 --search optuna --search-space my.yaml
    python -m jobs.sweep configs/synth/bckd_gfl.py --num-samples 3 --name sweep_gfl
    python -m jobs.sweep --spec JOB.json                        # a job file the service wrote

Each trial is one `bckd train` job; its MLflow run nests under the sweep's parent run. Running
the same --name again restores the sweep (finished trials kept, unfinished ones resumed).
See docs/SWEEPS.md for the search-space file format.
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

    parser.add_argument("config", nargs="?", help="mmengine/mmdet config file (a BCKD config "
                        "for the default search space)")
    parser.add_argument("--spec", default=None, metavar="FILE",
                        help="a job file written by the service: config, typed overrides, "
                        "resources, trials, name and roots (instead of CONFIG and its options)")
    parser.add_argument("--num-samples", type=int, default=8,
                        help="trials sampled from the space (times each grid point) (8)")
    parser.add_argument("--search-space", default=None, metavar="FILE",
                        help="YAML/JSON {config key: distribution}; default: "
                        "model.loss_distill_cls.loss_weight loguniform[0.25, 4], "
                        "model.loss_distill_loc.loss_weight loguniform[0.5, 8], "
                        "model.loss_distill_cls.beta in {0.5, 1, 2}")
    parser.add_argument("--scheduler", choices=("asha", "fifo"), default="asha",
                        help="asha stops weak trials early; fifo runs every trial to the end")
    parser.add_argument("--search", choices=("random", "optuna"), default="random",
                        help="how trials are sampled (random)")
    parser.add_argument("--max-concurrent", type=int, default=None, metavar="K",
                        help="trials at once (default: as many as the cluster fits)")
    parser.add_argument("--metric", default="coco/bbox_mAP",
                        help="val metric to optimize (coco/bbox_mAP)")
    parser.add_argument("--mode", choices=("max", "min"), default="max", help="(max)")
    parser.add_argument("--name", default=None,
                        help="sweep name (default: sweep_<config stem>); the same name again "
                        "restores the sweep")
    add_resource_arguments(parser, "each trial's run")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        metavar="KEY=VALUE", help="override existing config keys in every trial")
    parser.add_argument("--experiment", default="bckd", help="MLflow experiment (bckd)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (default: RAY_ADDRESS, else a local cluster)")
    parser.add_argument("--work-dir", default=None, help="default: work_dirs/<name>")
    parser.add_argument("--grace-period", type=int, default=1,
                        help="ASHA: epochs before a trial can be stopped (1)")
    parser.add_argument("--reduction-factor", type=float, default=2.0,
                        help="ASHA: keep the best 1/rf of trials at each rung (2)")
    parser.add_argument("--seed", type=int, default=None, help="search algorithm seed")
    parser.add_argument("--progress-interval", type=int, default=10,
                        help="iterations between a trial's progress lines and MLflow writes (10)")


def _spec(args: argparse.Namespace):
    from bckd.tune.spec import SweepSpec

    fields, job = spec_fields(args)
    return SweepSpec(
        num_samples=job.num_samples if job is not None else args.num_samples,
        search_space=args.search_space, scheduler=args.scheduler, search=args.search,
        max_concurrent=args.max_concurrent, metric=args.metric, mode=args.mode,
        address=args.address, grace_period=args.grace_period,
        reduction_factor=args.reduction_factor, seed=args.seed,
        progress_interval=args.progress_interval, **fields)


def run(args: argparse.Namespace) -> int:
    from bckd.tune.sweep import run_sweep

    result = run_sweep(_spec(args))
    print(f"bckd: sweep {result.name} {result.status} in {result.wall_s:.0f} s; "
          f"mlflow_run_id={result.parent_run_id}; best_run_id={result.best_run_id}", flush=True)
    if result.status == "FAILED":
        print("bckd: error: every trial failed; see the trials' runs", file=sys.stderr)
        return 1
    return 0 if result.status == "FINISHED" else 130


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``bckd sweep`` on the CLI's subparsers."""
    summary = "sweep loss weights (or any config keys) with Ray Tune, nested in MLflow"
    return add_command(sub, "sweep", summary, __doc__, _arguments, run)


def main(argv: Sequence[str] | None = None) -> int:
    return run_module("sweep", __doc__, _arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
