"""The service's only door to Ray: the Jobs REST API through ``JobSubmissionClient``.

The client sends Ray's own auth token (``RAY_AUTH_MODE=token`` plus ``RAY_AUTH_TOKEN_PATH`` or
``RAY_AUTH_TOKEN`` in the service's environment) on every request.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from bckd.runtime.cluster import Capacity, NodeGroup

__all__ = ["RayJobs", "Reservation", "UnknownJob", "get_ray_jobs"]


@dataclass(frozen=True)
class Reservation:
    """What a job's driver reserves on Ray: ``submit_job``'s ``entrypoint_num_cpus`` and
    ``entrypoint_memory`` (bytes). Either above zero also lets Ray place the driver on any
    node that has it, not only on the head."""

    cpus: float = 0.0
    memory_bytes: int = 0


class UnknownJob(LookupError):
    """Ray has no job with this submission id."""


class RayJobs:
    def __init__(self, address: str):
        self.address = address
        self._client = None
        self._nodes: tuple[float, tuple[dict[str, float], ...]] | None = None

    @property
    def client(self):
        if self._client is None:  # connects (one HTTP round trip) on first use
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.address)
        return self._client

    def submit(self, submission_id: str, entrypoint: str, env: dict[str, str],
               metadata: dict[str, str], reservation: Reservation) -> bool:
        """Submit; False when Ray already has ``submission_id`` (a retried submission). Ray
        starts the driver (its job supervisor actor, whose child it is) only once a node can
        grant its ``reservation``; until then Ray's job is PENDING."""
        try:
            self.client.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                                   runtime_env={"env_vars": env}, metadata=metadata,
                                   entrypoint_num_cpus=reservation.cpus,
                                   entrypoint_memory=reservation.memory_bytes)
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

    def capacity(self, groups: Iterable[NodeGroup] = (), max_age_s: float = 30.0) -> Capacity:
        """The alive nodes' total resources (cached ``max_age_s``: the state API is slow under
        load), with the node ``groups`` an autoscaler can add (the service's settings)."""
        now = time.monotonic()
        if self._nodes is None or now - self._nodes[0] > max_age_s:
            from ray.util.state import list_nodes

            alive = [n for n in list_nodes(address=self.address, timeout=10)
                     if n.state == "ALIVE"]
            nodes = tuple(dict(n.resources_total or {}) for n in alive)
            if not nodes:  # a head just (re)started, its node not registered yet: ask again
                return Capacity(nodes, tuple(groups))
            self._nodes = (now, nodes)
        return Capacity(self._nodes[1], tuple(groups))

    def ping(self) -> None:
        self.client.list_jobs()


@lru_cache
def get_ray_jobs(address: str) -> RayJobs:
    return RayJobs(address)
