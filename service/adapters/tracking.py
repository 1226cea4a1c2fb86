"""MLflow reads and the few writes the service does: creating each job's run, terminating a
run whose job ended without doing so, sharing a run.

A job's run is created here, before the job is submitted, with the tags the service trusts
(``bckd.owner``, ``bckd.job_id``); its id goes to the jobs table and the job file, never the
other way round (no run id is read from a job's log). Every read or write of one job's run goes
through :meth:`Tracking.owned_run`, which checks the run's ``bckd.owner``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from bckd.tracking.mlflow_ui import VIEW_TAG, run_link, runs_link
from bckd.tracking.runs import OWNER_TAG, SHARED_TAG, create_run

__all__ = ["OWNER_TAG", "SHARED_TAG", "NotOwned", "Tracking", "get_tracking"]


class NotOwned(LookupError):
    """No such run, or not the expected owner's: the same answer, so nothing leaks."""


def _get_run(client, run_id: str):
    """The run; :class:`NotOwned` when MLflow says there is none (or the id is malformed). Any
    other error (MLflow unreachable) propagates: it says nothing about the run."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise NotOwned(run_id) from err
        raise

# What a comparison shows of each run: run tags set by jobs.train, then a few flat params.
KEY_TAGS = ("method", "student", "teacher", "dataset")
KEY_PARAMS = {"model": "model.type", "epochs": "train_cfg.max_epochs",
              "lr": "optim_wrapper.optimizer.lr", "config": "config",
              # randomness.seed of the config ("None" when unset): the pairing key of the
              # compare statistics (bckd.evaluation.stats)
              "seed": "randomness.seed"}


class Tracking:
    def __init__(self, uri: str, public_url: str):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.public_url = (public_url or uri).rstrip("/")
        self.client = MlflowClient(tracking_uri=uri)

    def run_link(self, experiment_id: str, run_id: str) -> str:
        return run_link(self.public_url, experiment_id, run_id)

    def experiment_links(self, names: Iterable[str]) -> dict[str, str]:
        """Name -> runs table (COCO metrics as columns: bckd.tracking.mlflow_ui) of those of
        ``names`` MLflow knows (a job's experiment exists once its run does)."""
        found = {name: self.client.get_experiment_by_name(name) for name in names}
        return {name: runs_link(self.public_url, exp.experiment_id, VIEW_TAG in exp.tags)
                for name, exp in found.items() if exp is not None}

    def experiment_id(self, name: str) -> str | None:
        """The id of the experiment ``name``; None when MLflow has none of that name."""
        found = self.client.get_experiment_by_name(name)
        return found.experiment_id if found is not None else None

    def run(self, run_id: str):
        return self.client.get_run(run_id)

    def owned_run(self, run_id: str, owner: str):
        """The run ``run_id`` if its ``bckd.owner`` tag is ``owner``; else :class:`NotOwned`."""
        run = _get_run(self.client, run_id)
        if run.data.tags.get(OWNER_TAG) != owner:
            raise NotOwned(run_id)
        return run

    def create_job_run(self, experiment: str, name: str, owner: str, job_id: str,
                       config_hash: str) -> str:
        """A new job's run, SCHEDULED until the job opens it; its id."""
        return create_run(self.uri, experiment, name, status="SCHEDULED", tags={
            OWNER_TAG: owner, "bckd.job_id": job_id, "bckd.job_name": name,
            "bckd.config_hash": config_hash})

    def reusable(self, run_id: str, owner: str) -> bool:
        """Whether a rerun may train in ``run_id``: ``owner``'s, and not deleted (MLflow
        unreachable raises: a rerun waits for its run rather than getting a new one)."""
        try:
            return self.owned_run(run_id, owner).info.lifecycle_stage == "active"
        except NotOwned:
            return False

    def delete_run(self, run_id: str) -> None:
        """Drop a run made for a request that then made no job (it lost a race)."""
        self.client.delete_run(run_id)

    def latest_metrics(self, run_id: str, owner: str) -> dict[str, float]:
        return {k: v for k, v in self.owned_run(run_id, owner).data.metrics.items()
                if math.isfinite(v)}

    def terminate(self, run_id: str, owner: str, status: str = "KILLED") -> None:
        """End ``owner``'s run ``run_id`` with ``status`` unless it has ended already."""
        if self.owned_run(run_id, owner).info.status in ("RUNNING", "SCHEDULED"):
            self.client.set_terminated(run_id, status=status)

    def download(self, uri: str, dst: Path) -> Path:
        import mlflow.artifacts

        dst.mkdir(parents=True, exist_ok=True)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst),
                                                        tracking_uri=self.uri))

    @staticmethod
    def owner_of(run) -> str | None:
        """The owner of a job's run; None for a run that no job of the service made."""
        return run.data.tags.get(OWNER_TAG) or None

    @staticmethod
    def visible_to(run, viewer: str) -> bool:
        """A run is its owner's (tag ``bckd.owner``, set by the job from its job file), and
        everyone's once an admin marked it shared."""
        tags = run.data.tags
        return tags.get(OWNER_TAG) == viewer or tags.get(SHARED_TAG) == "true"

    def set_shared(self, run_id: str, shared: bool) -> None:
        """Mark a job's run shared (or not); :class:`NotOwned` for a run that no job of the
        service made (no ``bckd.owner``): the service shares only its own runs."""
        if not _get_run(self.client, run_id).data.tags.get(OWNER_TAG):
            raise NotOwned(run_id)
        self.client.set_tag(run_id, SHARED_TAG, "true" if shared else "false")

    def compare(self, experiment: str, viewer: str | None) -> tuple[str, list[dict]] | None:
        """The experiment's runs that ``viewer`` may see (all of them for ``None``, an admin);
        None when the experiment does not exist or holds none of them."""
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            return None
        # MLflow's filter has no OR: one search for the viewer's runs, one for shared runs
        filters = [""] if viewer is None else [f"tags.`{OWNER_TAG}` = '{viewer}'",
                                               f"tags.`{SHARED_TAG}` = 'true'"]
        found = {r.info.run_id: r for f in filters for r in self.client.search_runs(
            [exp.experiment_id], filter_string=f, max_results=500)}
        if viewer is not None and not found:
            return None  # not an experiment of theirs: as if it did not exist
        runs = sorted(found.values(), key=lambda r: r.info.start_time or 0, reverse=True)
        rows = []
        for r in runs:
            metrics = {k: v for k, v in r.data.metrics.items()
                       if ("mAP" in k or k.startswith("coco/")) and math.isfinite(v)}
            params = {k: r.data.tags[k] for k in KEY_TAGS if k in r.data.tags}
            params |= {k: r.data.params[p] for k, p in KEY_PARAMS.items() if p in r.data.params}
            rows.append(dict(run_id=r.info.run_id, run_name=r.info.run_name,
                             status=r.info.status, job_id=r.data.tags.get("bckd.job_id"),
                             params=params, metrics=metrics,
                             link=self.run_link(exp.experiment_id, r.info.run_id)))
        return exp.experiment_id, rows

    def ping(self) -> None:
        self.client.search_experiments(max_results=1)


@lru_cache
def get_tracking(uri: str, public_url: str) -> Tracking:
    return Tracking(uri, public_url)
