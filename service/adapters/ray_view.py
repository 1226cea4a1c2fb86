"""What the job page (``service.core.views``) reads of Ray: a job's driver and its actors.

Reads only, through the service's own Ray client (``RayJobs.client``, which sends Ray's token):
the Jobs API's ``GET /api/jobs/{id}`` and the dashboard's ``GET /logical/actors``, the table
behind the dashboard's Actors page, with each actor's process statistics (CPU %, resident memory)
as the node's agent last reported them. Nothing of Ray's answer reaches a user unfiltered: the
driver's runtime environment (the job's environment variables) is never read out.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.adapters.ray_jobs import RayJobs

__all__ = ["Actor", "Driver", "job_actors", "job_driver"]


@dataclass(frozen=True)
class Driver:
    ray_job_id: str | None  # Ray's own job id (hex): its actors carry it
    status: str  # Ray's: PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED
    message: str | None
    node_ip: str | None
    pid: int | None


@dataclass(frozen=True)
class Actor:
    actor_id: str
    class_name: str  # Ray Train's RayTrainWorker, its controller, a Tune trial ...
    state: str  # ALIVE, PENDING_CREATION, RESTARTING, DEAD
    node_ip: str | None
    pid: int | None
    resources: dict[str, float]  # what Ray reserved for it
    cpu_percent: float | None  # its process, as last reported; None: no report (yet)
    rss_bytes: int | None
    gpu_memory_bytes: int | None  # the GPU memory its process holds, over its GPUs


def job_driver(ray: RayJobs, submission_id: str) -> Driver:
    """The job's driver as Ray's Jobs API has it; ``UnknownJob`` when Ray has none."""
    info = ray.info(submission_id)
    driver = info.driver_info
    return Driver(ray_job_id=info.job_id, status=str(info.status.value), message=info.message,
                  node_ip=driver.node_ip_address if driver else None,
                  pid=int(driver.pid) if driver and driver.pid else None)


def job_actors(ray: RayJobs, ray_job_id: str) -> list[Actor]:
    """The actors of Ray's job ``ray_job_id`` (its workers), with their resource use."""
    # the dashboard's own route, through the Jobs client's authenticated session
    r = ray.client._do_request("GET", "/logical/actors")
    r.raise_for_status()
    actors = r.json().get("data", {}).get("actors", {})
    return sorted((_actor(a) for a in actors.values()
                   if a is not None and a.get("jobId") == ray_job_id),
                  key=lambda a: (a.class_name, a.actor_id))


def _actor(a: dict) -> Actor:
    stats = a.get("processStats") or {}
    gpu_mem = [p.get("gpuMemoryUsage", p.get("gpu_memory_usage", 0))
               for g in a.get("gpus") or []
               for p in g.get("processesPids") or [] if p.get("pid") == a.get("pid")]
    return Actor(actor_id=a.get("actorId", ""), class_name=a.get("className", ""),
                 state=a.get("state", ""), node_ip=(a.get("address") or {}).get("ipAddress"),
                 pid=a.get("pid") or None,
                 resources={k: float(v) for k, v in (a.get("requiredResources") or {}).items()},
                 cpu_percent=stats.get("cpuPercent"),
                 rss_bytes=int(rss) if (rss := (stats.get("memoryInfo") or {}).get("rss"))
                 else None,
                 # nvidia-smi's MiB, as the dashboard's agent reports them
                 gpu_memory_bytes=sum(gpu_mem) * 2**20 if gpu_mem else None)
