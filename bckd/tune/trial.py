"""One trial of a sweep: a Tune function trainable that runs one training job.

Tune calls :func:`run_trial` with the trial's sampled values (``{config key: value}``). It runs
:func:`bckd.runtime.launch.run_job` with them as ``--cfg-options``: the job builds and fits its
own ``TorchTrainer`` (the Ray 2.60 pattern; a Trainer is never handed to the ``Tuner``), and a
``TuneReportCallback`` forwards every ``ray.train.report`` of rank 0 (the COCO metrics and
``epoch`` after each evaluation) to Tune, where the scheduler can stop the trial. The job's
MLflow run is a child of the sweep's parent run (tag ``mlflow.parentRunId``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["PARENT_TAG", "TRIAL_TAG", "TrialBase", "outcome", "run_trial"]

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests the run under its parent
TRIAL_TAG = "bckd.sweep.trial_id"


@dataclass(frozen=True)
class TrialBase:
    """What every trial shares (sent once to the object store by ``tune.with_parameters``)."""

    job: Any  # bckd.config.spec.JobSpec: config (absolute), workers, the sweep's cfg_options
    sweep_name: str
    sweep_dir: str
    tracking_uri: str
    parent_run_id: str
    cwd: str  # the driver's working directory: relative paths in cfg_options are against it
    tracking_login: dict = field(default_factory=dict)  # bckd.tracking.login.tracking_login


def run_trial(config: dict[str, Any], base: TrialBase) -> None:
    """Tune function trainable: run the job with ``config`` applied; raise if it did not finish
    (Tune then marks the trial ERROR)."""
    import ray.tune
    from ray.train._internal.session import get_session
    from ray.tune.integration.ray_train import TuneReportCallback

    from bckd.runtime.launch import run_job
    from bckd.tracking.login import use_tracking_login

    # Tune starts the function in the trial's own directory; the job resolves paths against
    # the working directory, so go back to the driver's (when this node has it).
    if os.path.isdir(base.cwd):
        os.chdir(base.cwd)
    # The job's default tracking URI would be a new SQLite file beside the trial's work dir.
    os.environ["MLFLOW_TRACKING_URI"] = base.tracking_uri
    use_tracking_login(base.tracking_login)  # a trial's actor has none of the driver's variables
    trial_id = ray.tune.get_context().get_trial_id()
    # Set when Tune stops this trial (the scheduler cut it): the job then ends KILLED, not
    # FAILED, even if its fit errors on the way down (the same session TuneReportCallback uses).
    stopping = get_session().stop_event
    spec = replace(
        base.job,
        name=f"{base.sweep_name}-{trial_id}",
        work_dir=str(Path(base.sweep_dir) / "trials" / trial_id),
        cfg_options={**base.job.cfg_options, **config},
        tags={**base.job.tags, PARENT_TAG: base.parent_run_id, TRIAL_TAG: trial_id,
              "bckd.sweep": base.sweep_name},
        callbacks=[*base.job.callbacks, TuneReportCallback()],
        stop_requested=stopping.is_set,
    )
    result = run_job(spec)
    if result.status != "FINISHED":
        raise RuntimeError(f"trial {trial_id}: the job ended {result.status}: {result.error}")


def outcome(last_result: dict | None, max_epochs: int, error: bool = False) -> str:
    """A trial's end as a user reads it: ERROR, COMPLETED (reported its last epoch), STOPPED
    (by the scheduler, early) or UNFINISHED (pending, or the sweep was interrupted)."""
    last = last_result or {}
    if error:
        return "ERROR"
    if last.get("epoch", 0) >= max_epochs:
        return "COMPLETED"
    return "STOPPED" if last.get("done") else "UNFINISHED"
