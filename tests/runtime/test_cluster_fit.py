"""The one resource-fit rule (``bckd.runtime.cluster.check_resources``): per-node packing, what
``gpus_per_worker`` may be, and node groups an autoscaler can add."""

from __future__ import annotations

import pytest

from bckd.runtime.cluster import Capacity, NodeGroup, ResourceError, WorkerResources
from bckd.runtime.cluster import check_resources as fits


def _nodes(*cpus: float, gpus: float = 0.0) -> Capacity:
    return Capacity(tuple({"CPU": c, "GPU": gpus} for c in cpus))


def _refused(request: WorkerResources, capacity: Capacity) -> ResourceError:
    with pytest.raises(ResourceError) as info:
        fits(request, capacity)
    return info.value


def test_workers_are_packed_node_by_node():
    assert fits(WorkerResources(2, 1), _nodes(1, 1)) is True
    assert fits(WorkerResources(3, 2), _nodes(4, 2)) is True
    # 6 CPUs in total, but no node holds two 3-CPU workers: the rule the API once lacked
    err = _refused(WorkerResources(2, 3), _nodes(4, 2))
    assert err.field == "num_workers" and "room for 1" in err.message
    err = _refused(WorkerResources(1, 5), _nodes(4, 2))
    assert err.field == "cpus_per_worker" and "largest node has 4" in err.message


def test_gpus_per_worker_is_zero_or_one():
    assert fits(WorkerResources(2, 1, 1), _nodes(8, 8, gpus=1)) is True
    err = _refused(WorkerResources(1, 1, 1), _nodes(8))
    assert err.field == "gpus_per_worker" and "largest node has 0" in err.message
    for bad in (0.5, 2):
        err = _refused(WorkerResources(1, 1, bad), _nodes(8, gpus=8))
        assert err.field == "gpus_per_worker" and "must be 0 or 1" in err.message
    assert _refused(WorkerResources(0, 1), _nodes(8)).field == "num_workers"
    assert _refused(WorkerResources(1, 0), _nodes(8)).field == "cpus_per_worker"


def test_groups_that_scale_from_zero_make_a_job_wait_not_fail():
    # the shipped KubeRay cluster: a head of 0 CPUs, a GPU group of 8-CPU nodes from 0 to 4
    kuberay = Capacity(({"CPU": 0.0},), (NodeGroup({"CPU": 8, "GPU": 1}, 4, "gpu"),))
    assert fits(WorkerResources(2, 1), kuberay) is False  # a CPU job waits for a node
    assert fits(WorkerResources(4, 4, 1), kuberay) is False
    err = _refused(WorkerResources(5, 1, 1), kuberay)
    assert err.field == "num_workers" and "group 'gpu': 4 node(s)" in err.message
    err = _refused(WorkerResources(1, 9), kuberay)
    assert err.field == "cpus_per_worker" and "can add" in err.message
    # nodes up now are used first: no wait when they suffice
    up = Capacity(({"CPU": 8.0, "GPU": 1.0},), kuberay.groups)
    assert fits(WorkerResources(1, 8, 1), up) is True
    assert fits(WorkerResources(2, 8, 1), up) is False
