"""The fair queue: which QUEUED jobs are admitted (QUEUED -> PENDING), in what order, and why
the others wait. Admission happens here and nowhere else; the submission path of
``service.core.jobs`` takes an admitted job from there.

**A pass** (:func:`admit`, run by each POST that made a job and each reconcile pass, which is
where finished jobs free their room) holds the queue's lock (one row of ``queue_lock``: the
pass's first statement updates it, so two passes, in two threads or two API replicas, never
admit against the same counts) and:

1. counts what the admitted jobs (PENDING or RUNNING) hold, per owner and in all (each job's
   ``quotas.demand``: workers, plus the driver's reservation);
2. orders the QUEUED jobs fairly: owners by their dominant share of the cluster (the larger of
   their CPUs' and GPUs' fractions, as in DRF; ties: fewer running jobs, then the older queued
   job), then round-robin over owners, each owner's jobs oldest first. One owner's 30 queued
   jobs take turns with everyone else's: another owner's first job is at most one round away;
3. walks that order: a job whose owner is over its quota waits (and so do the owner's later
   jobs: an owner's jobs start in the order they came); a job the cluster's free room (its
   total, as the API's resource check counts it, less what admitted jobs hold) can take is
   admitted; the first that it cannot take holds every job behind it (no backfill, so a large
   job is never starved by small ones), except a job larger than the whole cluster, which
   waits for nodes without holding anyone;
4. writes each waiting job's position (1: admitted next) and reason, which the API shows.

A cancelled QUEUED job is STOPPED by the cancel itself, or by the next pass when the API died
in between; it never reached Ray. Quota changes bound later admissions; nothing admitted is
preempted.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from bckd.config.kinds import JobKind
from bckd.runtime.cluster import Capacity
from service.adapters.db import Job, OwnerQuota, QueueLock, utcnow
from service.core.errors import Busy
from service.core.quotas import Demand, Quota, demand
from service.core.states import ADMITTED, JobStatus
from service.settings import Settings

__all__ = ["admit", "check_room", "cluster_total", "stop_queued"]

log = logging.getLogger("bckd.service")
EPS = 1e-9


def cluster_total(capacity: Capacity) -> Demand:
    """The cluster's CPUs and GPUs: its alive nodes plus what its autoscaler's groups add at
    their largest (the API's resource check counts the same). Memory is not counted here: a
    driver's memory reservation is Ray's to grant."""
    def total(key: str) -> float:
        return (sum(n.get(key, 0.0) for n in capacity.nodes)
                + sum(g.max_count * g.resources.get(key, 0.0) for g in capacity.groups))
    return Demand(total("CPU"), total("GPU"), float("inf"))


def check_room(session: Session, owner: str, quota: Quota) -> None:
    """:class:`Busy` (429) when ``owner`` already has as many QUEUED jobs as the quota allows."""
    queued = session.scalar(select(func.count()).select_from(Job).where(
        Job.owner == owner, Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False)))
    if queued >= quota.max_queued:
        raise Busy(f"{owner} has {queued} queued jobs, the most one owner may (max_queued "
                   f"{quota.max_queued}: GET /v1/quotas/{owner}); wait for one to start, or "
                   "cancel one: bckd jobs list --status QUEUED, then bckd jobs cancel JOB_ID "
                   "(POST /v1/jobs/{id}/cancel)", headers={"Retry-After": "30"})


def stop_queued(session: Session, job: Job, message: str) -> bool:
    """End a QUEUED row as STOPPED if it is still QUEUED (a compare-and-set: a pass may be
    admitting it); True if it did."""
    done = session.execute(_stop(job.id, message)).rowcount
    session.commit()
    session.refresh(job)
    return done == 1


def _stop(job_id: str, message: str):
    return (update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .values(status=JobStatus.STOPPED, message=message, ended_at=utcnow(),
                    queue_position=None, queue_reason=None))


@dataclass
class _Owner:
    quota: Quota
    running: int = 0
    used: Demand = Demand()
    last_admitted: datetime = datetime.min.replace(tzinfo=UTC)  # never: first in its round
    blocked: str | None = None  # why its next job waits: its later jobs wait behind it


def admit(session: Session, capacity: Capacity, settings: Settings) -> list[str]:
    """One admission pass (the module's doc) against the cluster's ``capacity``; the ids of the
    jobs it admitted."""
    total = cluster_total(capacity)
    session.execute(update(QueueLock).where(QueueLock.id == 1)
                    .values(passes=QueueLock.passes + 1))  # the lock, held until the commit
    queued = session.scalars(select(Job).where(Job.status == JobStatus.QUEUED)
                             .order_by(Job.created_at, Job.id)
                             .execution_options(populate_existing=True)).all()  # as stored
    if not queued:
        session.commit()
        return []
    owners, in_use = _holdings(session, settings, total, {job.owner for job in queued})
    admitted: list[str] = []
    head: tuple[Job, str] | None = None  # the first job the cluster's room could not take
    waiting: list[tuple[Job, str]] = []
    now = utcnow()
    for job in _fair_order(queued, owners, total):
        if job.cancel_requested:  # its cancel's API died before it could stop it
            session.execute(_stop(job.id, "cancelled while queued"))
            continue
        o, need = owners[job.owner], _need(job.request, settings, total)
        reason = o.blocked or o.quota.over(o.running, o.used, need)
        if reason is None and not _fits(need, total):
            reason = f"cluster: needs {_describe(need)}, it has {_describe(total)} in all"
        elif reason is None and head is not None:
            reason = f"cluster: behind job {head[0].id}, which waits for {head[1]}"
        elif reason is None and not _fits(in_use + need, total):
            head = (job, _missing(need, total, in_use))
            reason = f"cluster: waiting for {head[1]}"
        if reason is not None:
            if o.blocked is None:  # the owner's later jobs wait behind this one
                o.blocked = (reason if reason.startswith("owner quota")
                             else f"behind your job {job.id} ({reason})")
            waiting.append((job, reason))
            continue
        done = session.execute(update(Job).where(
            Job.id == job.id, Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False))
            .values(status=JobStatus.PENDING, admitted_at=now, queue_position=None,
                    queue_reason=None)).rowcount
        if done == 1:
            admitted.append(job.id)
            o.running, o.used, in_use = o.running + 1, o.used + need, in_use + need
    moved = [{"job": job.id, "position": position, "reason": reason}
             for position, (job, reason) in enumerate(waiting, 1)
             if (job.queue_position, job.queue_reason) != (position, reason)]
    if moved:  # one statement, executed for each (a new owner's first job moves everyone)
        jobs = Job.__table__
        session.execute(jobs.update().where(
            jobs.c.id == bindparam("job"), jobs.c.status == JobStatus.QUEUED).values(
            queue_position=bindparam("position"), queue_reason=bindparam("reason")), moved)
    session.commit()  # releases the lock
    if admitted:
        log.info("admitted %s", ", ".join(admitted))
    return admitted


def _holdings(session: Session, settings: Settings, total: Demand, waiting: set[str]
              ) -> tuple[dict[str, _Owner], Demand]:
    """Each owner's quota and what its admitted jobs hold, when the ``waiting`` owners last had
    a job admitted; and what all admitted jobs hold."""
    own = {q.owner: q for q in session.scalars(select(OwnerQuota))}
    owners: dict[str, _Owner] = defaultdict(lambda: _Owner(Quota.of(settings, None)))
    owners.update({name: _Owner(Quota.of(settings, q)) for name, q in own.items()})
    in_use = Demand()
    for owner, request in session.execute(select(Job.owner, Job.request)
                                          .where(Job.status.in_(list(ADMITTED)))):
        o, need = owners[owner], _need(request, settings, total)
        o.running, o.used, in_use = o.running + 1, o.used + need, in_use + need
    for owner, last in session.execute(select(Job.owner, func.max(Job.admitted_at))
                                       .where(Job.owner.in_(waiting), Job.admitted_at.isnot(None))
                                       .group_by(Job.owner)):
        owners[owner].last_admitted = last
    return owners, in_use


def _fair_order(queued: list[Job], owners: dict[str, _Owner], total: Demand) -> list[Job]:
    """Round-robin over owners, least dominant share first (ties: fewer running jobs, then the
    owner served least recently, then the older job); each owner's jobs oldest first."""
    by_owner: dict[str, list[Job]] = defaultdict(list)
    for job in queued:  # oldest first
        by_owner[job.owner].append(job)

    def share(owner: str) -> tuple[float, int, datetime, datetime]:
        o = owners[owner]
        dominant = max(o.used.cpus / total.cpus if total.cpus else 0.0,
                       o.used.gpus / total.gpus if total.gpus else 0.0)
        return dominant, o.running, o.last_admitted, by_owner[owner][0].created_at

    turns = sorted(by_owner, key=share)
    rounds = max(len(jobs) for jobs in by_owner.values())
    return [by_owner[o][i] for i in range(rounds) for o in turns if i < len(by_owner[o])]


def _need(request: dict, settings: Settings, total: Demand) -> Demand:
    """A job's demand. A sweep asks for all its trials at once, and Tune runs as many as fit: it
    holds at most the whole cluster. Any other job needs what it asks, so one larger than the
    cluster (nodes gone since its POST) waits for nodes."""
    need = demand(request, settings)
    if request.get("kind") != JobKind.sweep:
        return need
    return Demand(min(need.cpus, total.cpus), min(need.gpus, total.gpus), need.memory_gb)


def _fits(need: Demand, room: Demand) -> bool:
    return need.cpus <= room.cpus + EPS and need.gpus <= room.gpus + EPS


def _count(amount: float, unit: str) -> str:
    """``1 CPU``, ``1.5 CPUs``, ``4 GPUs``."""
    return f"{amount:g} {unit}" + ("" if amount == 1 else "s")


def _describe(d: Demand) -> str:
    return _count(d.cpus, "CPU") + (f" and {_count(d.gpus, 'GPU')}" if d.gpus else "")


def _missing(need: Demand, total: Demand, in_use: Demand) -> str:
    """What the cluster lacks for ``need``, e.g. ``1.5 CPUs (2 of 2 in use)``."""
    parts = [f"{_count(need.cpus - (total.cpus - in_use.cpus), 'CPU')} ({in_use.cpus:g} of "
             f"{total.cpus:g} in use)"] if need.cpus > total.cpus - in_use.cpus + EPS else []
    if need.gpus > total.gpus - in_use.gpus + EPS:
        parts.append(f"{_count(need.gpus - (total.gpus - in_use.gpus), 'GPU')} "
                     f"({in_use.gpus:g} of {total.gpus:g} in use)")
    return " and ".join(parts)
