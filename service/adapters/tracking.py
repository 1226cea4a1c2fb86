"""MLflow reads and the few writes the service does: creating each job's run, terminating a
run whose job ended without doing so, sharing a run.

A job's run is created here, before the job is submitted, with the tags the service trusts
(``bckd.owner``, ``bckd.job_id``); its id goes to the jobs table and the job file, never the
other way round (no run id is read from a job's log). Every read or write of one job's run goes
through :meth:`Tracking.owned_run`, which checks whose the run is (:meth:`Tracking.owner_of`).

Experiments are per owner in MLflow (:func:`mlflow_experiment`: ``<owner>/<name>``), so that
MLflow's permissions, which stop at experiments, isolate owners. Where the tracking server
checks logins (:class:`~service.adapters.mlflow_users.MlflowUsers`), a tag is no proof: a
login can write any tag on its own runs. A run is then an owner's only if it lies in an
experiment the service sealed for that owner, and a run is shared only if its ``bckd.shared``
tag is the service's seal of its id. Without logins (a tracking store anyone may write: a local
file, a test's SQLite), the tags are taken as written.
"""

from __future__ import annotations

import math
import threading
import time
from functools import lru_cache
from pathlib import Path

from bckd.tracking.mlflow_ui import EXPERIMENT_TAGS, VIEW_TAG, run_link, runs_link
from bckd.tracking.runs import OWNER_TAG, SHARED_TAG, artifact_location, run_in
from service.adapters.mlflow_users import Login, MlflowUsers

__all__ = ["OWNER_TAG", "SEAL_TAG", "SHARED_TAG", "Login", "NotOwned", "Tracking",
           "get_tracking", "mlflow_experiment"]

SEAL_TAG = "bckd.seal"  # an experiment's: the service's seal of its name (MlflowUsers.seal)
EXPERIMENT_CACHE_S = 30.0  # how long an experiment's name is taken as known (renames are rare)


def mlflow_experiment(owner: str, experiment: str) -> str:
    """The MLflow name of ``owner``'s experiment ``experiment`` (a request's name): one per
    owner, so that an experiment's permissions are one owner's."""
    return f"{owner}/{experiment}"


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
    def __init__(self, uri: str, public_url: str, users: MlflowUsers | None = None):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.public_url = (public_url or uri).rstrip("/")
        self.client = MlflowClient(tracking_uri=uri)
        self.users = users  # None: a tracking store without logins
        self._experiments: dict[str, tuple[float, object]] = {}  # id -> (read at, experiment)
        self._lock = threading.Lock()

    def run_link(self, experiment_id: str, run_id: str) -> str:
        return run_link(self.public_url, experiment_id, run_id)

    # -- experiments: one per owner and name, sealed by the service --

    def _sealed(self, exp) -> bool:
        return self.users is None or self.users.holds(exp.tags.get(SEAL_TAG), "experiment",
                                                      exp.name)

    def _experiment_by_id(self, experiment_id: str):
        now = time.monotonic()
        with self._lock:
            hit = self._experiments.get(experiment_id)
        if hit is not None and now - hit[0] < EXPERIMENT_CACHE_S:
            return hit[1]
        exp = self.client.get_experiment(experiment_id)
        with self._lock:
            self._experiments[experiment_id] = (now, exp)
        return exp

    def experiment(self, owner: str, name: str):
        """``owner``'s experiment ``name`` (a request's name); None when MLflow has none of the
        service's. One of that MLflow name that the service did not make (a login made it:
        any login may) is not theirs, and is renamed out of the way."""
        full = mlflow_experiment(owner, name)
        exp = self.client.get_experiment_by_name(full)
        if exp is None or self._sealed(exp):
            return exp
        aside = f"{full} (not made by bckd, id {exp.experiment_id})"
        self.client.rename_experiment(exp.experiment_id, aside)
        return None

    def experiment_link(self, owner: str, name: str) -> str | None:
        """The runs table (COCO metrics as columns: bckd.tracking.mlflow_ui) of ``owner``'s
        experiment ``name``; None if MLflow has none (one exists once its first run does)."""
        exp = self.experiment(owner, name)
        return None if exp is None else runs_link(self.public_url, exp.experiment_id,
                                                  VIEW_TAG in exp.tags)

    # -- runs --

    def run(self, run_id: str):
        return self.client.get_run(run_id)

    def owner_of(self, run) -> str | None:
        """The owner of a job's run: its ``bckd.owner`` tag, where the tracking store has
        logins only if the run lies in an experiment the service sealed for that owner; None for
        a run that no job of the service made."""
        owner = run.data.tags.get(OWNER_TAG) or None
        if owner is None or self.users is None:
            return owner
        exp = self._experiment_by_id(run.info.experiment_id)
        if exp.name.startswith(f"{owner}/") and self._sealed(exp):
            return owner
        return None

    def owned_run(self, run_id: str, owner: str):
        """The run ``run_id`` if it is ``owner``'s (:meth:`owner_of`); else :class:`NotOwned`."""
        run = _get_run(self.client, run_id)
        if self.owner_of(run) != owner:
            raise NotOwned(run_id)
        return run

    def own_experiment(self, owner: str, name: str):
        """``owner``'s experiment ``name``, made if MLflow has none of the service's (sealed as
        it is made, so a racing request never finds it unsealed); ``owner``'s login is granted
        on it."""
        from mlflow.exceptions import MlflowException

        exp = self.experiment(owner, name)  # one a login made under that name moves aside
        if exp is None:
            full = mlflow_experiment(owner, name)
            seal = {} if self.users is None else {SEAL_TAG: self.users.seal("experiment", full)}
            try:  # with the UI's tags too (mlflow_ui): its runs then add none
                self.client.create_experiment(full, artifact_location(self.uri),
                                              tags={**EXPERIMENT_TAGS, **seal})
            except MlflowException as err:
                if err.error_code != "RESOURCE_ALREADY_EXISTS":  # not made by a racing request
                    raise
            if (exp := self.experiment(owner, name)) is None:
                raise RuntimeError(f"MLflow experiment {full!r} could not be made")
        if exp.lifecycle_stage == "deleted":  # by an admin in MLflow: a new job brings it back
            self.client.restore_experiment(exp.experiment_id)
        if self.users is not None:
            self.users.grant(owner, exp.experiment_id)
        return exp

    def create_job_run(self, experiment: str, name: str, owner: str, job_id: str,
                       config_hash: str) -> tuple[str, str]:
        """A new job's run in ``owner``'s ``experiment`` (:meth:`own_experiment`; by its id, so
        a rename in between cannot send it elsewhere), SCHEDULED until the job opens it; its id
        and its experiment's."""
        exp = self.own_experiment(owner, experiment)
        run_id = run_in(self.client, exp, name, status="SCHEDULED", tags={
            OWNER_TAG: owner, "bckd.job_id": job_id, "bckd.job_name": name,
            "bckd.config_hash": config_hash})
        return run_id, exp.experiment_id

    def login(self, owner: str) -> Login | None:
        """``owner``'s MLflow login (made on the server if it is not yet); None where the
        tracking store has no logins."""
        return None if self.users is None else self.users.ensure(owner)

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

    def shared(self, run) -> bool:
        """Whether an admin shared the run through the service (a mark a login cannot make)."""
        mark = run.data.tags.get(SHARED_TAG)
        if self.users is None:
            return mark == "true"
        return self.users.holds(mark, "shared", run.info.run_id)

    def visible_to(self, run, viewer: str) -> bool:
        """A run is its owner's (:meth:`owner_of`), and everyone's once an admin shared it."""
        owner = self.owner_of(run)
        return owner == viewer or (owner is not None and self.shared(run))

    def set_shared(self, run_id: str, shared: bool) -> None:
        """Mark a job's run shared (or not); :class:`NotOwned` for a run that no job of the
        service made: the service shares only its own runs."""
        if self.owner_of(_get_run(self.client, run_id)) is None:
            raise NotOwned(run_id)
        mark = "true" if self.users is None else self.users.seal("shared", run_id)
        self.client.set_tag(run_id, SHARED_TAG, mark if shared else "false")

    def compare(self, experiment: str, viewer: str | None) -> tuple[str, list[dict]] | None:
        """The runs of every owner's ``experiment`` that ``viewer`` may see (all of them for
        ``None``, an admin): the viewer's own, and others' shared ones; the experiment id is the
        viewer's own (else the first with a run). None when no such run exists."""
        if "'" in experiment:  # no request's name (NAME_PATTERN), and it would end the filter
            return None
        # every owner's experiment of that name: `<owner>/<experiment>`, sealed ones only
        exps = [e for e in self.client.search_experiments(
                    filter_string=f"name LIKE '%/{experiment}'", max_results=1000)
                if e.name.split("/", 1)[-1] == experiment and self._sealed(e)]
        found = {}
        for exp in exps:
            owner = exp.name.split("/", 1)[0]
            if viewer is None or owner == viewer:
                query = f"tags.`{OWNER_TAG}` = '{owner}'"
            else:  # MLflow's filter cannot check a seal: fetch the marked, then check
                query = f"tags.`{SHARED_TAG}` != 'false'"
            for r in self.client.search_runs([exp.experiment_id], filter_string=query,
                                             max_results=500):
                if viewer is None or owner == viewer or self.shared(r):
                    found[r.info.run_id] = r
        if not found:
            return None  # not an experiment of theirs: as if it did not exist
        own = [e.experiment_id for e in exps
               if viewer is not None and e.name == mlflow_experiment(viewer, experiment)]
        experiment_id = (own or [next(iter(found.values())).info.experiment_id])[0]
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
                             link=self.run_link(r.info.experiment_id, r.info.run_id)))
        return experiment_id, rows

    def ping(self) -> None:
        self.client.search_experiments(max_results=1)


def get_tracking(settings) -> Tracking:
    """The service's tracking client for ``settings`` (``service.settings.Settings``)."""
    return _tracking(settings.mlflow_uri, settings.mlflow_public_url,
                     settings.mlflow_admin_username, settings.mlflow_admin_password,
                     settings.mlflow_secret)


@lru_cache
def _tracking(uri: str, public_url: str, admin_username: str, admin_password: str,
              secret: str) -> Tracking:
    # the admin login this process sends makes the owners' logins; none: a store without them
    users = MlflowUsers(uri, Login(admin_username, admin_password), secret) \
        if admin_username else None
    return Tracking(uri, public_url, users)
