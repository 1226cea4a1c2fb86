"""A sweep in MLflow: one parent run, one nested child run per trial, each ending with its status.

The driver opens the parent (reopened on a restart with the same name) with the search space,
scheduler and search algorithm; each trial's job opens its own child run (tagged
``mlflow.parentRunId`` and ``bckd.sweep.trial_id``) and ends it FINISHED or FAILED itself.
A trial that Tune stops (ASHA) is killed in the middle of its job, which may end its run
before it dies (KILLED, see ``JobSpec.stop_requested``) or may not: :class:`ChildRunCloser`
ends it on the driver as soon as Tune stops the trial (KILLED when stopped early, FAILED when
it errored) and tags each child with its outcome; after the sweep,
:func:`reconcile_children` sets every child's status from its trial's outcome once more (an
interrupted sweep's running trials end KILLED; a restore reopens them).
"""

from __future__ import annotations

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from bckd.tune.trial import PARENT_TAG, TRIAL_TAG, outcome

__all__ = ["ChildRunCloser", "child_runs", "reconcile_children"]

OUTCOME_TAG = "bckd.sweep.outcome"
_END_STATUS = {"STOPPED": "KILLED", "ERROR": "FAILED", "UNFINISHED": "KILLED",
               "COMPLETED": "FINISHED"}


def child_runs(client: MlflowClient, parent_run_id: str, trial_id: str | None = None) -> list:
    """The parent's child runs (of one trial when ``trial_id`` is given)."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    query = f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
    if trial_id is not None:
        query += f" and tags.`{TRIAL_TAG}` = '{trial_id}'"
    return client.search_runs([experiment_id], filter_string=query, max_results=10_000)


def _close(client: MlflowClient, run, result: str, detail: dict[str, str]) -> None:
    client.set_tag(run.info.run_id, OUTCOME_TAG, result)
    for key, value in detail.items():
        client.set_tag(run.info.run_id, key, value)
    if run.info.status == RunStatus.to_string(RunStatus.RUNNING):
        client.set_terminated(run.info.run_id, status=_END_STATUS[result])


def reconcile_children(tracking_uri: str, parent_run_id: str,
                       outcomes: dict[str, str]) -> int:
    """After the sweep: end each child with the status of its trial's outcome (``{trial_id:
    outcome}``; a child of no known trial, or of an UNFINISHED one, ends KILLED). A stopped
    trial's job may have written its own end while going down; this is the final word.
    Returns how many runs changed."""
    client = MlflowClient(tracking_uri)
    changed = 0
    for run in child_runs(client, parent_run_id):
        result = outcomes.get(run.data.tags.get(TRIAL_TAG), "UNFINISHED")
        if run.info.status != _END_STATUS[result] or \
                run.data.tags.get(OUTCOME_TAG) != result:
            client.set_tag(run.info.run_id, OUTCOME_TAG, result)
            client.set_terminated(run.info.run_id, status=_END_STATUS[result])
            changed += 1
    return changed


class ChildRunCloser(Callback):
    """Tune callback (driver side): end a trial's child run with the status its trial ended."""

    def __init__(self, tracking_uri: str, parent_run_id: str, max_epochs: int) -> None:
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        self.max_epochs = max_epochs

    def _end(self, trial, error: bool) -> None:
        # on_trial_complete comes right after the scheduler's decision, before Tune marks the
        # trial done; the result that ended it carries done=True.
        result = outcome({**(trial.last_result or {}), "done": True}, self.max_epochs, error)
        detail = {"bckd.sweep.last_epoch": str(trial.last_result.get("epoch", 0))}
        if error and trial.error_file:
            detail["bckd.sweep.error_file"] = str(trial.error_file)
        client = MlflowClient(self.tracking_uri)
        for run in child_runs(client, self.parent_run_id, trial.trial_id):
            _close(client, run, result, detail)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._end(trial, error=False)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._end(trial, error=True)
