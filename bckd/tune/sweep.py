"""The driver side of a sweep: check everything, run the trials with Ray Tune, summarize in MLflow.

``run_sweep(SweepSpec(...))`` is what ``bckd sweep`` and ``python -m jobs.sweep`` call:

1. parse the search space (a file, else the paper's alpha1/alpha2/beta) and check it against
   the config, with the checks of a single job (config, overrides, data set, teacher): a bad
   entry fails here, before Ray, MLflow or any trial starts;
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
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["SweepResult", "SweepSpec", "run_sweep"]

TUNE_DIR = "tune"  # <sweep_dir>/tune: Tune's experiment state (what Tuner.restore reads)
SCHEDULERS = ("asha", "fifo")
SEARCHES = ("random", "optuna")


@dataclass
class SweepSpec:
    config: str
    num_samples: int = 8  # samples of the space (times each grid point)
    search_space: str | None = None  # YAML/JSON file; default: bckd.tune.space.DEFAULT_SPACE
    scheduler: str = "asha"
    search: str = "random"
    max_concurrent: int | None = None  # default: as many trials as the cluster fits at once
    metric: str = "coco/bbox_mAP"
    mode: str = "max"
    name: str | None = None  # default: sweep_<config stem>; the same name again restores
    experiment: str = "bckd"
    address: str | None = None
    num_workers: int = 1  # per trial
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    cfg_options: dict[str, Any] = field(default_factory=dict)  # for every trial
    work_dir: str | None = None  # default: work_dirs/<name>
    grace_period: int = 1  # ASHA: epochs before a trial can be stopped
    reduction_factor: float = 2.0  # ASHA: keep the best 1/rf at each rung (4 cuts too hard
    # for the handful of trials a CPU sweep runs)
    seed: int | None = None  # of the search algorithm
    progress_interval: int = 10
    local_num_cpus: int | None = None
    trial_memory_mb: int = 256  # what a trial's driver process reserves (it holds no CPU)
    tags: dict[str, str] = field(default_factory=dict)  # on the parent and every trial's run
    policy: Any = None  # bckd.engine.policy.ConfigPolicy of a submitted sweep; None at a terminal


@dataclass
class SweepResult:
    name: str
    sweep_dir: str
    parent_run_id: str
    status: str  # FINISHED, FAILED (every trial failed) or KILLED (interrupted)
    best_trial_id: str | None = None
    best_run_id: str | None = None
    best_value: float | None = None
    best_config: dict[str, Any] = field(default_factory=dict)
    trials: list[dict] = field(default_factory=list)  # trial_id, outcome, config, best, epochs
    restored: bool = False
    wall_s: float = 0.0


def _check_spec(spec: SweepSpec) -> None:
    if spec.scheduler not in SCHEDULERS:
        raise ValueError(f"--scheduler must be one of {SCHEDULERS}, got {spec.scheduler!r}")
    if spec.search not in SEARCHES:
        raise ValueError(f"--search must be one of {SEARCHES}, got {spec.search!r}")
    if spec.mode not in ("max", "min"):
        raise ValueError(f"--mode must be max or min, got {spec.mode!r}")
    if spec.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {spec.num_samples}")
    if spec.max_concurrent is not None and spec.max_concurrent < 1:
        raise ValueError(f"--max-concurrent must be >= 1, got {spec.max_concurrent}")
    if spec.grace_period < 1 or spec.reduction_factor <= 1:
        raise ValueError("ASHA needs --grace-period >= 1 and --reduction-factor > 1, got "
                         f"{spec.grace_period} and {spec.reduction_factor}")


def _trials_that_fit(resources) -> int:
    """How many trials' worker groups the cluster can hold at once (>= 1 once checked)."""
    from bckd.engine.cluster import check_resources

    count = 1
    while count < 256:
        try:
            check_resources(replace(resources, num_workers=resources.num_workers * (count + 1)))
        except ValueError:
            break
        count += 1
    return count


def _check_search(spec: SweepSpec, params: tuple) -> None:
    if spec.search != "optuna":
        return
    if any(p.kind == "grid" for p in params):
        raise ValueError("--search optuna cannot sweep a grid entry; use choice, or --search "
                         "random")
    try:
        import optuna  # noqa: F401
    except ImportError as err:
        raise ValueError(f"--search optuna needs the optuna package ({err})") from None


def _searcher(spec: SweepSpec, max_concurrent: int):
    """Random or Optuna search, limited to ``max_concurrent`` trials at once (Tune ignores
    ``max_concurrent_trials`` for a BasicVariantGenerator passed in, so it is set here)."""
    if spec.search == "random":
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(random_state=spec.seed, max_concurrent=max_concurrent)
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    return ConcurrencyLimiter(OptunaSearch(seed=spec.seed), max_concurrent=max_concurrent)


def _scheduler(spec: SweepSpec, max_epochs: int):
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    if spec.scheduler == "fifo":
        return FIFOScheduler()
    if spec.grace_period > max_epochs:
        raise ValueError(f"--grace-period {spec.grace_period} is past the config's last epoch "
                         f"(train_cfg.max_epochs={max_epochs})")
    # Time is the epoch the job reports (it continues across a resume, unlike Tune's
    # training_iteration). stop_last_trials=False: a trial that reaches the last epoch ends
    # by itself, so its job finishes (exports its checkpoints, ends its run FINISHED) instead
    # of being killed by the scheduler at the same moment.
    return AsyncHyperBandScheduler(time_attr="epoch", max_t=max_epochs,
                                   grace_period=spec.grace_period,
                                   reduction_factor=spec.reduction_factor,
                                   stop_last_trials=False)


def _parent_params(spec: SweepSpec, params: tuple, max_concurrent: int,
                   max_epochs: int) -> dict[str, Any]:
    out: dict[str, Any] = {f"space.{p.name}": p.describe() for p in params}
    out.update({"config": spec.config, "num_samples": spec.num_samples,
                "scheduler": spec.scheduler, "search": spec.search, "metric": spec.metric,
                "mode": spec.mode, "max_concurrent": max_concurrent, "max_epochs": max_epochs,
                "num_workers": spec.num_workers, "cpus_per_worker": spec.cpus_per_worker,
                "use_gpu": spec.use_gpu, "seed": spec.seed})
    if spec.scheduler == "asha":
        out.update({"asha.grace_period": spec.grace_period,
                    "asha.reduction_factor": spec.reduction_factor, "asha.time_attr": "epoch",
                    "asha.max_t": max_epochs})
    out.update({f"cfg_options.{k}": v for k, v in spec.cfg_options.items()})
    return out


def run_sweep(spec: SweepSpec) -> SweepResult:
    """Run (or restore) a sweep to its end; see the module docstring for the steps."""
    import ray
    from ray import tune

    from bckd.engine.cluster import WorkerResources, check_resources, connect
    from bckd.engine.launch import JobSpec, prepare
    from bckd.engine.tracking import (
        RunWriter,
        default_tracking_uri,
        open_run,
        read_run_json,
        write_run_json,
    )
    from bckd.tune.progress import TrialTable
    from bckd.tune.space import DEFAULT_SPACE, check_space, load_space, space_json, to_tune
    from bckd.tune.tracking import ChildRunCloser
    from bckd.tune.trial import TrialBase, run_trial

    start = time.monotonic()
    _check_spec(spec)
    params = load_space(spec.search_space) if spec.search_space else DEFAULT_SPACE
    shadowed = sorted({p.key for p in params} & {k.removeprefix("+") for k in spec.cfg_options})
    if shadowed:
        raise ValueError(f"--cfg-options {shadowed} also in the search space: the sweep samples "
                         "those keys; drop them from the fixed overrides or from the space")
    name = spec.name or f"sweep_{Path(spec.config).stem}"
    sweep_dir = Path(spec.work_dir or Path("work_dirs") / name).resolve()
    job = JobSpec(config=str(Path(spec.config).resolve()), num_workers=spec.num_workers,
                  use_gpu=spec.use_gpu, cpus_per_worker=spec.cpus_per_worker,
                  cfg_options=dict(spec.cfg_options), experiment=spec.experiment,
                  progress_interval=spec.progress_interval, tags=dict(spec.tags),
                  policy=spec.policy)
    # The checks of one job (config, overrides, data, teacher), then the space against it.
    cfg = prepare(replace(job, name=name, work_dir=str(sweep_dir / "trials" / "check"))).cfg
    check_space(params, cfg)
    max_epochs = int(cfg.train_cfg.max_epochs)
    scheduler = _scheduler(spec, max_epochs)
    _check_search(spec, params)

    started_cluster = connect(spec.address, spec.local_num_cpus)
    try:
        resources = WorkerResources(spec.num_workers, spec.cpus_per_worker, spec.use_gpu)
        check_resources(resources)  # a trial that can never be placed fails here, not in Tune
        fits = _trials_that_fit(resources)
        max_concurrent = spec.max_concurrent or fits
        if max_concurrent > fits:
            print(f"bckd: --max-concurrent {max_concurrent}, but the cluster holds {fits} "
                  "trial(s) at once: the others wait for workers", flush=True)

        tune_path = sweep_dir / TUNE_DIR
        restoring = tune.Tuner.can_restore(str(tune_path))
        tracking_uri = default_tracking_uri(sweep_dir.parent, cfg.get("mlflow_tracking_uri"))
        previous = read_run_json(sweep_dir) or {}
        parent_id = open_run(tracking_uri, spec.experiment, name,
                             {"bckd.sweep": name, "bckd.sweep.role": "parent", **spec.tags},
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
                         tracking_uri=tracking_uri, parent_run_id=parent_id, cwd=os.getcwd())
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
                    scheduler=scheduler, search_alg=_searcher(spec, max_concurrent),
                    trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(sweep_dir),
                                          callbacks=callbacks, verbose=0),
            )
        grid = tuner.fit()
        result = _summarize(grid, spec, params, max_epochs, name, sweep_dir, parent_id,
                            tracking_uri, writer)
        result.restored = restoring
        write_run_json(sweep_dir, status=result.status, best_trial_id=result.best_trial_id,
                       best_run_id=result.best_run_id, best_value=result.best_value,
                       best_config=result.best_config)
        result.wall_s = time.monotonic() - start
        return result
    finally:
        if started_cluster:
            ray.shutdown()


def _trial_dirname(trial) -> str:
    return trial.trial_id  # Tune's default holds every swept value: too long for some paths


def _best_value(values, mode: str) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None
    return max(finite) if mode == "max" else min(finite)


def _trial_best(client, run_id: str | None, frame, metric: str, mode: str) -> float | None:
    """A trial's best metric at any epoch, from its child run's history (what the MLflow UI
    shows; it can hold one evaluation more than Tune saw, when the trial finished an epoch while
    the scheduler was stopping it), else from what the trial reported to Tune."""
    if run_id is not None:
        best = _best_value([m.value for m in client.get_metric_history(run_id, metric)], mode)
        if best is not None:
            return best
    return _best_value(frame[metric] if frame is not None and metric in frame else [], mode)


def _summarize(grid, spec: SweepSpec, params: tuple, max_epochs: int, name: str,
               sweep_dir: Path, parent_id: str, tracking_uri: str, writer) -> SweepResult:
    """Per-trial rows, best trial, the parent's tags/metrics/artifacts and its end status."""
    from mlflow.tracking import MlflowClient

    from bckd.engine.config import load_config
    from bckd.tune.plot import plot_weights
    from bckd.tune.progress import format_table
    from bckd.tune.tracking import child_runs, reconcile_children
    from bckd.tune.trial import TRIAL_TAG, outcome

    keys = [p.key for p in params]
    client = MlflowClient(tracking_uri)
    runs = {r.data.tags.get(TRIAL_TAG): r.info.run_id for r in child_runs(client, parent_id)}
    trials = []
    for trial_result in grid:
        metrics = trial_result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(trial_result.path).name
        trials.append({
            "trial_id": trial_id,
            "outcome": outcome(metrics, max_epochs, error=trial_result.error is not None),
            "config": {k: trial_result.config.get(k) for k in keys},
            "best": _trial_best(client, runs.get(trial_id), trial_result.metrics_dataframe,
                                spec.metric, spec.mode),
            "epochs": metrics.get("epoch", 0),
            "run_id": runs.get(trial_id),
            "error": None if trial_result.error is None else str(trial_result.error)[:500],
        })
    trials.sort(key=lambda t: t["trial_id"])
    unfinished = [t for t in trials if t["outcome"] == "UNFINISHED"]
    reconcile_children(tracking_uri, parent_id, {t["trial_id"]: t["outcome"] for t in trials})

    scored = [t for t in trials if t["best"] is not None]
    best = (max if spec.mode == "max" else min)(scored, key=lambda t: t["best"]) \
        if scored else None
    status = "KILLED" if unfinished else (
        "FAILED" if all(t["outcome"] == "ERROR" for t in trials) else "FINISHED")
    result = SweepResult(name, str(sweep_dir), parent_id, status, trials=trials)
    names = {p.key: p.name for p in params}
    if best is not None:
        result.best_trial_id, result.best_run_id = best["trial_id"], best["run_id"]
        result.best_value, result.best_config = best["best"], best["config"]
        writer.log_metrics({f"best/{spec.metric}": best["best"]}, step=len(trials))
        writer.set_tags({"best_trial_id": best["trial_id"], "best_run_id": best["run_id"] or "",
                         **{f"best.{names[k]}": v for k, v in best["config"].items()}})
        best_json = sweep_dir / "best_config.json"
        best_json.write_text(json.dumps(
            {"trial_id": best["trial_id"], "run_id": best["run_id"], spec.metric: best["best"],
             "cfg_options": best["config"]}, indent=2) + "\n")
        writer.log_artifact(best_json)
        best_cfg = load_config(spec.config, {**spec.cfg_options, **best["config"]}, spec.policy)
        best_cfg.dump(str(sweep_dir / "best_config.py"))
        writer.log_artifact(sweep_dir / "best_config.py")
    plot = plot_weights(trials, params, spec.metric, sweep_dir / "weights_vs_metric.png",
                        best_trial_id=result.best_trial_id)
    writer.log_artifact(plot, "plots")
    table = sweep_dir / "trials.json"
    table.write_text(json.dumps(trials, indent=2, default=str) + "\n")
    writer.log_artifact(table)
    counts = {o: sum(t["outcome"] == o for t in trials)
              for o in ("COMPLETED", "STOPPED", "ERROR", "UNFINISHED")}
    writer.log_metrics({f"trials/{o.lower()}": n for o, n in counts.items()}, step=len(trials))
    writer.terminate(status)

    columns = ["trial_id", "outcome", *names.values(), "epochs", "best", "run_id"]
    rows = [{**t, **{names[k]: v for k, v in t["config"].items()}} for t in trials]
    print(f"bckd: sweep {name} {status}: {counts}\n{format_table(rows, columns)}", flush=True)
    if best is not None:
        print(f"bckd: best trial {best['trial_id']} {spec.metric}={best['best']:.4f} "
              f"run={best['run_id']} cfg_options={best['config']}", flush=True)
    return result
