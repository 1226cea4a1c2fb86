"""``Idempotency-Key``: one job per (owner, key), and a duplicate answered from the table alone.

A key is in one of three states: unknown; *claimed* (a ``KeyClaim`` row: its first request is
being validated, which may download ``runs:/`` checkpoints and ask Ray for its nodes); or
*held* by its job (``Job.idempotency_key``, unique per owner). The claim is what lets a
duplicate that arrives while the first request is still working wait for that request's job
instead of doing the same work (a second download, a 503 when Ray is down). The job's INSERT
deletes the claim in the same transaction, so a key is never both claimed and held.

A claim older than ``CLAIM_TTL_S`` is stale (its API process died mid-request) and the next
request with the key takes it over. Correctness never depends on that timing: of two requests
that both work on a key, the job table's unique key lets exactly one INSERT win.
"""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.adapters.db import Job, KeyClaim, utcnow
from service.core.errors import Invalid
from service.core.schemas import JobCreate

__all__ = ["CLAIM_TTL_S", "by_key", "claim_or_find", "find_duplicate", "release_claim",
           "same_request"]

CLAIM_TTL_S = 60.0  # longer than a request's validation and downloads normally take
POLL_S = 0.05  # a waiting duplicate's poll of the table


def by_key(session: Session, owner: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner == owner, Job.idempotency_key == key))


def same_request(job: Job, req: JobCreate) -> Job:
    if job.request != req.model_dump(mode="json"):
        raise Invalid("Idempotency-Key", f"already used for job {job.id} with another request",
                      409)
    return job


def find_duplicate(session: Session, owner: str, req: JobCreate, key: str | None) -> Job | None:
    """The job of an earlier request with this key; 409 if the key came with another body."""
    found = by_key(session, owner, key) if key is not None else None
    return same_request(found, req) if found is not None else None


def claim_or_find(session: Session, owner: str, req: JobCreate, key: str,
                  ttl_s: float = CLAIM_TTL_S) -> Job | None:
    """None once this request holds the key's claim (it then creates the job, or releases the
    claim when refused); else the job of the request that held it, after waiting for it.

    A claim whose request is refused disappears without a job: the waiter then claims the key
    itself and is judged on its own (a retried bad request gets the same 4xx)."""
    body = req.model_dump(mode="json")
    deadline = time.monotonic() + ttl_s + 5.0
    while True:
        session.rollback()  # a fresh read: SQLite's snapshot lasts as long as the transaction
        if (job := by_key(session, owner, key)) is not None:
            return same_request(job, req)
        claim = session.get(KeyClaim, (owner, key), populate_existing=True)
        if claim is not None and claim.request != body:
            raise Invalid("Idempotency-Key", "already used for a request with another body "
                          "that is still being processed", 409)
        stale = claim is not None and utcnow() - claim.created_at > timedelta(seconds=ttl_s)
        if claim is None or stale or time.monotonic() > deadline:
            if claim is not None:  # only that claim: a newer one is another live request's
                session.execute(delete(KeyClaim).where(
                    KeyClaim.owner == owner, KeyClaim.idempotency_key == key,
                    KeyClaim.created_at == claim.created_at))
            session.add(KeyClaim(owner=owner, idempotency_key=key, request=body,
                                 created_at=utcnow()))
            try:
                session.commit()
                return None
            except IntegrityError:  # another request claimed it at the same moment
                session.rollback()
                continue
        time.sleep(POLL_S)


def release_claim(session: Session, owner: str, key: str) -> None:
    """Drop the claim of a refused request, so that a retry is judged again."""
    session.rollback()
    session.execute(delete(KeyClaim).where(KeyClaim.owner == owner,
                                           KeyClaim.idempotency_key == key))
    session.commit()
