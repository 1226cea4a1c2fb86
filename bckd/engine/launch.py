"""The driver side of a training job: check inputs, start Ray Train, track the run in MLflow.

``run_job(JobSpec(...))`` is what ``bckd train`` and ``python -m jobs.train`` call:

1. load the config with checked overrides, make its paths absolute, check the data set and (for
   distillation) that the teacher checkpoint loads into the teacher config;
2. attach to the Ray cluster (``--address`` / ``RAY_ADDRESS``) or start a local one, and check it
   can ever place the workers;
3. open the MLflow run (a rerun with the same name reopens the same run), print
   ``bckd: mlflow_run_id=<id>``, write ``<work_dir>/run.json``, log params, tags and the config;
4. run a ``TorchTrainer`` whose workers call :func:`bckd.engine.worker.train_worker`; Ray keeps
   the checkpoints under ``<storage>/<ray name>/`` and resumes from the latest after a worker
   failure (``max_failures``) or when the same name is run again;
5. write ``final.pth`` and ``best.pth`` (student weights only) into the work dir, log them, and
   end the run FINISHED, FAILED or KILLED (SIGINT/SIGTERM).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["JobResult", "JobSpec", "prepare", "run_job"]

RAY_RUN_NAME = "ray_train"  # checkpoints: <work_dir>/ray_train/checkpoint_iter_*/


@dataclass
class JobSpec:
    config: str
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    cfg_options: dict[str, Any] = field(default_factory=dict)
    experiment: str = "bckd"
    name: str | None = None  # default: the config file's stem
    address: str | None = None  # default: RAY_ADDRESS, else a new local cluster
    work_dir: str | None = None  # default: work_dirs/<name>
    storage_path: str | None = None  # shared path or s3:// URI for multi-node; default work_dir
    max_failures: int = 0
    progress_interval: int = 10  # iterations between console lines and MLflow writes
    stop_grace_s: float = 60.0  # after SIGINT/SIGTERM, time for the workers to checkpoint
    local_num_cpus: int | None = None  # CPUs of a local cluster this job starts (default: all)
    tags: dict[str, str] = field(default_factory=dict)  # extra MLflow run tags (sweep parent)
    callbacks: list = field(default_factory=list)  # ray.train UserCallbacks (Tune reporting)
    stop_requested: Any = None  # () -> bool: stopped from outside (a Tune scheduler): KILLED
    policy: Any = None  # bckd.engine.policy.ConfigPolicy of a submitted job; None at a terminal


@dataclass
class JobResult:
    name: str
    work_dir: str
    mlflow_run_id: str
    status: str  # FINISHED, FAILED or KILLED
    final_checkpoint: str | None = None
    best_checkpoint: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # of the latest checkpoint
    ranks: list[dict] = field(default_factory=list)  # per rank: node, params hash, images seen
    error: str | None = None
    wall_s: float = 0.0


@dataclass
class Prepared:
    cfg: Any
    name: str
    work_dir: Path


def prepare(spec: JobSpec) -> Prepared:
    """Everything that can fail on bad input, before Ray or MLflow are touched."""
    from bckd.engine.config import check_dataset, check_teacher, load_config, resolve_paths

    cfg = load_config(spec.config, spec.cfg_options, spec.policy)
    name = spec.name or Path(spec.config).stem
    if not name or "/" in name:
        raise ValueError(f"--name must be a plain name, got {name!r}")
    work_dir = Path(spec.work_dir or Path("work_dirs") / name).resolve()
    cfg.work_dir = str(work_dir)
    # relative paths resolve where the policy resolved them (the service's project root)
    roots = spec.policy.roots if spec.policy is not None else None
    resolve_paths(cfg, roots.base if roots is not None else None)
    if cfg.get("train_cfg", {}).get("type", "EpochBasedTrainLoop") != "EpochBasedTrainLoop":
        raise ValueError("jobs train with mmengine's EpochBasedTrainLoop; the config has "
                         f"train_cfg.type={cfg.train_cfg.get('type')!r}")
    check_dataset(cfg)
    check_teacher(cfg)
    return Prepared(cfg, name, work_dir)


def _checkpoint_policy(cfg) -> dict:
    """Keep-N and best metric from the config's mmengine CheckpointHook settings."""
    hook = (cfg.get("default_hooks") or {}).get("checkpoint") or {}
    save_best = hook.get("save_best")
    if isinstance(save_best, (list, tuple)):
        save_best = save_best[0] if save_best else None
    if save_best == "auto":
        save_best = "coco/bbox_mAP"
    rule = hook.get("rule") or "greater"
    rule = rule[0] if isinstance(rule, (list, tuple)) else rule
    keep = hook.get("max_keep_ckpts", -1)
    return {
        "score_key": save_best,
        "score_rule": rule,
        "interval": int(hook.get("interval", 1)),
        "num_to_keep": keep if keep and keep > 0 else None,
    }


def _snapshot_exists(storage: str, ray_name: str) -> bool:
    if "://" in storage:
        import pyarrow.fs

        fs, path = pyarrow.fs.FileSystem.from_uri(storage.rstrip("/") + f"/{ray_name}")
        info = fs.get_file_info(f"{path}/checkpoint_manager_snapshot.json")
        return info.type != pyarrow.fs.FileType.NotFound
    return (Path(storage) / ray_name / "checkpoint_manager_snapshot.json").is_file()


def _export_student(checkpoint, path: Path) -> str:
    """Write the student weights (and epoch/iter meta) of a Ray checkpoint to ``path``."""
    import torch

    from bckd.checkpoint import mmengine_safe_globals
    from bckd.engine.hooks import CHECKPOINT_FILE

    with checkpoint.as_directory() as directory, mmengine_safe_globals():
        full = torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu",
                          weights_only=True)
    meta = {k: full["meta"][k] for k in ("epoch", "iter", "dataset_meta") if k in full["meta"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": meta, "state_dict": full["state_dict"]}, path)
    return str(path)


def _run_params(cfg, info, world_size: int) -> dict[str, Any]:
    from bckd.engine.config import flatten_config

    params: dict[str, Any] = {f"cfg.{k}": v for k, v in flatten_config(cfg._cfg_dict).items()}
    params.update({"method": info.method, "teacher": info.teacher or "none",
                   "student": info.student, "dataset": info.dataset, "world_size": world_size,
                   "seed": (cfg.get("randomness") or {}).get("seed")})
    params.update({f"loss_weight.{k}": v for k, v in info.loss_weights.items()})
    return params


class _Fit(threading.Thread):
    """``trainer.fit()`` off the main thread, so the main thread can handle SIGINT/SIGTERM
    (Ray only installs its own SIGINT handler when ``fit`` runs on the main thread)."""

    def __init__(self, trainer) -> None:
        super().__init__(name="bckd-fit", daemon=True)
        self.trainer = trainer
        self.result = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.trainer.fit()
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            self.error = err


def run_job(spec: JobSpec) -> JobResult:
    """Run one training job to its end; see the module docstring for the steps."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from bckd.engine.cluster import WorkerResources, check_resources, connect
    from bckd.engine.config import describe_run
    from bckd.engine.stop import StopFlag
    from bckd.engine.tracking import (
        RunWriter,
        default_tracking_uri,
        open_run,
        read_run_json,
        write_run_json,
    )
    from bckd.engine.worker import WorkerJob, train_worker

    start = time.monotonic()
    job = prepare(spec)
    cfg, name, work_dir = job.cfg, job.name, job.work_dir
    info = describe_run(cfg)

    started_cluster = connect(spec.address, spec.local_num_cpus)
    try:
        resources = WorkerResources(spec.num_workers, spec.cpus_per_worker, spec.use_gpu)
        check_resources(resources)

        storage = spec.storage_path or str(work_dir)
        ray_name = name if spec.storage_path else RAY_RUN_NAME
        resuming = _snapshot_exists(storage, ray_name)
        tracking_uri = default_tracking_uri(work_dir.parent, cfg.get("mlflow_tracking_uri"))
        previous = read_run_json(work_dir) or {}
        tags = {"method": info.method, "teacher": info.teacher or "none",
                "student": info.student, "dataset": info.dataset, "bckd.job_name": name,
                **spec.tags}
        run_id = open_run(tracking_uri, spec.experiment, name, tags,
                          run_id=previous.get("mlflow_run_id") if resuming else None)
        resumed_mlflow = resuming and run_id == previous.get("mlflow_run_id")
        print(f"bckd: mlflow_run_id={run_id}", flush=True)
        write_run_json(work_dir, mlflow_run_id=run_id, experiment=spec.experiment, name=name,
                       tracking_uri=tracking_uri, status="RUNNING", path=str(work_dir),
                       storage=f"{storage.rstrip('/')}/{ray_name}")
        writer = RunWriter(tracking_uri, run_id)
        writer.log_params(_run_params(cfg, info, spec.num_workers))
        writer.set_tags({"bckd.resumed_from_checkpoint": str(resuming).lower()})
        config_file = work_dir / "config.py"
        cfg.dump(str(config_file))
        writer.log_artifact(config_file)

        policy = _checkpoint_policy(cfg)
        stop_flag = StopFlag.remote()
        worker_job = WorkerJob(
            cfg=cfg, tracking_uri=tracking_uri, mlflow_run_id=run_id,
            mlflow_resumed=resumed_mlflow, cwd=os.getcwd(), use_gpu=spec.use_gpu,
            progress_interval=spec.progress_interval,
            checkpoint={k: policy[k] for k in ("score_key", "score_rule", "interval")},
            stop_flag=stop_flag)
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={"job": worker_job},
            torch_config=TorchConfig(backend="nccl" if spec.use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=spec.num_workers, use_gpu=spec.use_gpu,
                                         resources_per_worker=resources.per_worker()),
            run_config=RunConfig(
                name=ray_name,
                storage_path=storage,
                callbacks=list(spec.callbacks),
                failure_config=FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=CheckpointConfig(
                    num_to_keep=policy["num_to_keep"],
                    checkpoint_score_attribute=policy["score_key"],
                    checkpoint_score_order="max" if policy["score_rule"] == "greater" else "min",
                ),
            ),
        )
        status, fit = _fit_with_signals(trainer, stop_flag, writer, work_dir, spec.stop_grace_s)
        if spec.stop_requested is not None and spec.stop_requested():
            status = "KILLED"  # the fit failed because it was stopped: not a failure of the job
        result = JobResult(name, str(work_dir), run_id, status, wall_s=0.0)
        if fit.error is not None:
            result.status = "FAILED" if status != "KILLED" else status
            result.error = f"{type(fit.error).__name__}: {fit.error}"
        elif fit.result is not None:
            _finish(result, fit.result, policy, writer, work_dir)
            if (fit.result.return_value or {}).get("stopped"):
                result.status = "KILLED"
        writer.terminate(result.status)
        write_run_json(work_dir, status=result.status, final_checkpoint=result.final_checkpoint,
                       best_checkpoint=result.best_checkpoint, error=result.error)
        result.wall_s = time.monotonic() - start
        return result
    finally:
        if started_cluster:
            ray.shutdown()


def _finish(result: JobResult, ray_result, policy: dict, writer, work_dir: Path) -> None:
    result.metrics = dict(ray_result.metrics or {})
    result.ranks = (ray_result.return_value or {}).get("ranks", [])
    if (ray_result.return_value or {}).get("stopped") or ray_result.checkpoint is None:
        return
    result.final_checkpoint = _export_student(ray_result.checkpoint, work_dir / "final.pth")
    best = None
    if policy["score_key"]:
        best = _best_checkpoint(ray_result, policy["score_key"], policy["score_rule"])
    result.best_checkpoint = _export_student(best or ray_result.checkpoint,
                                             work_dir / "best.pth")
    writer.log_artifact(result.final_checkpoint, "checkpoints")
    writer.log_artifact(result.best_checkpoint, "checkpoints")


def _best_checkpoint(ray_result, key: str, rule: str):
    """The kept checkpoint with the best ``key``, or None.

    Not ``Result.get_best_checkpoint``: it reads ``coco/bbox_mAP`` as a nested key (``coco`` ->
    ``bbox_mAP``), which the flat metrics of a restored checkpoint manager (a rerun of a
    finished run) do not have, and then raises.
    """
    scored = [(ckpt, metrics[key]) for ckpt, metrics in ray_result.best_checkpoints or []
              if isinstance(metrics.get(key), int | float)]
    if not scored:
        return None
    pick = max if rule == "greater" else min
    return pick(scored, key=lambda pair: pair[1])[0]


def _fit_with_signals(trainer, stop_flag, writer, work_dir: Path, grace_s: float):
    """Run ``trainer.fit()``; on SIGINT/SIGTERM end the MLflow run KILLED at once (the job
    supervisor may SIGKILL a few seconds later), then ask the workers to checkpoint and stop,
    waiting up to ``grace_s``. A second signal exits immediately."""
    from bckd.engine.tracking import write_run_json

    fit = _Fit(trainer)
    stopping: list[float] = []

    def on_signal(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
        if stopping:
            print("bckd: second stop signal, exiting now", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        stopping.append(time.monotonic())
        print(f"bckd: received {signal.Signals(signum).name}: the run ends KILLED; asking the "
              f"workers to checkpoint (up to {grace_s:.0f} s)", file=sys.stderr, flush=True)
        writer.terminate("KILLED")
        write_run_json(work_dir, status="KILLED")
        stop_flag.set.remote()

    in_main = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        fit.start()
        while fit.is_alive():
            fit.join(timeout=0.5)
            if stopping and time.monotonic() - stopping[0] > grace_s:
                print("bckd: workers did not stop in time", file=sys.stderr, flush=True)
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return ("KILLED" if stopping else "FINISHED"), fit
