"""The driver side of a training job: check inputs, start Ray Train, track the run in MLflow.

``run_job(JobSpec(...))`` (the spec and :func:`~bckd.config.spec.prepare`'s checks:
:mod:`bckd.config.spec`) is what ``bckd train`` and ``python -m jobs.train`` call:

1. load the config with checked overrides, make its paths absolute, check the data set and (for
   distillation) that the teacher checkpoint loads into the teacher config;
2. attach to the Ray cluster (``--address`` / ``RAY_ADDRESS``) or start a local one, and check it
   can ever place the workers;
3. open the MLflow run (a submitted job: the run the service created, and no other; at a
   terminal a rerun with the same name reopens the same run), print
   ``bckd: mlflow_run_id=<id>``, write ``<work_dir>/run.json``, log params, tags and the
   resolved config as ``config.json`` (data: nothing reads a ``.py`` back);
4. run a ``TorchTrainer`` whose workers call :func:`bckd.runtime.worker.train_worker`; Ray keeps
   the checkpoints under ``<storage>/<ray name>/`` and resumes from the latest after a worker
   failure (``max_failures``) or when the same name is run again;
5. write ``final.pth`` and ``best.pth`` (student weights only) into the work dir, log them, and
   end the run FINISHED, FAILED or KILLED (SIGINT/SIGTERM; one before training began ends the
   job at once, with nothing to checkpoint).

Checkpoint settings and exports are :mod:`bckd.runtime.ray_checkpoints`, the stop signals
:mod:`bckd.runtime.signals`; this module is the order of the steps.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bckd.config.spec import JobResult, JobSpec, prepare

__all__ = ["run_job"]

RAY_RUN_NAME = "ray_train"  # checkpoints: <work_dir>/ray_train/checkpoint_iter_*/
# Ray Train's controller polls its workers every this many seconds (Ray's default 2.0). A job's
# end waits for two polls (the last report, then the workers' return): at 0.5 each job ended
# about 3 s sooner in paired runs (docs/JOBS.md), and a report or a dead worker is seen sooner.
# Read by fit(), which passes it on to the controller; an operator's own value wins.
POLL_ENV, POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"


# What a run is, beside its config; a config leaf of the same name would be a second value.
RUN_PARAMS = ("method", "teacher", "student", "dataset", "world_size")


def _run_params(cfg, info, world_size: int) -> dict[str, Any]:
    """MLflow params: every config leaf under its own dotted key (the name an override, a sweep
    space and the REST API give it: ``model.loss_distill_cls.loss_weight``), plus
    :data:`RUN_PARAMS`. Raises ``ValueError`` when a top-level config key takes one of those."""
    from bckd.config.run_info import flatten_config

    params: dict[str, Any] = dict(flatten_config(cfg._cfg_dict))
    taken = sorted(set(RUN_PARAMS) & set(params))
    if taken:
        raise ValueError(f"config keys {taken} are names the job logs itself to MLflow "
                         f"({', '.join(RUN_PARAMS)}); rename them")
    params.update({"method": info.method, "teacher": info.teacher or "none",
                   "student": info.student, "dataset": info.dataset, "world_size": world_size})
    return params


def run_job(spec: JobSpec) -> JobResult:
    """Run one training job to its end; see the module docstring for the steps."""
    from bckd.runtime.signals import NOTHING_TO_SAVE, JobStopped, stop_raises
    from bckd.tracking.runs import RunWriter, write_run_json

    start = time.monotonic()
    opened: dict[str, Any] = {}  # what _run has opened and done so far, for a stop
    try:
        with stop_raises():
            return _run(spec, opened, start)
    except Exception as err:
        if (stop := _stop_in(err, JobStopped)) is None:
            raise
        when = "after training" if opened.get("trained") else NOTHING_TO_SAVE
        print(f"bckd: received {stop} {when}; the run ends KILLED", flush=True)
        if "run_id" in opened:
            RunWriter(opened["tracking_uri"], opened["run_id"]).terminate("KILLED")
            write_run_json(opened["work_dir"], mlflow_run_id=opened["run_id"], status="KILLED")
        name = opened.get("name", spec.name or Path(spec.config).stem)
        return JobResult(name, str(opened.get("work_dir", "")), opened.get("run_id", ""),
                         "KILLED", wall_s=time.monotonic() - start)


def _stop_in(err: BaseException | None, kind: type) -> BaseException | None:
    """The ``kind`` (JobStopped) that ``err`` is or was raised from: a signal that lands inside
    MLflow's database session comes back as the MlflowException MLflow raises from it."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kind):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _run(spec: JobSpec, opened: dict[str, Any], start: float) -> JobResult:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from bckd.config.loader import CONFIG_JSON, write_config_json
    from bckd.config.run_info import describe_run
    from bckd.runtime.cluster import WorkerResources, connect_for, disconnect
    from bckd.runtime.ray_checkpoints import checkpoint_policy, export_results, snapshot_exists
    from bckd.runtime.signals import fit_with_signals
    from bckd.runtime.stop import StopFlag
    from bckd.runtime.worker import WorkerJob, train_worker
    from bckd.tracking.login import tracking_login
    from bckd.tracking.runs import (
        OWNER_TAG,
        RunWriter,
        default_tracking_uri,
        open_owned_run,
        open_run,
        read_run_json,
        run_to_reopen,
        write_run_json,
    )

    job = prepare(spec)
    cfg, name, work_dir = job.cfg, job.name, job.work_dir
    opened.update(name=name, work_dir=work_dir)
    info = describe_run(cfg)
    params = _run_params(cfg, info, spec.num_workers)  # before Ray and MLflow: it can refuse
    tracking_uri = default_tracking_uri(work_dir.parent, cfg.get("mlflow_tracking_uri"))
    tags = {"method": info.method, "teacher": info.teacher or "none", "student": info.student,
            "dataset": info.dataset, "bckd.job_name": name, **spec.tags}
    if spec.run_id is not None:
        # the run the service made for this job, before Ray: a job whose run is missing or
        # another owner's never starts (RunRefused)
        run_id = open_owned_run(tracking_uri, spec.run_id, spec.tags.get(OWNER_TAG, ""), tags)
        opened.update(run_id=run_id, tracking_uri=tracking_uri)

    resources = WorkerResources(spec.num_workers, spec.cpus_per_worker, spec.gpus_per_worker)
    started_cluster = connect_for(resources, spec.address, spec.local_num_cpus,
                                  spec.capacity_timeout_s)
    try:
        storage = spec.storage_path or str(work_dir)
        ray_name = name if spec.storage_path else RAY_RUN_NAME
        resuming = snapshot_exists(storage, ray_name)
        if spec.run_id is None:  # at a terminal: a rerun of the name reopens its run
            run_id = open_run(tracking_uri, spec.experiment, name, tags,
                              run_id=run_to_reopen(read_run_json(work_dir) or {}, resuming))
            opened.update(run_id=run_id, tracking_uri=tracking_uri)
        print(f"bckd: mlflow_run_id={run_id}", flush=True)
        write_run_json(work_dir, mlflow_run_id=run_id, experiment=spec.experiment, name=name,
                       tracking_uri=tracking_uri, status="RUNNING", path=str(work_dir),
                       storage=f"{storage.rstrip('/')}/{ray_name}")
        writer = RunWriter(tracking_uri, run_id)
        writer.log_params(params)
        writer.set_tags({"bckd.resumed_from_checkpoint": str(resuming).lower()})
        writer.log_artifact(write_config_json(cfg, work_dir / CONFIG_JSON))

        policy = checkpoint_policy(cfg)
        stop_flag = StopFlag.remote()
        os.environ.setdefault(POLL_ENV, POLL_S)
        worker_job = WorkerJob(
            cfg=cfg, tracking_uri=tracking_uri, mlflow_run_id=run_id,
            tracking_login=tracking_login(),
            cwd=os.getcwd(), use_gpu=resources.use_gpu,
            progress_interval=spec.progress_interval,
            checkpoint={k: policy[k] for k in ("score_key", "score_rule", "interval")},
            stop_flag=stop_flag)
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={"job": worker_job},
            torch_config=TorchConfig(backend="nccl" if resources.use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=spec.num_workers, use_gpu=resources.use_gpu,
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
        status, fit = fit_with_signals(trainer, stop_flag, writer, work_dir, spec.stop_grace_s)
        opened["trained"] = True  # a signal from here on comes while the results are exported
        if spec.stop_requested is not None and spec.stop_requested():
            status = "KILLED"  # the fit failed because it was stopped: not a failure of the job
        result = JobResult(name, str(work_dir), run_id, status, wall_s=0.0)
        if fit.error is not None:
            result.status = "FAILED" if status != "KILLED" else status
            result.error = f"{type(fit.error).__name__}: {fit.error}"
        elif fit.result is not None:
            export_results(result, fit.result, policy, writer, work_dir)
            if (fit.result.return_value or {}).get("stopped"):
                result.status = "KILLED"
        writer.terminate(result.status)
        write_run_json(work_dir, status=result.status, final_checkpoint=result.final_checkpoint,
                       best_checkpoint=result.best_checkpoint, error=result.error)
        result.wall_s = time.monotonic() - start
        return result
    finally:
        disconnect(started_cluster)
