"""Attach to (or start) a Ray cluster and check that it can ever run the requested workers.

Ray Train V2 retries an infeasible ``ScalingConfig`` forever on a static cluster, so the driver
checks the nodes' resources itself and fails with a message naming what is missing.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import ray

__all__ = ["WorkerResources", "check_resources", "connect"]


@dataclass(frozen=True)
class WorkerResources:
    num_workers: int
    cpus_per_worker: float = 1.0
    use_gpu: bool = False

    def per_worker(self) -> dict[str, float]:
        resources = {"CPU": float(self.cpus_per_worker)}
        if self.use_gpu:
            resources["GPU"] = 1.0
        return resources


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """``ray.init`` against ``address`` or ``RAY_ADDRESS``, else a new local cluster.

    Returns True when this call started a local cluster. The dashboard stays on: Ray 2.60's
    Train V2 queries the controller's state through it (else it logs "Failed to query Ray Train
    Controller actor state" repeatedly), and its Train tab shows the run
    (``RAY_TRAIN_ENABLE_STATE_TRACKING=1``, set here before the cluster starts). Token auth,
    on by default for new local clusters, is kept.
    """
    os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "1")
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return False
    # address="local": a new cluster, even where `ray start` left one on this machine (a bare
    # ray.init() would join that one, with its own resources and token)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, log_to_driver=True)
    return True


def check_resources(request: WorkerResources, nodes: list[dict] | None = None) -> None:
    """Raise ``ValueError`` unless the alive nodes can place ``request.num_workers`` workers.

    Each worker's resources must fit on one node; the count that fits is summed over nodes.
    ``nodes`` defaults to ``ray.nodes()`` (total, not currently free, resources: a busy cluster
    makes the run wait, an infeasible one fails here).
    """
    if request.num_workers < 1:
        raise ValueError(f"--num-workers must be >= 1, got {request.num_workers}")
    if request.cpus_per_worker <= 0:
        raise ValueError(f"--cpus-per-worker must be > 0, got {request.cpus_per_worker}")
    nodes = [n for n in (nodes if nodes is not None else ray.nodes()) if n.get("Alive", True)]
    need = request.per_worker()
    fits = 0
    for node in nodes:
        have = node.get("Resources", {})
        fits += min(math.floor(have.get(k, 0.0) / v + 1e-9) for k, v in need.items())
    if fits < request.num_workers:
        totals = {k: sum(n.get("Resources", {}).get(k, 0.0) for n in nodes) for k in need}
        raise ValueError(
            f"the Ray cluster can never run {request.num_workers} workers with {need} each: "
            f"its {len(nodes)} node(s) have {totals} in total and fit {fits} such workers "
            "(lower --num-workers or --cpus-per-worker, drop --use-gpu, or add nodes)")
