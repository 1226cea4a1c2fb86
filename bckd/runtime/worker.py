"""The per-worker training function that Ray Train runs on every rank.

It reads its job at the top, builds an mmengine ``Runner`` on the process group Ray Train has
already created (``launcher='pytorch'`` reuses it; a single worker trains without DDP), resumes
from the checkpoint Ray hands back after a restart or a rerun, trains, and returns from rank 0
what each rank saw.
"""

from __future__ import annotations

import copy
import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["WorkerJob", "build_runner", "train_worker"]


@dataclass
class WorkerJob:
    """What the driver sends each worker (pickled into ``train_loop_config``)."""

    cfg: object  # mmengine Config, paths already absolute
    tracking_uri: str
    mlflow_run_id: str
    tracking_login: dict = field(default_factory=dict)  # bckd.tracking.login.tracking_login
    cwd: str | None = None  # the driver's working directory, used when it exists on this node
    use_gpu: bool = False
    progress_interval: int = 10
    figure3_images: int = 2
    checkpoint: dict = field(default_factory=dict)  # score_key, score_rule, interval
    stop_flag: object = None  # a StopFlag actor handle: graceful stop on the driver's signal


def _set_dist_env() -> None:
    """mmengine reads these; Ray Train sets up the process group but not all of them."""
    import ray.train

    ctx = ray.train.get_context()
    os.environ.setdefault("RANK", str(ctx.get_world_rank()))
    os.environ.setdefault("WORLD_SIZE", str(ctx.get_world_size()))
    os.environ.setdefault("LOCAL_RANK", str(ctx.get_local_rank()))
    os.environ.setdefault("LOCAL_WORLD_SIZE", str(ctx.get_local_world_size()))


def _ddp_wrapper_cfg(job: WorkerJob, cfg) -> dict:
    """mmengine's default DDP wrapper passes device_ids=[LOCAL_RANK], which DDP rejects for CPU
    modules; on GPU, Ray Train has already selected this worker's device."""
    if job.use_gpu:
        import ray.train.torch

        device_ids = [ray.train.torch.get_device().index]
    else:
        device_ids = None
    return dict(type="MMDistributedDataParallel", device_ids=device_ids, broadcast_buffers=False,
                find_unused_parameters=cfg.get("find_unused_parameters", False))


def _prepare_cfg(job: WorkerJob, resume_from: str | None, world_size: int):
    cfg = copy.deepcopy(job.cfg)
    if world_size > 1:
        cfg.launcher = "pytorch"  # reuses the process group Ray Train made
        cfg.model_wrapper_cfg = _ddp_wrapper_cfg(job, cfg)
    else:
        # One worker has no gradients to average: without DDP's wrapper its step skips the
        # copies into and out of the gradient buckets (a few % of a CPU step, measured in
        # benchmarks/README.md). mmengine still reads rank 0 of 1 from the process group.
        cfg.launcher = "none"
    # Checkpoints go through Ray (RayCheckpointHook), not mmengine's CheckpointHook.
    cfg.default_hooks = dict(cfg.get("default_hooks", {}), checkpoint=None)
    evaluator = cfg.get("val_evaluator")
    if isinstance(evaluator, dict) and evaluator.get("type") == "CocoMetric":
        evaluator["outfile_prefix"] = str(Path(cfg.work_dir) / "eval" / "coco")
    if resume_from is not None:
        cfg.resume = True
        cfg.load_from = resume_from
    else:
        cfg.resume = False
    return cfg


def _allow_list_checkpoints(runner, own: bool) -> None:
    """Run mmengine's checkpoint load with the allow-list the checkpoint's origin deserves.

    mmengine 0.10.7 loads with ``torch.load(weights_only=True)``; resuming from the job's own
    Ray checkpoint needs its HistoryBuffer (and ``getattr``) allow-listed on torch >= 2.6. A
    ``load_from`` checkpoint a request named gets only the weights allow-list.
    """
    from bckd.checkpoint import mmengine_safe_globals, weights_safe_globals

    load_or_resume = runner.load_or_resume
    allow = mmengine_safe_globals if own else weights_safe_globals

    def guarded() -> None:
        with allow():
            load_or_resume()

    runner.load_or_resume = guarded  # Runner.train calls it once, on this instance


def build_runner(job: WorkerJob, resume_from: str | None = None):
    """An mmengine Runner for this rank with the MLflow, Ray, progress and audit hooks."""
    import ray.train
    from mmengine.runner import Runner

    from bckd.config.registries import init_registries
    from bckd.runtime import faults
    from bckd.runtime.hooks import (
        MLflowLoggerHook,
        ProgressHook,
        RayCheckpointHook,
        ShardAuditHook,
        StopHook,
    )

    cfg = _prepare_cfg(job, resume_from, ray.train.get_context().get_world_size())
    init_registries(cfg)
    runner = Runner.from_cfg(cfg)
    _allow_list_checkpoints(runner, own=resume_from is not None)
    # No "resumed" flag: a worker restarted before the first checkpoint has no resume_from, yet
    # its run holds the first attempt's steps; the hook asks MLflow which steps it has.
    runner.register_hook(MLflowLoggerHook(
        job.tracking_uri, job.mlflow_run_id, flush_interval=job.progress_interval,
        eval_prefix=cfg.get("val_evaluator", {}).get("outfile_prefix"),
        figure3_images=job.figure3_images))
    checkpointer = RayCheckpointHook(**job.checkpoint)
    runner.register_hook(checkpointer)
    if job.stop_flag is not None:
        runner.register_hook(StopHook(job.stop_flag, job.progress_interval,
                                      report=checkpointer.report_mid_epoch))
    runner.register_hook(ProgressHook(job.progress_interval))
    audit = ShardAuditHook()
    runner.register_hook(audit)
    if faults.armed():  # tests only: BCKD_FAULT kills rank 0 at a chosen point (faults.py)
        runner.register_hook(faults.FaultHook())
    return runner, audit


def train_worker(config: dict) -> dict:
    """Ray Train entry point: ``config = {"job": WorkerJob}``. Returns (on rank 0) per-rank
    ``{rank, node_id, host, pid, params_sha256, resumed_from, seen: {epoch: [img_id, ...]},
    ddp}`` (``ddp``: whether the model trained inside a DDP wrapper)."""
    import ray.train
    import torch.distributed as dist
    from mmengine.model import is_model_wrapper

    from bckd.runtime.hooks import CHECKPOINT_FILE, node_identity, params_sha256
    from bckd.runtime.stop import StopRequested
    from bckd.tracking.login import use_tracking_login

    job: WorkerJob = config["job"]
    if job.cwd and os.path.isdir(job.cwd):
        os.chdir(job.cwd)
    _set_dist_env()
    use_tracking_login(job.tracking_login)  # rank 0's MLflow hook logs with it

    with ExitStack() as stack:
        resume_from = None
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            directory = stack.enter_context(checkpoint.as_directory())
            resume_from = str(Path(directory) / CHECKPOINT_FILE)
        runner, audit = build_runner(job, resume_from)
        stopped = False
        try:
            runner.train()
        except StopRequested:
            stopped = True

    mine = {"rank": runner.rank, **node_identity(), "params_sha256": params_sha256(runner.model),
            "resumed_from": resume_from, "seen": audit.seen,
            "ddp": is_model_wrapper(runner.model)}
    everyone: list = [None] * runner.world_size
    if dist.is_initialized() and runner.world_size > 1:
        dist.all_gather_object(everyone, mine)
    else:
        everyone = [mine]
    return {"ranks": everyone, "stopped": stopped}
