"""One MLflow run per job: created by the driver, written by rank 0, ended by the driver.

At a terminal the driver creates (or, for a rerun with the same name, reopens) the run. A job the
service submitted does not choose its run: the API created it (tags ``bckd.owner``,
``bckd.job_id``) and wrote its id into the job file, and the driver opens that run and no other
(:func:`open_owned_run`), refusing to start when it is missing or another owner's. Either way the
driver logs params, tags and the resolved config (``config.json``), prints
``bckd: mlflow_run_id=<id>`` for people and writes ``run.json``; rank 0 of the workers logs
per-step and per-epoch metrics and evaluation artifacts into that run by id; the driver ends it
FINISHED, FAILED or KILLED and logs the final and best checkpoints.

A restarted worker replays the iterations after its checkpoint, or every iteration when it
failed before the first one. :class:`RunWriter` therefore asks MLflow, per metric key, for the
last step already in the run, always: the run holds what earlier attempts logged whether or not
the worker knows there were any (a restart before the first checkpoint looks like a fresh start
to the worker). Steps at or below that one are dropped, so the history has each step once and
the values of a replayed window are those logged first. MLflow cannot overwrite a logged point,
only add one, which is why the replay is dropped rather than the first attempt's points replaced.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from bckd.tracking.mlflow_ui import tag_experiment

__all__ = [
    "OWNER_TAG",
    "PROTECTED_TAGS",
    "RunRefused",
    "RunWriter",
    "artifact_location",
    "create_run",
    "default_tracking_uri",
    "open_owned_run",
    "open_run",
    "read_run_json",
    "run_in",
    "run_to_reopen",
    "undefined_ap",
    "write_run_json",
]

MAX_PARAM_CHARS = 500  # MLflow accepts 6000; longer values (pipelines) are cut for readability
OWNER_TAG = "bckd.owner"  # whose run it is: set by the service when it creates the run
SHARED_TAG = "bckd.shared"  # set by an admin through the service
# Tags only the service writes: every read of a run by the service trusts them, so a job never
# sets them (it may set any other tag of its own run).
PROTECTED_TAGS = (OWNER_TAG, SHARED_TAG)


class RunRefused(ValueError):
    """The run a job file names cannot be this job's: missing, deleted, or another owner's."""


def default_tracking_uri(work_root: str | os.PathLike, configured: str | None = None) -> str:
    """``MLFLOW_TRACKING_URI``, else the config's value, else ``sqlite:///<work_root>/mlflow.db``.

    MLflow 3.17 refuses its plain file store, so the local default is a SQLite file.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    if uri:
        return uri
    root = Path(work_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def artifact_location(tracking_uri: str) -> str | None:
    """For a local SQLite store, artifacts in ``mlartifacts/`` beside the database file (MLflow's
    own default is ``./mlruns`` relative to whatever directory the process runs in)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    return (db.parent / "mlartifacts").as_uri()


def create_run(tracking_uri: str, experiment: str, run_name: str,
               tags: Mapping[str, str], status: str = "RUNNING") -> str:
    """Create a run in ``experiment`` (created if needed) with ``tags``; return its id.

    The service creates a job's run with ``status="SCHEDULED"`` before the job exists."""
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        location = artifact_location(tracking_uri)
        try:
            experiment_id = client.create_experiment(experiment, artifact_location=location)
        except Exception:  # noqa: BLE001 - created concurrently by another job
            experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return run_in(client, client.get_experiment(experiment_id), run_name, tags, status)


def run_in(client: MlflowClient, experiment, run_name: str, tags: Mapping[str, str],
           status: str = "RUNNING") -> str:
    """Create a run in ``experiment`` (an ``Experiment`` ``client`` read) with ``tags``; its id.
    The service makes a job's run this way, in the experiment it made for the owner."""
    # MLflow's UI then opens it on its runs table, COCO metrics as columns (mlflow_ui)
    tag_experiment(client, experiment)
    run_id = client.create_run(experiment.experiment_id, run_name=run_name,
                               tags=dict(tags)).info.run_id
    if status != "RUNNING":
        client.update_run(run_id, status=status)
    return run_id


def open_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    tags: Mapping[str, str],
    run_id: str | None = None,
) -> str:
    """A terminal's job: create a run in ``experiment``, or reopen ``run_id`` as RUNNING."""
    client = MlflowClient(tracking_uri)
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except Exception:  # noqa: BLE001 - a run.json from another tracking store: start anew
            run = None
        if run is not None and run.info.lifecycle_stage == "active":
            client.update_run(run_id, status="RUNNING")
            client.set_tag(run_id, "bckd.resumed", "true")
            return run_id
    return create_run(tracking_uri, experiment, run_name, tags)


def open_owned_run(tracking_uri: str, run_id: str, owner: str,
                   tags: Mapping[str, str]) -> str:
    """A submitted job's run: the one the service created for it (``run_id`` from the job file),
    reopened as RUNNING with ``tags`` set, except :data:`PROTECTED_TAGS`, which stay the
    service's. ``bckd.resumed`` is ``true`` when an earlier attempt or job had started it.

    Raises :class:`RunRefused` when the run is missing from this tracking store, deleted, or
    not ``owner``'s (its ``bckd.owner`` tag): the job then trains in no run at all.
    """
    client = MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except Exception as err:  # noqa: BLE001 - MLflow raises its own error for an unknown id
        raise RunRefused(f"the job's MLflow run {run_id} is not in {tracking_uri} "
                         f"({type(err).__name__}); resubmit the job through the API") from None
    if run.info.lifecycle_stage != "active":
        raise RunRefused(f"the job's MLflow run {run_id} was deleted; resubmit the job under "
                         "a new name")
    if not owner or run.data.tags.get(OWNER_TAG) != owner:
        raise RunRefused(f"the MLflow run {run_id} is not a run of owner {owner!r}; a job "
                         "trains only in the run the service created for it")
    started = run.info.status != "SCHEDULED"
    own = {k: str(v) for k, v in tags.items() if k not in PROTECTED_TAGS}
    own["bckd.resumed"] = str(started).lower()
    client.update_run(run_id, status="RUNNING")
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in own.items()])
    return run_id


def run_to_reopen(previous: Mapping[str, object], resuming: bool) -> str | None:
    """The MLflow run id of an earlier attempt of this job (``run.json``) to reopen, or None.

    One run per job: the earlier run is reopened when Ray holds a checkpoint to resume from
    (a rerun with the same name), and also when that attempt did not finish (RUNNING, FAILED,
    KILLED: a job restarted after it failed, even before its first checkpoint). Only a finished
    job whose checkpoints are gone starts a new run, because it trains again from scratch.
    """
    run_id = previous.get("mlflow_run_id")
    if not isinstance(run_id, str):
        return None
    return run_id if resuming or previous.get("status") != "FINISHED" else None


def undefined_ap(key: str, value: float) -> bool:
    """COCO's -1 for an AP it cannot define (``coco/bbox_mAP_l`` of a set without large
    objects): no measurement, so :class:`RunWriter` logs no point for it."""
    return value < 0 and "bbox_mAP" in key


class RunWriter:
    """Logs into an existing run by id, each (key, step) at most once across restarts.

    Metric steps only grow within one writer, so after the first look-up of a key in MLflow
    (one ``get_metric_history`` per key and writer) the high-water mark is kept in memory.
    """

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.client = MlflowClient(tracking_uri)
        self.run_id = run_id
        self._last_step: dict[str, int] = {}

    def _high_water(self, key: str) -> int:
        """The last step of ``key`` in the run (-1: none), from MLflow on first use."""
        if key not in self._last_step:
            history = self.client.get_metric_history(self.run_id, key)
            self._last_step[key] = max((m.step for m in history), default=-1)
        return self._last_step[key]

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> int:
        """Log the metrics at ``step``; return how many were new (not already logged)."""
        return self.log_steps([(step, metrics)])

    def log_steps(self, rows: Iterable[tuple[int, Mapping[str, float]]]) -> int:
        """Log several steps' metrics, steps in increasing order, in one ``log_batch``; return
        how many were new. One write per call, not per step: each write is a database commit
        (a SQLite one waits for the disk), and a job's worker makes it every few iterations."""
        now = int(time.time() * 1000)
        batch: list[Metric] = []
        written: dict[str, int] = {}  # kept apart until the write succeeds
        for step, metrics in rows:
            for key, value in metrics.items():
                if undefined_ap(key, value):
                    continue
                last = written[key] if key in written else self._high_water(key)
                if step > last:
                    batch.append(Metric(key, float(value), now, step))
                    written[key] = step
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)  # MLflow splits it per 1000
            self._last_step.update(written)
        return len(batch)

    def log_params(self, params: Mapping[str, object]) -> None:
        existing = self.client.get_run(self.run_id).data.params
        batch = [Param(k[:250], str(v)[:MAX_PARAM_CHARS]) for k, v in params.items()
                 if k[:250] not in existing]
        self.client.log_batch(self.run_id, params=batch)

    def set_tags(self, tags: Mapping[str, object]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, paths: Iterable[str | os.PathLike], artifact_path: str) -> None:
        for path in paths:
            self.log_artifact(path, artifact_path)

    def terminate(self, status: str) -> None:
        """End the run with ``status``: FINISHED, FAILED or KILLED."""
        RunStatus.from_string(status)  # raises on a typo
        self.client.set_terminated(self.run_id, status=status)


def write_run_json(work_dir: str | os.PathLike, **fields: object) -> Path:
    """Write (merge into) ``work_dir/run.json``: ``mlflow_run_id``, ``experiment``, ``status``...

    Written to a temporary file and renamed, so a reader never sees half a file.
    """
    path = Path(work_dir) / "run.json"
    data = read_run_json(work_dir) or {}
    data.update(fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read_run_json(work_dir: str | os.PathLike) -> dict | None:
    path = Path(work_dir) / "run.json"
    return json.loads(path.read_text()) if path.is_file() else None
