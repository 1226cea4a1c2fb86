"""The service's database: every table (jobs, idempotency claims, runs, data sets), the engine
and its sessions, and the migrations that own the schema (``migrations/``, alembic).

The job table has one row per submitted job, written before the job reaches Ray; its kinds
and states are :mod:`service.core.states`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from service.core.states import JobStatus
from service.settings import Settings

__all__ = ["Base", "DataSet", "Job", "KeyClaim", "OwnerQuota", "QueueLock", "Run", "get_engine",
           "migrate", "new_job_id", "new_session", "session_scope", "utcnow"]


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
    mlflow_experiment_id: Mapped[str | None] = mapped_column(String(64))  # its run's
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
    # Stall detection, per attempt (service.core.stalls): when the service last saw the attempt's
    # progress lines grow, how many it had, when it was marked stalled (None: it is not), and
    # when the service stopped it for it (its end is then an infrastructure failure).
    progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    progress_lines: Mapped[int | None] = mapped_column(Integer)
    stalled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    stall_stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The queue (service.core.queue): when the job was admitted (QUEUED -> PENDING; the pending
    # clocks of its first attempt start there), and while QUEUED its place in the fair order
    # (1: admitted next) and what it waits for, as the last admission pass saw them.
    admitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    queue_position: Mapped[int | None] = mapped_column(Integer)
    queue_reason: Mapped[str | None] = mapped_column(Text)

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


class OwnerQuota(Base):
    """An owner's own quota, set by an admin (``PUT /v1/quotas/{owner}``); a None column is
    the default of the settings (``BCKD_QUOTA_*``)."""

    __tablename__ = "owner_quotas"

    owner: Mapped[str] = mapped_column(String(128), primary_key=True)
    max_running: Mapped[int | None] = mapped_column(Integer)
    max_queued: Mapped[int | None] = mapped_column(Integer)
    cpus: Mapped[float | None] = mapped_column(Float)
    gpus: Mapped[float | None] = mapped_column(Float)
    memory_gb: Mapped[float | None] = mapped_column(Float)
    updated_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class QueueLock(Base):
    """One row; an admission pass starts by updating it, which holds the database's write
    lock (SQLite) or the row's (PostgreSQL) until the pass commits, so two passes, of two
    threads or two API replicas, never admit against the same counts."""

    __tablename__ = "queue_lock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    passes: Mapped[int] = mapped_column(Integer, default=0)


MIGRATIONS = Path(__file__).parent / "migrations"


@lru_cache
def get_engine(url: str, pool_size: int) -> Engine:
    """The engine of ``url``, whose pool keeps ``pool_size`` connections open
    (``Settings.db_connections``): SQLAlchemy's default keeps 5, opens and closes up to 10 more
    per use, and makes any thread beyond those wait for one."""
    if url.startswith("sqlite"):
        engine = create_engine(url, pool_size=pool_size,
                               connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record):  # WAL: readers do not block the reconciler's writes
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL, SQLite's advice for WAL: a commit no longer waits for fsync (writers queue
            # behind each other's, which set the submit latency under load). A crash of the API
            # loses nothing and the file never corrupts; only a power loss or an OS crash may
            # drop the last commits. A deployment that must keep those uses PostgreSQL.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_size=pool_size, pool_pre_ping=True)


@lru_cache
def _sessionmaker(url: str, pool_size: int) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url, pool_size), expire_on_commit=False)


def new_session(settings: Settings) -> Session:
    """A session of the service's database; it connects at its first query."""
    return _sessionmaker(settings.db_url, settings.db_connections)()


def session_scope(settings: Settings) -> Iterator[Session]:
    with new_session(settings) as session:
        yield session


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest migration (``alembic upgrade head``)."""
    from alembic import command
    from alembic.config import Config

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


class DataSet(Base):
    """A data set registered by name (``POST /v1/datasets``), after ``bckd data check``.

    Names are unique per owner (the key); only the owner sees and uses it, an admin every
    one, and every user once an admin marked it ``shared``.
    """

    __tablename__ = "datasets"
    __table_args__ = (PrimaryKeyConstraint("owner", "name", name="pk_datasets"),)

    owner: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1024))  # resolved, under a shared data root
    description: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict] = mapped_column(JSON)  # bckd.data.check.DataSetSummary.to_dict()
    shared: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
