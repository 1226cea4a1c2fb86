"""The service's only door to Ray: the Jobs REST API through ``JobSubmissionClient``.

The client sends Ray's own auth token (``RAY_AUTH_MODE=token`` plus ``RAY_AUTH_TOKEN_PATH`` or
``RAY_AUTH_TOKEN`` in the service's environment) on every request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["ClusterTotals", "RayJobs", "UnknownJob", "get_ray_jobs"]


class UnknownJob(LookupError):
    """Ray has no job with this submission id."""


@dataclass(frozen=True)
class ClusterTotals:
    cpus: float  # whole cluster
    gpus: float
    max_node_cpus: float  # the largest single node: one worker never spans two
    max_node_gpus: float


class RayJobs:
    def __init__(self, address: str):
        self.address = address
        self._client = None
        self._totals: tuple[float, ClusterTotals] | None = None

    @property
    def client(self):
        if self._client is None:  # connects (one HTTP round trip) on first use
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.address)
        return self._client

    def submit(self, submission_id: str, entrypoint: str, env: dict[str, str],
               metadata: dict[str, str]) -> bool:
        """Submit; False when Ray already has ``submission_id`` (a retried submission)."""
        try:
            self.client.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                                   runtime_env={"env_vars": env}, metadata=metadata)
        except RuntimeError as err:
            if "already exists" in str(err):
                return False
            raise
        return True

    def info(self, submission_id: str):
        try:
            return self.client.get_job_info(submission_id)
        except RuntimeError as err:
            if "404" in str(err) or "does not exist" in str(err):
                raise UnknownJob(submission_id) from err
            raise

    def stop(self, submission_id: str) -> bool:
        try:
            return self.client.stop_job(submission_id)
        except RuntimeError as err:
            if "does not exist" in str(err):
                raise UnknownJob(submission_id) from err
            raise

    def logs(self, submission_id: str) -> str:
        try:
            return self.client.get_job_logs(submission_id)
        except RuntimeError as err:
            if "does not exist" in str(err) or "404" in str(err):
                raise UnknownJob(submission_id) from err
            raise

    def totals(self, max_age_s: float = 30.0) -> ClusterTotals:
        """The cluster's resources, cached ``max_age_s``: the state API is slow under load."""
        now = time.monotonic()
        if self._totals is None or now - self._totals[0] > max_age_s:
            self._totals = (now, self._fetch_totals())
        return self._totals[1]

    def _fetch_totals(self) -> ClusterTotals:
        from ray.util.state import list_nodes

        nodes = [n for n in list_nodes(address=self.address, timeout=10) if n.state == "ALIVE"]
        res = [n.resources_total or {} for n in nodes]
        return ClusterTotals(
            cpus=sum(r.get("CPU", 0.0) for r in res),
            gpus=sum(r.get("GPU", 0.0) for r in res),
            max_node_cpus=max((r.get("CPU", 0.0) for r in res), default=0.0),
            max_node_gpus=max((r.get("GPU", 0.0) for r in res), default=0.0),
        )

    def ping(self) -> None:
        self.client.list_jobs()


@lru_cache
def get_ray_jobs(address: str) -> RayJobs:
    return RayJobs(address)
