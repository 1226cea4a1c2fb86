"""A new job: validated, given its MLflow run, written as a job file, and claimed under its name
with its row in one transaction (``create_job``); handing it to Ray is ``service.core.jobs``.

The job's MLflow run is made here, before the row exists, with the tags the service trusts
(``bckd.owner``, ``bckd.job_id``); a rerun of a name resumes in the run of the name's earlier
jobs. The run's id goes into the row and the job file, and the job trains in that run and no
other: nothing about a run is ever read from a job's log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bckd.config.jobfile import JobFile
from bckd.runtime.cluster import Capacity
from service.adapters.db import Job, KeyClaim, Run, new_job_id, utcnow
from service.adapters.entrypoints import build_entrypoint
from service.adapters.tracking import Tracking, mlflow_experiment
from service.core.auth import Principal
from service.core.checkpoints import fetch_run_checkpoints
from service.core.datasets import data_source
from service.core.errors import Invalid, Unavailable
from service.core.idempotency import by_key, release_claim, same_request
from service.core.owners import OwnerDirs
from service.core.schemas import JobCreate
from service.core.states import TERMINAL, JobStatus
from service.core.validation import ValidatedJob, validate_job
from service.settings import PROJECT_ROOT, Settings

__all__ = ["WAITING_FOR_CAPACITY", "create_job"]

log = logging.getLogger("bckd.service")
# the message of a job that fits only on nodes an autoscaler has yet to add
WAITING_FOR_CAPACITY = ("waiting for capacity: its workers fit only once the autoscaler adds "
                        "nodes (until pending_timeout_s)")


def create_job(session: Session, user: Principal, req: JobCreate, idem_key: str | None,
               settings: Settings, tracking: Tracking,
               capacity: Callable[[], Capacity] | None
               ) -> tuple[Job, bool]:
    """Validate, make (or, for a rerun, reuse) the MLflow run, write the job file, then claim
    the run's name and insert the row in one transaction; True if the job is new (False: a
    concurrent request with the same key won, and this is its job)."""
    job_id = new_job_id()
    name = req.name or job_id
    owner = OwnerDirs.of(settings, user.name)
    run_dir = owner.run_dir(name)
    source = data_source(session, user, req)
    fetched = fetch_run_checkpoints(req, user, owner, tracking)
    v = validate_job(req, settings, user.name, run_dir, fetched, capacity, source)
    try:
        seen, run_id = _stored_run(session, tracking, user.name, name)
        made = run_id is None  # a run made for this request: dropped if it makes no job
        if made:
            run_id, experiment_id = tracking.create_job_run(req.experiment, name, user.name,
                                                            job_id, v.config_hash)
        else:  # a rerun trains on in its name's run: its link is that run's experiment
            experiment_id = tracking.run(run_id).info.experiment_id
    except Exception as err:  # the job cannot exist without its run
        raise Unavailable(f"MLflow unreachable: {err}") from err
    try:
        job, new = _insert_job(session, user, req, idem_key, settings, v,
                               _NewJob(job_id, name, run_dir, run_id, experiment_id, seen))
    except BaseException:
        if made:
            _drop_run(tracking, run_id)
        raise
    if made and not new:
        _drop_run(tracking, run_id)
    return job, new


def _stored_run(session: Session, tracking: Tracking, owner: str, name: str
                ) -> tuple[str | None, str | None]:
    """The name's last job id (None for a new name), and the MLflow run of its earlier jobs for
    a rerun to resume in (None for a new name, or one whose run is gone from MLflow: the rerun
    then gets a new run)."""
    run = session.get(Run, (owner, name))
    seen = run.active_job_id if run is not None else None
    previous = session.get(Job, seen) if seen else None
    if previous is None or not previous.mlflow_run_id:
        return seen, None
    reuse = tracking.reusable(previous.mlflow_run_id, owner)
    return seen, previous.mlflow_run_id if reuse else None


def _drop_run(tracking: Tracking, run_id: str) -> None:
    try:
        tracking.delete_run(run_id)
    except Exception as err:  # an empty SCHEDULED run is left behind: untidy, harmless
        log.warning("could not delete the unused MLflow run %s: %s", run_id, err)


@dataclass(frozen=True)
class _NewJob:
    id: str
    name: str
    run_dir: Path
    run_id: str  # its MLflow run
    experiment_id: str | None  # the run's experiment
    seen: str | None  # the name's last job when the run was chosen (None: a new name)


def _insert_job(session: Session, user: Principal, req: JobCreate, idem_key: str | None,
                settings: Settings, v: ValidatedJob, new: _NewJob) -> tuple[Job, bool]:
    job_id, name, run_dir, run_id = new.id, new.name, new.run_dir, new.run_id
    owner = OwnerDirs.of(settings, user.name)
    job_file = owner.job_file(job_id)  # an orphan if the claim below fails: never submitted
    # the job imports this project's modules itself: a shipped config's custom_imports (those
    # same modules) would be the one key of its data the job's policy refuses
    data = {k: val for k, val in v.config_data.items() if k != "custom_imports"}
    # the experiment's MLflow name: a sweep's trials make their runs in it by name
    JobFile(kind=str(req.kind), name=name, owner=user.name,
            experiment=mlflow_experiment(user.name, req.experiment),
            run_dir=str(run_dir), configs_dir=str(settings.configs_dir.resolve()),
            read_roots=[str(r) for r in settings.read_roots(user.name)],
            base_dir=str(PROJECT_ROOT), config_data=data, mlflow_run_id=run_id,
            config_name=req.config, overrides=v.overrides,
            num_workers=req.resources.num_workers, cpus_per_worker=req.resources.cpus_per_worker,
            gpus_per_worker=req.resources.gpus_per_worker, num_samples=req.num_samples,
            max_failures=req.max_failures, capacity_timeout_s=settings.pending_timeout_s,
            tags={"bckd.owner": user.name, "bckd.job_id": job_id,
                  "bckd.config_hash": v.config_hash},
            checkpoint_url_prefixes=list(settings.checkpoint_url_prefixes)).write(job_file)
    job = Job(id=job_id, owner=user.name, idempotency_key=idem_key, kind=req.kind, name=name,
              experiment=req.experiment, config=v.config_label, request=req.model_dump(mode="json"),
              entrypoint=build_entrypoint(req.kind, job_file, settings.job_python,
                                          settings.job_module),
              status=JobStatus.QUEUED, attempts=0, created_at=utcnow(), cancel_requested=False,
              mlflow_run_id=run_id, mlflow_experiment_id=new.experiment_id,
              message=WAITING_FOR_CAPACITY if v.waits_for_capacity else None,
              restarts=0, max_restarts=req.max_restarts)
    for _ in range(2):  # a second pass when the name was created at the same moment
        try:
            _claim_run(session, user.name, req, v, new)
            session.add(job)
            if idem_key is not None:  # the key passes from its claim to its job in one commit
                # (this DELETE flushes the INSERTs first: a lost race raises here, not at commit)
                session.execute(delete(KeyClaim).where(KeyClaim.owner == user.name,
                                                       KeyClaim.idempotency_key == idem_key))
            session.commit()  # the claim and the row together: a run's job always exists
            return job, True
        except IntegrityError:  # the same key, or the same new name, won the insert
            session.rollback()
            found = by_key(session, user.name, idem_key) if idem_key else None
            if found is not None:
                release_claim(session, user.name, idem_key)  # ours: the key is held by a job
                return same_request(found, req), False
    raise Invalid("name", f"run {name!r} was just claimed by another submission", 409)


def _claim_run(session: Session, owner: str, req: JobCreate, v: ValidatedJob,
               new: _NewJob) -> None:
    """Make ``new.id`` the one job of the run (owner, name) in the open transaction, or refuse
    with 409.

    A new name creates the run (its primary key settles a race at commit). A known name is a
    rerun: it resumes only with the same resolved config, and only when the run's last job has
    ended; the claim is a compare-and-set on ``active_job_id`` from the job seen when the
    MLflow run was chosen, so of two racing reruns one updates no row and is refused, and a
    name made by another request after this one looked (its MLflow run is another) is too.
    """
    name, job_id = new.name, new.id
    run = session.get(Run, (owner, name))
    if run is None:
        session.add(Run(owner=owner, name=name, kind=str(req.kind), experiment=req.experiment,
                        config_hash=v.config_hash, config=v.resolved, active_job_id=job_id,
                        created_at=utcnow()))
        return
    if run.config_hash != v.config_hash:
        changed = sorted(k for k in set(run.config) | set(v.resolved)
                         if run.config.get(k) != v.resolved.get(k))
        shown = ", ".join(changed[:20]) + (" ..." if len(changed) > 20 else "")
        raise Invalid("name", f"run {name!r} exists with another config (differs in: {shown}); "
                      "a rerun resumes only with the same config: choose a new name", 409)
    previous = run.active_job_id
    active = session.get(Job, previous) if previous else None
    if active is not None and active.status not in TERMINAL:
        raise Invalid("name", f"run {name!r} has an unfinished job {active.id}", 409)
    if previous != new.seen:
        raise Invalid("name", f"run {name!r} was just claimed by another submission", 409)
    claimed = session.execute(
        update(Run).where(Run.owner == owner, Run.name == name,
                          Run.active_job_id.is_(None) if previous is None
                          else Run.active_job_id == previous)
        .values(active_job_id=job_id)).rowcount
    if claimed != 1:
        session.rollback()
        raise Invalid("name", f"run {name!r} was just claimed by another submission", 409)
