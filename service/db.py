"""SQLAlchemy engine and sessions, and the registered data sets' table; the schema itself is
owned by the alembic migrations."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from sqlalchemy import JSON, PrimaryKeyConstraint, String, Text, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from service.models import Base, UTCDateTime, utcnow
from service.settings import Settings

__all__ = ["DataSet", "get_engine", "migrate", "new_session", "session_scope"]

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
