"""The driver side of a sweep: check everything, run the trials with Ray Tune, summarize in MLflow.

``run_sweep(SweepSpec(...))`` is what ``bckd sweep`` and ``python -m jobs.sweep`` call:

1. parse the search space (a file, else the paper's two loss weights and BCDL's beta) and
   check it against the config, with the checks of a single job (config, overrides, data set,
   teacher): a bad entry fails here, before Ray, MLflow or any trial starts;
2. attach to (or start) the Ray cluster and check it can ever place one trial's workers; by
   default run as many trials at once as the cluster fits;
3. open the parent MLflow run (reopened when the sweep is restarted), with the search space,
   scheduler and search algorithm;
4. run the ``Tuner`` (``Tuner.restore`` when ``<sweep_dir>/tune`` holds an earlier state of this
   sweep: finished trials are kept, unfinished ones resume from their last checkpoint); each
   trial is :func:`bckd.tune.trial.run_trial`, a job whose MLflow run nests under the parent;
5. log the best trial (its id, child run, config and metric) and the weight-vs-metric plot to
   the parent, end every child that is still RUNNING, and end the parent.

Trial drivers hold no CPU (a little ``memory`` only: Tune needs some resource per trial), so
the CPUs of the cluster go to the trials' Ray Train workers, which Tune does not see; the
number of trials at once is therefore capped with ``max_concurrent_trials``.

The spec is :mod:`bckd.tune.spec`, the search and scheduler :mod:`bckd.tune.search`, step 5
:mod:`bckd.tune.summary`; this module is the order of the steps.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bckd.tune.spec import SweepResult, SweepSpec, check_spec

__all__ = ["run_sweep"]

TUNE_DIR = "tune"  # <sweep_dir>/tune: Tune's experiment state (what Tuner.restore reads)


def _trials_that_fit(resources) -> int:
    """How many trials' worker groups the nodes up now hold at once (>= 1 once waited for)."""
    from bckd.runtime.cluster import ResourceError, check_resources, cluster_capacity

    capacity, count = cluster_capacity(), 1
    while count < 256:
        more = replace(resources, num_workers=resources.num_workers * (count + 1))
        try:
            if not check_resources(more, capacity):
                break
        except ResourceError:
            break
        count += 1
    return count


def _parent_params(spec: SweepSpec, params: tuple, max_concurrent: int,
                   max_epochs: int) -> dict[str, Any]:
    out: dict[str, Any] = {f"space.{p.key}": p.describe() for p in params}
    out.update({"config": spec.config, "num_samples": spec.num_samples,
                "scheduler": spec.scheduler, "search": spec.search, "metric": spec.metric,
                "mode": spec.mode, "max_concurrent": max_concurrent, "max_epochs": max_epochs,
                "num_workers": spec.num_workers, "cpus_per_worker": spec.cpus_per_worker,
                "gpus_per_worker": spec.gpus_per_worker, "seed": spec.seed})
    if spec.scheduler == "asha":
        out.update({"asha.grace_period": spec.grace_period,
                    "asha.reduction_factor": spec.reduction_factor, "asha.time_attr": "epoch",
                    "asha.max_t": max_epochs})
    out.update({f"cfg_options.{k}": v for k, v in spec.cfg_options.items()})
    return out


def run_sweep(spec: SweepSpec) -> SweepResult:
    """Run (or restore) a sweep to its end; see the module docstring for the steps."""
    from ray import tune

    from bckd.config.spec import JobSpec, prepare
    from bckd.runtime.cluster import WorkerResources, connect_for, disconnect
    from bckd.tracking.login import tracking_login
    from bckd.tracking.runs import (
        OWNER_TAG,
        RunWriter,
        default_tracking_uri,
        open_owned_run,
        open_run,
        read_run_json,
        write_run_json,
    )
    from bckd.tune.progress import TrialTable
    from bckd.tune.search import check_search, scheduler, searcher
    from bckd.tune.space import DEFAULT_SPACE, check_space, load_space, space_json, to_tune
    from bckd.tune.summary import summarize
    from bckd.tune.tracking import ChildRunCloser
    from bckd.tune.trial import TrialBase, run_trial

    start = time.monotonic()
    check_spec(spec)
    params = load_space(spec.search_space) if spec.search_space else DEFAULT_SPACE
    shadowed = sorted({p.key for p in params} & {k.removeprefix("+") for k in spec.cfg_options})
    if shadowed:
        raise ValueError(f"--cfg-options {shadowed} also in the search space: the sweep samples "
                         "those keys; drop them from the fixed overrides or from the space")
    name = spec.name or f"sweep_{Path(spec.config).stem}"
    sweep_dir = Path(spec.work_dir or Path("work_dirs") / name).resolve()
    job = JobSpec(config=str(Path(spec.config).resolve()), num_workers=spec.num_workers,
                  gpus_per_worker=spec.gpus_per_worker, cpus_per_worker=spec.cpus_per_worker,
                  cfg_options=dict(spec.cfg_options), experiment=spec.experiment,
                  progress_interval=spec.progress_interval, tags=dict(spec.tags),
                  policy=spec.policy, max_failures=spec.max_failures,
                  capacity_timeout_s=spec.capacity_timeout_s)
    # The checks of one job (config, overrides, data, teacher), then the space against it.
    cfg = prepare(replace(job, name=name, work_dir=str(sweep_dir / "trials" / "check"))).cfg
    check_space(params, cfg)
    max_epochs = int(cfg.train_cfg.max_epochs)
    trial_scheduler = scheduler(spec, max_epochs)
    check_search(spec, params)

    resources = WorkerResources(spec.num_workers, spec.cpus_per_worker, spec.gpus_per_worker)
    # a trial that can never be placed fails here, not in Tune
    started_cluster = connect_for(resources, spec.address, spec.local_num_cpus,
                                  job.capacity_timeout_s)
    try:
        fits = _trials_that_fit(resources)
        max_concurrent = spec.max_concurrent or fits
        if max_concurrent > fits:
            print(f"bckd: --max-concurrent {max_concurrent}, but the cluster holds {fits} "
                  "trial(s) at once: the others wait for workers", flush=True)

        tune_path = sweep_dir / TUNE_DIR
        restoring = tune.Tuner.can_restore(str(tune_path))
        tracking_uri = default_tracking_uri(sweep_dir.parent, cfg.get("mlflow_tracking_uri"))
        previous = read_run_json(sweep_dir) or {}
        parent_tags = {"bckd.sweep": name, "bckd.sweep.role": "parent", **spec.tags}
        if spec.run_id is not None:  # the service's run for this sweep, checked as its owner's
            parent_id = open_owned_run(tracking_uri, spec.run_id,
                                       spec.tags.get(OWNER_TAG, ""), parent_tags)
        else:
            parent_id = open_run(tracking_uri, spec.experiment, name, parent_tags,
                                 run_id=previous.get("mlflow_run_id") if restoring else None)
        print(f"bckd: mlflow_run_id={parent_id} (parent of the trials' runs)", flush=True)
        write_run_json(sweep_dir, mlflow_run_id=parent_id, experiment=spec.experiment,
                       name=name, tracking_uri=tracking_uri, status="RUNNING",
                       path=str(sweep_dir))
        writer = RunWriter(tracking_uri, parent_id)
        writer.log_params(_parent_params(spec, params, max_concurrent, max_epochs))
        writer.set_tags({"bckd.sweep.restored": str(restoring).lower()})
        space_file = sweep_dir / "search_space.json"
        space_file.write_text(json.dumps(space_json(params), indent=2) + "\n")
        writer.log_artifact(space_file)

        base = TrialBase(job=job, sweep_name=name, sweep_dir=str(sweep_dir),
                         tracking_uri=tracking_uri, parent_run_id=parent_id, cwd=os.getcwd(),
                         tracking_login=tracking_login())
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, base=base),
            {"CPU": 0, "memory": spec.trial_memory_mb * 2**20})
        callbacks = [ChildRunCloser(tracking_uri, parent_id, max_epochs),
                     TrialTable(name, params, spec.metric, spec.mode, max_epochs)]
        if restoring:
            print(f"bckd: restoring sweep {name} from {tune_path}", flush=True)
            tuner = tune.Tuner.restore(str(tune_path), trainable=trainable,
                                       resume_unfinished=True, resume_errored=False,
                                       restart_errored=False)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=to_tune(params),
                tune_config=tune.TuneConfig(
                    metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples,
                    scheduler=trial_scheduler, search_alg=searcher(spec, max_concurrent),
                    trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(sweep_dir),
                                          callbacks=callbacks, verbose=0),
            )
        grid = tuner.fit()
        result = summarize(grid, spec, params, max_epochs, name, sweep_dir, parent_id,
                            tracking_uri, writer)
        result.restored = restoring
        write_run_json(sweep_dir, status=result.status, best_trial_id=result.best_trial_id,
                       best_run_id=result.best_run_id, best_value=result.best_value,
                       best_config=result.best_config)
        result.wall_s = time.monotonic() - start
        return result
    finally:
        disconnect(started_cluster)


def _trial_dirname(trial) -> str:
    return trial.trial_id  # Tune's default holds every swept value: too long for some paths
