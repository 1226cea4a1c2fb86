"""Per-owner quotas: what an owner's admitted jobs may hold at once, and how many may wait.

An owner's quota is the settings' defaults (``BCKD_QUOTA_*``) with the fields an admin set for
that owner (table ``owner_quotas``, ``PUT /v1/quotas/{owner}``). A job's demand is what it holds
while admitted: its workers' CPUs and GPUs plus its driver's reservation (``BCKD_DRIVER_*``).
The queue (``service.core.queue``) admits a job only while its owner stays within the quota.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bckd.config.kinds import JobKind
from service.adapters.db import Job, OwnerQuota, utcnow
from service.core.auth import Principal
from service.core.errors import Forbidden
from service.core.schemas import Resources
from service.core.states import ADMITTED, JobStatus
from service.settings import Settings

__all__ = ["Demand", "Quota", "QuotaLimits", "QuotaPublic", "QuotaUpdate", "QuotasPublic",
           "demand", "list_quotas", "quota_of", "read_quota", "set_quota"]

LIMITS = ("max_running", "max_queued", "cpus", "gpus", "memory_gb")


class QuotaUpdate(BaseModel):
    """An owner's own quota; a field left out (or null) is the default (``BCKD_QUOTA_*``)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"max_running": 2, "max_queued": 10, "gpus": 4}]})

    max_running: int | None = Field(None, ge=0, le=10_000,
                                    description="admitted (PENDING or RUNNING) jobs at once")
    max_queued: int | None = Field(None, ge=1, le=100_000,
                                   description="QUEUED jobs; one more is refused with 429")
    cpus: float | None = Field(None, ge=0, description="CPUs of admitted jobs: workers and "
                               "drivers")
    gpus: float | None = Field(None, ge=0, description="GPUs of admitted jobs")
    memory_gb: float | None = Field(None, ge=0, description="memory admitted jobs reserve on "
                                    "Ray (their drivers')")


class QuotaLimits(BaseModel):
    max_running: int
    max_queued: int
    cpus: float | None  # None: no limit but the cluster's
    gpus: float | None
    memory_gb: float | None


class QuotaPublic(BaseModel):
    owner: str
    limits: QuotaLimits  # in force: the owner's own where set, else the defaults
    own: list[str]  # the fields set for this owner (PUT); the others are the defaults
    running: int  # admitted jobs now (PENDING or RUNNING)
    queued: int
    updated_by: str | None = None
    updated_at: datetime | None = None


class QuotasPublic(BaseModel):
    defaults: QuotaLimits  # BCKD_QUOTA_*
    data: list[QuotaPublic]  # the owners with a quota of their own


@dataclass(frozen=True)
class Demand:
    """What a job holds while admitted, or what several hold together."""

    cpus: float = 0.0
    gpus: float = 0.0
    memory_gb: float = 0.0

    def __add__(self, other: Demand) -> Demand:
        return Demand(self.cpus + other.cpus, self.gpus + other.gpus,
                      self.memory_gb + other.memory_gb)


def demand(request: dict, settings: Settings) -> Demand:
    """A job's demand from its stored request (``JobCreate`` as JSON): ``num_workers`` x the
    per-worker CPUs and GPUs (a sweep: x ``num_samples``, every trial at once, the most Tune
    may start), plus the driver's reservation, which is also all the memory a job reserves on
    Ray (workers reserve none)."""
    r = Resources.model_validate(request.get("resources") or {})
    copies = r.num_workers * (request.get("num_samples", 1)
                              if request.get("kind") == JobKind.sweep else 1)
    return Demand(copies * r.cpus_per_worker + settings.driver_cpus,
                  float(copies * r.gpus_per_worker), settings.driver_memory_gb)


@dataclass(frozen=True)
class Quota:
    max_running: int
    max_queued: int
    cpus: float | None
    gpus: float | None
    memory_gb: float | None

    @classmethod
    def of(cls, settings: Settings, own: OwnerQuota | None) -> Quota:
        values = {f.name: getattr(settings, f"quota_{f.name}") for f in fields(cls)}
        if own is not None:
            values.update({k: getattr(own, k) for k in LIMITS if getattr(own, k) is not None})
        return cls(**values)

    def over(self, running: int, used: Demand, need: Demand) -> str | None:
        """Why an owner with ``running`` admitted jobs holding ``used`` may not add a job of
        ``need`` (None: it may)."""
        if running >= self.max_running:
            return f"owner quota: {running} of {self.max_running} running jobs"
        for key, unit in (("cpus", "CPUs"), ("gpus", "GPUs"), ("memory_gb", "GB of memory")):
            limit, have, want = getattr(self, key), getattr(used, key), getattr(need, key)
            if limit is not None and have + want > limit + 1e-9:
                return (f"owner quota: {have:g} of {limit:g} {unit} in use, this job needs "
                        f"{want:g}")
        return None

    def never(self, need: Demand, owner: str) -> str | None:
        """Why a job of ``need`` could never be admitted under ``owner``'s quota (None: it
        could)."""
        for key, unit in (("cpus", "CPUs"), ("gpus", "GPUs"), ("memory_gb", "GB of memory")):
            limit, want = getattr(self, key), getattr(need, key)
            if limit is not None and want > limit + 1e-9:
                return (f"the job needs {want:g} {unit} (its workers and its driver), more "
                        f"than its owner's quota of {limit:g}; ask an admin to raise it "
                        f"(PUT /v1/quotas/{owner})")
        return None


def quota_of(session: Session, owner: str, settings: Settings) -> Quota:
    return Quota.of(settings, session.get(OwnerQuota, owner))


def _public(session: Session, owner: str, settings: Settings) -> QuotaPublic:
    own = session.get(OwnerQuota, owner)
    counts = dict(session.execute(
        select(Job.status, func.count()).where(
            Job.owner == owner, Job.status.in_([*ADMITTED, JobStatus.QUEUED]))
        .group_by(Job.status)).all())
    q = Quota.of(settings, own)
    return QuotaPublic(
        owner=owner, limits=QuotaLimits(**{k: getattr(q, k) for k in LIMITS}),
        own=[k for k in LIMITS if own is not None and getattr(own, k) is not None],
        running=sum(counts.get(s, 0) for s in ADMITTED), queued=counts.get(JobStatus.QUEUED, 0),
        updated_by=own.updated_by if own else None, updated_at=own.updated_at if own else None)


def read_quota(session: Session, user: Principal, owner: str, settings: Settings
               ) -> QuotaPublic:
    """``owner``'s quota and use: an admin's for anyone, a user's for themselves only."""
    if not (user.admin or user.name == owner):
        raise Forbidden("a user token reads its own quota only; an admin's reads any")
    return _public(session, owner, settings)


def set_quota(session: Session, user: Principal, owner: str, update: QuotaUpdate,
              settings: Settings) -> QuotaPublic:
    """Replace ``owner``'s own quota (an admin only). It bounds the next admissions; jobs
    already admitted keep running (nothing is preempted)."""
    if not user.admin:
        raise Forbidden("only an admin token changes quotas")
    own = session.get(OwnerQuota, owner) or OwnerQuota(owner=owner)
    for key in LIMITS:
        setattr(own, key, getattr(update, key))
    own.updated_by, own.updated_at = user.name, utcnow()
    session.add(own)
    session.commit()
    return _public(session, owner, settings)


def list_quotas(session: Session, user: Principal, settings: Settings) -> QuotasPublic:
    """The defaults and every owner with a quota of their own (an admin only)."""
    if not user.admin:
        raise Forbidden("only an admin token lists quotas")
    owners = session.scalars(select(OwnerQuota.owner).order_by(OwnerQuota.owner)).all()
    d = Quota.of(settings, None)
    return QuotasPublic(defaults=QuotaLimits(**{k: getattr(d, k) for k in LIMITS}),
                        data=[_public(session, o, settings) for o in owners])
