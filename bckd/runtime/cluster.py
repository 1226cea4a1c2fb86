"""Attach to (or start) a Ray cluster, and the one rule for whether it can run a job's workers.

The rule (:func:`check_resources`) is per-node packing: a worker's resources must fit on one
node, and the workers that fit are counted node by node. The API checks a request with it before
the job exists (``service.core.validation``), and the job's driver checks again against the
nodes Ray reports (:func:`cluster_capacity`): both must give the same answer for the same cluster,
so they call the same function. Ray Train V2 retries an infeasible ``ScalingConfig`` forever on a
static cluster, so a job that can never be placed fails here, naming what is missing.

A cluster that an autoscaler grows (KubeRay's worker groups, which may scale from zero) is not
refused for nodes it does not have yet: its :class:`NodeGroup`\\ s count at their maximum size,
and the job waits for capacity (:func:`wait_for_capacity`) instead of failing.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bckd.tracking.login import LOGIN_ENV

__all__ = ["DRIVER_ENV", "Capacity", "NodeGroup", "ResourceError", "WorkerResources",
           "check_resources", "cluster_capacity", "connect", "disconnect", "wait_for_capacity"]

# The variables the service gives a job's driver in its Ray submission's runtime_env (the only
# way to Ray's job supervisor, which reads the stop signal and its grace there). They are for the
# driver and the supervisor; the workers read none of them (a worker gets its MLflow store and
# login in its WorkerJob), so the driver keeps them off its workers (:func:`connect`).
DRIVER_ENV = frozenset({"MLFLOW_TRACKING_URI", "BCKD_JOB_ID", "PYTHONUNBUFFERED",
                        "RAY_JOB_STOP_SIGNAL", "RAY_JOB_STOP_WAIT_TIME_S", *LOGIN_ENV})


# GPUs a worker may ask for: each worker is one DDP process that drives one device, so a
# fraction of a GPU (two processes on one device, which NCCL refuses) or several GPUs (all but
# one idle) would not mean what it says. The REST body, both command lines and the job file
# take this rule, an int, from here.
GPUS_PER_WORKER = (0, 1)


class ResourceError(ValueError):
    """The workers asked for can never be placed; ``field`` is the setting to change."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class WorkerResources:
    """What a job asks of the cluster: ``num_workers`` Ray Train workers of these resources.

    ``gpus_per_worker`` is one of :data:`GPUS_PER_WORKER`; anything else is refused by
    :meth:`check`.
    """

    num_workers: int
    cpus_per_worker: float = 1.0
    gpus_per_worker: int = 0

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    def per_worker(self) -> dict[str, float]:
        resources = {"CPU": float(self.cpus_per_worker)}
        if self.gpus_per_worker:
            resources["GPU"] = float(self.gpus_per_worker)
        return resources

    def check(self) -> None:
        """Raise :class:`ResourceError` for values no cluster could honour."""
        if not isinstance(self.num_workers, int) or self.num_workers < 1:
            raise ResourceError("num_workers", f"must be a whole number >= 1, got "
                                f"{self.num_workers!r}")
        if not self.cpus_per_worker > 0:
            raise ResourceError("cpus_per_worker", f"must be > 0, got {self.cpus_per_worker!r}")
        if self.gpus_per_worker not in GPUS_PER_WORKER:
            raise ResourceError(
                "gpus_per_worker", f"must be 0 or 1, got {self.gpus_per_worker!r}: each worker is "
                "one training process on one GPU; ask for more workers to use more GPUs")


@dataclass(frozen=True)
class NodeGroup:
    """Nodes an autoscaler can add: up to ``max_count`` nodes of ``resources`` each."""

    resources: Mapping[str, float]
    max_count: int
    name: str = ""


@dataclass(frozen=True)
class Capacity:
    """A cluster as the rule sees it: the alive nodes' total resources, and the groups an
    autoscaler can still grow (empty on a static cluster)."""

    nodes: tuple[Mapping[str, float], ...]
    groups: tuple[NodeGroup, ...] = ()


def _fits(need: Mapping[str, float], have: Mapping[str, float]) -> int:
    """How many workers of ``need`` one node of ``have`` places."""
    return min(math.floor(have.get(k, 0.0) / v + 1e-9) for k, v in need.items())


def check_resources(request: WorkerResources, capacity: Capacity) -> bool:
    """True when the nodes up now can place the workers; False when only an autoscaler's groups,
    grown to their maximum, could; raise :class:`ResourceError` when nothing ever can.

    Resources are totals, not what is free now: a busy cluster makes a job wait, it does not
    refuse it. The grown cluster is counted as the nodes up now plus every group at its maximum,
    an upper bound (a group's nodes that are up count twice), so a job is never refused for
    capacity the autoscaler could add.
    """
    request.check()
    need = request.per_worker()
    now = sum(_fits(need, n) for n in capacity.nodes)
    if now >= request.num_workers:
        return True
    grown = now + sum(g.max_count * _fits(need, g.resources) for g in capacity.groups)
    if grown >= request.num_workers:
        return False
    kinds = [*capacity.nodes, *(g.resources for g in capacity.groups)]
    for key, field in (("CPU", "cpus_per_worker"), ("GPU", "gpus_per_worker")):
        largest = max((k.get(key, 0.0) for k in kinds), default=0.0)
        if key in need and need[key] > largest:
            raise ResourceError(field, f"{need[key]:g} {key}s per worker, but the largest node "
                                f"{'the cluster has or can add ' if capacity.groups else ''}"
                                f"has {largest:g}")
    totals = {k: sum(n.get(k, 0.0) for n in capacity.nodes) for k in need}
    grows = (f" and can add {', '.join(_describe(g) for g in capacity.groups)}"
             if capacity.groups else "")
    raise ResourceError(
        "num_workers", f"{request.num_workers} workers with {need} each never fit: the "
        f"cluster's {len(capacity.nodes)} node(s) have {totals} in total{grows}, room for "
        f"{grown} such workers")


def _describe(group: NodeGroup) -> str:
    label = f"group {group.name!r}: " if group.name else ""
    return f"{label}{group.max_count} node(s) of {dict(group.resources)}"


def cluster_capacity() -> Capacity:
    """The connected cluster: alive nodes from ``ray.nodes()``, and the autoscaler's node groups.

    Ray has no public API for the groups' maximum sizes; the autoscaler (KubeRay's included)
    publishes them as a cluster config in the GCS, which Ray Train V2 reads the same way for its
    own check (``ray._private.state.state.get_cluster_config``). None on a static cluster.
    """
    import ray
    nodes = tuple(n.get("Resources", {}) for n in ray.nodes() if n.get("Alive", True))
    config = ray._private.state.state.get_cluster_config()
    groups = tuple(
        NodeGroup(dict(g.resources), g.max_count if g.max_count >= 0 else 10**6, g.name)
        for g in (config.node_group_configs if config is not None else ())
        if g.max_count != 0)
    return Capacity(nodes, groups)


def wait_for_capacity(request: WorkerResources, timeout_s: float,
                      capacity: Callable[[], Capacity] = cluster_capacity,
                      say: Callable[[str], None] = print, poll_s: float = 5.0) -> None:
    """Check the request; while it fits only once the autoscaler adds nodes, ask the autoscaler
    for them and wait, saying so, up to ``timeout_s``; then raise :class:`ResourceError`."""
    if check_resources(request, capacity()):
        return
    from ray.autoscaler.sdk import request_resources

    bundles = [request.per_worker()] * request.num_workers
    say(f"bckd: waiting for capacity: {request.num_workers} workers with "
        f"{request.per_worker()} each need nodes the autoscaler has not added yet "
        f"(waiting up to {timeout_s:g} s)")
    request_resources(bundles=bundles)  # the placement group does not exist yet to ask for them
    deadline = time.monotonic() + timeout_s
    try:
        while not check_resources(request, capacity()):
            if time.monotonic() > deadline:
                raise ResourceError("num_workers", f"no capacity for {request.num_workers} "
                                    f"workers with {request.per_worker()} each after "
                                    f"{timeout_s:g} s of waiting for the autoscaler")
            time.sleep(poll_s)
    finally:
        request_resources(bundles=[])  # a standing request would keep the nodes up forever
    say("bckd: capacity is there; starting the workers")


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """``ray.init`` against ``address`` or ``RAY_ADDRESS``, else a new local cluster.

    Returns True when this call started a local cluster. The dashboard stays on: Ray 2.60's
    Train V2 queries the controller's state through it (else it logs "Failed to query Ray Train
    Controller actor state" repeatedly), and its Train tab shows the run
    (``RAY_TRAIN_ENABLE_STATE_TRACKING=1``, set here before the cluster starts). Token auth,
    on by default for new local clusters, is kept.
    """
    import ray  # here, not at the top: the service imports the rule, not Ray (whose auth mode
    # is read once, when it is first imported)
    os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "1")
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _keep_driver_env_off_workers()
        ray.init(address=address, log_to_driver=True)
        return False
    # Ray's processes that ask the state API without an address (Ray Train's placement-group
    # cleaner checks its controller is alive that way) read RAY_API_SERVER_ADDRESS, else they
    # take the last cluster `ray start` made on this machine: with another cluster there, the
    # cleaner misses this one's controller and removes the run's placement group, killing its
    # workers. It goes to the cluster's processes only, which inherit it from this process's
    # environment while ray.init starts them, and it leaves that environment right after:
    # Ray's clients let it override any address they are given, so a value left behind would
    # send this process's later clients to a cluster that has ended. Not a runtime_env: a job
    # with one starts every process that takes it (five of a run's seven) through Ray's
    # setup_worker.py, a second interpreter and import of Ray (about 1 s of CPU each), and never
    # reuses the workers Ray prestarts.
    port = _free_port()
    before = os.environ.get("RAY_API_SERVER_ADDRESS")
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    try:
        # address="local": a new cluster, even where `ray start` left one on this machine (a
        # bare ray.init() would join that one, with its own resources and token)
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=True,
                 dashboard_port=port, log_to_driver=True)
    finally:
        if before is None:
            del os.environ["RAY_API_SERVER_ADDRESS"]
        else:
            os.environ["RAY_API_SERVER_ADDRESS"] = before
    return True


def _keep_driver_env_off_workers() -> None:
    """Drop :data:`DRIVER_ENV` from the runtime_env that Ray's job supervisor hands this driver
    (as JSON in an environment variable that ``ray.init`` reads), before ``ray.init``.

    Every Ray process of a job whose runtime_env is not empty starts through Ray's
    setup_worker.py (a second interpreter and import of Ray, about 1 s of CPU each) instead of
    from the workers Ray prestarts; five of a run's seven processes take the job's runtime_env
    (docs/JOBS.md, "Job flow"). Ray Train's workers flush their log lines themselves (mmengine's
    logging handlers), so they do without the driver's PYTHONUNBUFFERED. Variables a user put in the
    submission for the workers stay, and so does the submission's metadata. Outside a Ray job
    submission there is nothing to drop.
    """
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR as JOB_CONFIG

    if not os.environ.get(JOB_CONFIG):
        return
    job_config = json.loads(os.environ[JOB_CONFIG])
    runtime_env = job_config.get("runtime_env") or {}
    kept = {k: v for k, v in (runtime_env.get("env_vars") or {}).items() if k not in DRIVER_ENV}
    runtime_env.pop("env_vars", None)
    if kept:
        runtime_env["env_vars"] = kept
    job_config["runtime_env"] = runtime_env
    os.environ[JOB_CONFIG] = json.dumps(job_config)


def connect_for(resources: WorkerResources, address: str | None, num_cpus: int | None,
                timeout_s: float) -> bool:
    """:func:`connect`, then :func:`wait_for_capacity` for ``resources`` (up to ``timeout_s``,
    saying so on stdout): what a job's and a sweep's driver do before they start workers. True
    when it started a local cluster, which the caller ends with :func:`disconnect`; a request
    that never fits ends it here and raises :class:`ResourceError`."""
    started = connect(address, num_cpus)
    try:
        wait_for_capacity(resources, timeout_s, say=lambda line: print(line, flush=True))
    except BaseException:
        disconnect(started)
        raise
    return started


def disconnect(started: bool) -> None:
    """End what :func:`connect` started (``started``: it made a local cluster)."""
    if started:
        import ray

        ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

