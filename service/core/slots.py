"""Submission slots per owner: at most ``max_submitting`` of one owner's ``POST /v1/jobs`` are
worked on at once (validation, MLflow, the job file, the row); the owner's others wait their
turn, up to :data:`WAIT_S`, then get 429. A retry of a request in flight (its Idempotency-Key)
takes none: it waits for that request's job, which holds one (``core.jobs.submit_request``).

Without them, one owner's burst of submissions takes the API's CPU and the tracking server's
one worker from everyone: with 30 of alice's in flight, bob's submission waited behind all of
them (issue 31, item 2; ``benchmarks/bench_service.py --scenario streams``). Written by hand: a
per-key semaphore is a few lines, and neither Starlette nor anyio has one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from service.core.errors import Busy

__all__ = ["WAIT_S", "SubmitSlots"]

WAIT_S = 60.0  # a submission waits this long for one of its owner's slots, then 429


class SubmitSlots:
    def __init__(self, per_owner: int, wait_s: float = WAIT_S):
        self.per_owner, self.wait_s = per_owner, wait_s
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    @contextmanager
    def held(self, owner: str) -> Iterator[None]:
        """One of ``owner``'s slots for the ``with`` block; :class:`Busy` after ``wait_s``."""
        with self._lock:
            slot = self._slots.setdefault(owner, threading.BoundedSemaphore(self.per_owner))
        if not slot.acquire(timeout=self.wait_s):
            raise Busy(f"{self.per_owner} submissions of yours are in progress and this one "
                       f"waited {self.wait_s:g} s for its turn; submit it again "
                       "(max_submitting)", headers={"Retry-After": str(int(self.wait_s))})
        try:
            yield
        finally:
            slot.release()
