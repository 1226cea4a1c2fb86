"""Log streams (``GET /v1/jobs/{id}/logs/stream``): followed without holding a request thread,
and at most ``Settings.max_log_streams`` open per owner.

A stream waits on the event loop (``asyncio.sleep``) and hands each poll's blocking reads (the
job's row, Ray's log, the durable copy) to a thread of its own small limiter, so open streams
neither hold nor queue for the request threads every synchronous route shares (before: one
thread each for the stream's whole life; 45 streams starved every other route).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

from anyio import CapacityLimiter, to_thread
from sqlalchemy.orm import Session

from service.adapters.db import Job, new_session, session_scope
from service.adapters.ray_jobs import RayJobs
from service.core.auth import Principal
from service.core.errors import Busy
from service.core.jobs import find_job, read_archive
from service.core.schemas import LogsPublic
from service.core.states import TERMINAL
from service.settings import Settings

__all__ = ["LogStreams", "follow", "job_logs", "open_stream", "tail_logs"]

# Threads the streams' polls share. A poll holds one for a row read and one HTTP call to Ray
# (milliseconds to tens of them), once a second per stream: 4 serve a few hundred streams.
POLL_THREADS = 4


class LogStreams:
    """Open streams per owner. ``open`` is called from request threads, ``release`` from the
    event loop, hence the lock."""

    def __init__(self, per_owner: int):
        self.per_owner = per_owner
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._limiter: CapacityLimiter | None = None  # made on the event loop, at first use

    def open(self, owner: str) -> Callable[[], None] | None:
        """Count a new stream of ``owner`` and return its (idempotent) release; None when
        ``owner`` already holds ``per_owner``."""
        with self._lock:
            if self._open[owner] >= self.per_owner:
                return None
            self._open[owner] += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    self._open[owner] -= 1
        return release

    @property
    def limiter(self) -> CapacityLimiter:
        if self._limiter is None:
            self._limiter = CapacityLimiter(POLL_THREADS)
        return self._limiter


def job_logs(job: Job, ray: RayJobs) -> tuple[str, str]:
    """The job's log as Ray has it, and ``"ray"``; ``("", "none")`` when Ray has none."""
    if job.submitted_at is not None:
        try:
            return ray.logs(job.ray_id), "ray"
        except Exception:  # Ray forgot the job, or is down: the caller reads the archive
            pass
    return "", "none"


def tail_logs(session: Session, user: Principal, job_id: str, ray: RayJobs, settings: Settings,
              tail: int) -> LogsPublic:
    """The last ``tail`` lines of the caller's job's log: Ray's, else the durable copy."""
    job = find_job(session, user, job_id)
    text, source = job_logs(job, ray)
    if source == "none" and (archived := read_archive(settings, job)) is not None:
        text, source = archived, "archive"
    lines = text.splitlines()
    return LogsPublic(job_id=job.id, source=source, text="\n".join(lines[-tail:]),
                      truncated=len(lines) > tail)


def open_stream(user: Principal, job_id: str, ray: RayJobs, settings: Settings,
                streams: LogStreams, disconnected: Callable[[], Awaitable[bool]]
                ) -> tuple[AsyncIterator[str], Callable[[], None]]:
    """The caller's job's log as it grows (:func:`follow`) and the release of its slot;
    :class:`Busy` when the caller already holds ``streams.per_owner`` streams."""
    # Its own session, closed here: a request's closes after the response, and each open
    # stream held a pooled connection (59 streams emptied the pool: every route waited 30 s
    # for one, then answered 500).
    with new_session(settings) as session:
        job = find_job(session, user, job_id)
    release = streams.open(user.name)
    if release is None:
        raise Busy(f"{user.name} already follows {streams.per_owner} logs, the most one owner "
                   f"may at once (BCKD_MAX_LOG_STREAMS={streams.per_owner}); close one, or read "
                   f"the log once with GET /v1/jobs/{job.id}/logs", headers={"Retry-After": "5"})
    return follow(job.id, ray, settings, streams, release, disconnected), release


def _poll(job_id: str, ray: RayJobs, settings: Settings) -> tuple[Job | None, str]:
    """Blocking: the job's row and its whole log (Ray's, else the durable copy)."""
    for session in session_scope(settings):
        job = session.get(Job, job_id)
    if job is None:
        return None, ""
    text, source = job_logs(job, ray)
    if source == "none":
        text = read_archive(settings, job) or ""
    return job, text


async def follow(job_id: str, ray: RayJobs, settings: Settings, streams: LogStreams,
                 release: Callable[[], None], disconnected: Callable[[], Awaitable[bool]],
                 poll_s: float = 1.0) -> AsyncIterator[str]:
    """The job's log, then what it adds each ``poll_s``, until the job ends or the client
    leaves (``disconnected()``); a restarted job's new attempt starts with a marker line.
    ``release`` (the stream's slot) is called when it ends, however it ends."""
    sent, attempt = 0, None
    try:
        while True:
            job, text = await to_thread.run_sync(_poll, job_id, ray, settings,
                                                 limiter=streams.limiter)
            done = job is None or job.status in TERMINAL
            if job is not None and attempt is not None and job.ray_id != attempt:
                yield f"\n--- bckd: {job.message or 'restarted'} ---\n"  # a new attempt's log
                sent = 0
            attempt = job.ray_id if job is not None else attempt
            if len(text) > sent:
                yield text[sent:]
                sent = len(text)
            if done:
                return
            await asyncio.sleep(poll_s)
            # a quiet job sends nothing, so a write would never tell that the client left
            if await disconnected():
                return
    finally:
        release()
