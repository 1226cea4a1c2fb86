"""A job's states: the words the REST API, the table and the client share (its kinds are
:class:`bckd.config.kinds.JobKind`, which the job file shares too)."""

from __future__ import annotations

import enum

__all__ = ["ADMITTED", "TERMINAL", "JobStatus"]


class JobStatus(enum.StrEnum):
    QUEUED = "QUEUED"  # row written, not admitted yet: its owner's quota or the cluster is full
    PENDING = "PENDING"  # admitted; submitted to Ray or about to be
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"  # cancelled by a user
    LOST = "LOST"  # Ray no longer knows the job (cluster restarted)
    # A FAILED (infrastructure) or LOST job that ``max_restarts`` allows goes back to PENDING
    # under a new Ray submission id (``Job.ray_id``) instead: see ``service.core.restarts``.


# QUEUED -> PENDING is the admission (``service.core.queue``); a QUEUED job never reached Ray.
TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.LOST})
# the states that hold their resources: what an owner's quota and the cluster's room count
ADMITTED = frozenset({JobStatus.PENDING, JobStatus.RUNNING})
