"""The restart policy: which ended jobs go back to Ray, under their own name, and how.

A request's ``max_restarts`` (default 0) counts resubmissions of a job that ended for a reason
outside the job itself:

- **LOST**: Ray no longer knows the job (the cluster or its head restarted);
- **FAILED by the infrastructure**: every FAILED that the job did not report as its own. The
  job reports its own failure by exiting with a status 1-127 after a line
  ``bckd: error: ...`` (``jobs.train`` and ``jobs.sweep`` print it for a config the policy
  refused, a missing data set, a training that failed after its ``max_failures`` worker
  restarts, a sweep whose every trial failed). Everything else is infrastructure: Ray's own
  errors (``error_type`` other than ``JOB_ENTRYPOINT_COMMAND_ERROR``: the supervisor actor died
  with its node, could not be scheduled or started, the runtime env failed), a driver killed
  by a signal (exit status < 0 or >= 128: the OOM killer, a node's shutdown, a SIGTERM the job
  answered with 130), or a driver that died without saying why (no ``bckd: error:`` line: a
  lost connection to Ray, a crash in the interpreter).

The user's own failures are never retried: the same config would fail the same way. A restart
is the same job row under a new Ray submission id (``Job.ray_id``: ``<id>-r<n>``); the job
file, and so the run's name and directory, are unchanged, so the job resumes from the run's
last checkpoint and reopens its MLflow run, as any rerun of a name does.
"""

from __future__ import annotations

import logging
import re

from sqlalchemy.orm import Session

from service.adapters.db import Job, utcnow
from service.core.states import JobStatus

__all__ = ["JOB_ERROR_RE", "infrastructure_failure", "job_error", "restart"]

log = logging.getLogger("bckd.service")
JOB_ERROR_RE = re.compile(r"^bckd: error: ", re.MULTILINE)  # the job judged its own failure
OWN_EXIT = "JOB_ENTRYPOINT_COMMAND_ERROR"  # Ray: the entrypoint exited with a non-zero status


def infrastructure_failure(info, log_text: str | None) -> str | None:
    """Why a FAILED Ray job failed for a reason outside the job, or None when the job reported
    its own failure (then it is not restarted). ``info`` is Ray's ``JobInfo``."""
    error_type = getattr(info, "error_type", None)
    error_type = str(getattr(error_type, "value", error_type) or "")
    code = getattr(info, "driver_exit_code", None)
    if error_type and error_type != OWN_EXIT:
        return f"Ray: {error_type}"
    if code is None:
        return "the driver ended without an exit status"
    if code < 0 or code >= 128:
        return f"the driver was killed (exit status {code})"
    # Ray's message holds the log's last lines too: the marker is found when the log is not
    said = f"{log_text or ''}\n{getattr(info, 'message', None) or ''}"
    if JOB_ERROR_RE.search(said) is None:
        return f"the driver exited with status {code} without a bckd: error line"
    return None


def job_error(log_text: str | None, limit: int = 2000) -> str | None:
    """The job's own account of its failure: its ``bckd: error:`` line and the lines that carry
    it on (a worker's error snippet), up to the next line Ray streamed in from another process
    (those start with an ANSI colour code), or ``None`` without such a line. Ray's message ends
    with the log's last lines, which are often other processes' tracebacks printed after it.
    Over ``limit`` characters, the first line and the block's end are kept: what failed, and
    the exception that says why."""
    matches = list(JOB_ERROR_RE.finditer(log_text or ""))
    if not matches:
        return None
    lines = log_text[matches[-1].start():].splitlines()
    block = [lines[0]]
    for line in lines[1:]:
        if line.startswith("\x1b["):
            break
        block.append(line)
    text = "\n".join(block).rstrip()
    if len(text) <= limit:
        return text
    head = block[0][: limit // 2]
    return f"{head}\n...\n{text[len(text) - (limit - len(head) - 5):]}"


def restart(session: Session, job: Job, reason: str) -> bool:
    """Put ``job`` back to PENDING as its next attempt, if its ``max_restarts`` allows and no
    cancel is recorded; True if it did. The reconciler then submits it as a new row."""
    if job.cancel_requested or job.restarts >= job.max_restarts:
        return False
    job.restarts += 1
    job.restarted_at = utcnow()
    job.status = JobStatus.PENDING
    job.submitted_at = job.last_attempt_at = job.ray_seen_at = job.ended_at = None
    # the stall clocks are the attempt's (service.core.stalls)
    job.progress_at = job.progress_lines = job.stalled_at = job.stall_stopped_at = None
    job.message = f"restart {job.restarts} of {job.max_restarts} after: {reason}"[:2000]
    session.commit()
    log.warning("job %s: %s", job.id, job.message)
    return True
