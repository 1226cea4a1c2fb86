"""The job table: one row per submitted job, written before the job reaches Ray."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    DateTime,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["TERMINAL", "Base", "Job", "JobKind", "JobStatus", "KeyClaim", "Run", "new_job_id",
           "utcnow"]


class JobKind(enum.StrEnum):
    train = "train"
    distill = "distill"
    sweep = "sweep"


class JobStatus(enum.StrEnum):
    PENDING = "PENDING"  # row written; submitted to Ray or about to be
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"  # cancelled by a user
    LOST = "LOST"  # Ray no longer knows the job (cluster restarted)
    # A FAILED (infrastructure) or LOST job that ``max_restarts`` allows goes back to PENDING
    # under a new Ray submission id (``Job.ray_id``) instead: see ``service.restarts``.


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.LOST})


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    return f"bckd-{uuid.uuid4().hex[:16]}"  # also the Ray submission_id


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in and out; SQLite would hand them back without their zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.astimezone(UTC) if value is not None and value.tzinfo else value

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idem"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16), index=True)
    name: Mapped[str] = mapped_column(String(128))
    experiment: Mapped[str] = mapped_column(String(128))
    config: Mapped[str] = mapped_column(String(512))  # configs/ name, or path of an upload
    request: Mapped[dict] = mapped_column(JSON)  # the validated JobCreate, as submitted
    entrypoint: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True, default=JobStatus.PENDING)
    message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # submissions tried
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    # The run's latest metrics as the reconciler last read them (None: never read), so a job
    # read needs no MLflow round trip; as fresh as the status, one reconcile pass old at most.
    metrics: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    # The last time Ray answered for the job: LOST counts its grace from here, so one
    # "unknown job" answer of a dashboard hiccup does not end a job Ray knew a second ago.
    ray_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    restarts: Mapped[int] = mapped_column(Integer, default=0)  # resubmissions after FAILED/LOST
    max_restarts: Mapped[int] = mapped_column(Integer, default=0)  # the request's policy
    restarted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # pending clocks' start
    # Stall detection, per attempt (service.stalls): when the service last saw the attempt's
    # progress lines grow, how many it had, when it was marked stalled (None: it is not), and
    # when the service stopped it for it (its end is then an infrastructure failure).
    progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    progress_lines: Mapped[int | None] = mapped_column(Integer)
    stalled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    stall_stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def ray_id(self) -> str:
        """The Ray submission id of the current attempt: the job id, then ``<id>-r<n>`` after
        the n-th restart (Ray keeps a finished submission's id and refuses it again)."""
        return self.id if not self.restarts else f"{self.id}-r{self.restarts}"


class KeyClaim(Base):
    """An ``Idempotency-Key`` whose first request is still being validated (its ``runs:/``
    downloads, Ray's nodes). Its primary key lets exactly one request work on a key; a
    duplicate waits for that request's job instead of repeating the work. The row is deleted
    in the transaction that inserts the job, or when the request is refused."""

    __tablename__ = "job_key_claims"
    __table_args__ = (PrimaryKeyConstraint("owner", "idempotency_key", name="pk_job_key_claims"),)

    owner: Mapped[str] = mapped_column(String(128))
    idempotency_key: Mapped[str] = mapped_column(String(128))
    request: Mapped[dict] = mapped_column(JSON)  # a duplicate with another body is a 409 at once
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Run(Base):
    """One owner's named run: its directory, and the config every job of that name must have.

    The key (owner, name) makes names unique per owner in the database itself. A job claims
    the run by moving ``active_job_id`` from the value it read (a compare-and-set UPDATE), so of
    two concurrent resubmissions exactly one trains in the directory.
    """

    __tablename__ = "runs"
    __table_args__ = (PrimaryKeyConstraint("owner", "name", name="pk_runs"),)

    owner: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    experiment: Mapped[str] = mapped_column(String(128))
    config_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the resolved config
    config: Mapped[dict] = mapped_column(JSON)  # flat resolved config: names the keys of a 409
    active_job_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
