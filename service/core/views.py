"""The job page's one read (``GET /v1/jobs/{id}/view``): what a user watches of their own job,
without Ray's token and without the Ray dashboard.

The caller's job (``find_job``: another owner's is 404), its row as ``GET /v1/jobs/{id}``
answers it (status, metrics, the MLflow run's link), the resources it asked for, and what Ray
says of it now: the driver's status, the job's actors (its workers) with their reservations and
resource use (``service.adapters.ray_view``), the last progress line and the log's tail. Ray
down, or a job Ray no longer knows, leaves the Ray parts empty with a note, never an error: the
row and the durable log still answer.
"""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy.orm import Session

from service.adapters.ray_jobs import RayJobs, UnknownJob
from service.adapters.ray_view import Actor, Driver, job_actors, job_driver
from service.adapters.tracking import Tracking
from service.core.auth import Principal
from service.core.jobs import find_job, public_job, read_archive
from service.core.schemas import JobPublic, Resources
from service.core.stalls import PROGRESS_RE
from service.core.streams import job_logs
from service.settings import Settings

__all__ = ["ActorView", "DriverView", "JobView", "job_view"]

LOG_TAIL = 200  # lines of the log the page shows


class DriverView(BaseModel):
    status: str
    message: str | None
    node_ip: str | None
    pid: int | None


class ActorView(BaseModel):
    actor_id: str
    class_name: str
    state: str
    node_ip: str | None
    pid: int | None
    resources: dict[str, float]
    cpu_percent: float | None
    rss_bytes: int | None
    gpu_memory_bytes: int | None


class JobView(BaseModel):
    job: JobPublic
    requested: Resources  # what the request asked for (every worker alike)
    driver: DriverView | None  # None: Ray does not know the job (not submitted yet, forgotten)
    workers: list[ActorView]  # the job's Ray actors: Ray Train's workers and controller
    ray_note: str | None  # why the Ray parts are empty, when they are
    progress: str | None  # the last ``bckd: progress`` line (epoch, iteration, ETA, losses)
    log_source: str  # "ray", "archive" (the service's durable copy) or "none"
    log_tail: str  # the log's last LOG_TAIL lines


def job_view(session: Session, user: Principal, job_id: str, ray: RayJobs, settings: Settings,
             tracking: Tracking) -> JobView:
    """The caller's job as its page shows it; :class:`NotFound` for another owner's."""
    job = find_job(session, user, job_id)
    driver, workers, note = _from_ray(ray, job.ray_id if job.submitted_at else None)
    text, source = job_logs(job, ray)
    if source == "none" and (archived := read_archive(settings, job)) is not None:
        text, source = archived, "archive"
    progress = PROGRESS_RE.findall(text)
    return JobView(job=public_job(job, settings, tracking),
                   requested=Resources.model_validate(job.request.get("resources", {})),
                   driver=DriverView(**_fields(driver, DriverView)) if driver else None,
                   workers=[ActorView(**_fields(a, ActorView)) for a in workers],
                   ray_note=note, progress=progress[-1] if progress else None,
                   log_source=source, log_tail="\n".join(text.splitlines()[-LOG_TAIL:]))


def _from_ray(ray: RayJobs, submission_id: str | None
              ) -> tuple[Driver | None, list[Actor], str | None]:
    if submission_id is None:
        return None, [], "not submitted to Ray yet"
    try:
        driver = job_driver(ray, submission_id)
    except UnknownJob:
        return None, [], "Ray no longer knows this job (its log is the service's copy)"
    except Exception as err:  # Ray down: the row and the durable log still answer
        return None, [], f"Ray did not answer: {type(err).__name__}"
    if driver.ray_job_id is None:  # the driver has not started
        return driver, [], None
    try:
        return driver, job_actors(ray, driver.ray_job_id), None
    except Exception as err:
        return driver, [], f"Ray's actor table did not answer: {type(err).__name__}"


def _fields(obj, model: type[BaseModel]) -> dict:
    return {name: getattr(obj, name) for name in model.model_fields}
