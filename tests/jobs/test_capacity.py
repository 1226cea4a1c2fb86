"""A job that fits only on nodes an autoscaler can add waits for them, on a real Ray cluster.

No autoscaler runs here (KubeRay needs Kubernetes), so the test does its two jobs: it publishes
a node group in the GCS the way an autoscaler does (the cluster config Ray Train reads too),
and it adds the node (``Cluster.add_node``) once the job says it waits. The waiting itself,
the node's arrival and the check that sees it are Ray's and ours.
"""

from __future__ import annotations

import threading

import pytest
import ray
from jobtools import head_of_one_cpu
from ray._raylet import GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, GCS_AUTOSCALER_STATE_NAMESPACE
from ray.core.generated import autoscaler_pb2
from ray.experimental.internal_kv import _internal_kv_put

from bckd.runtime.cluster import ResourceError, WorkerResources, cluster_capacity, wait_for_capacity

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scaling_cluster():
    with head_of_one_cpu() as cluster:
        ray.init(address=cluster.address)
        config = autoscaler_pb2.ClusterConfig(node_group_configs=[
            autoscaler_pb2.NodeGroupConfig(name="cpu", resources={"CPU": 1}, min_count=0,
                                           max_count=1)])
        _internal_kv_put(GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, config.SerializeToString(),
                         namespace=GCS_AUTOSCALER_STATE_NAMESPACE)
        yield cluster


def test_waits_for_the_node_then_goes_on(scaling_cluster):
    capacity = cluster_capacity()
    assert [g.max_count for g in capacity.groups] == [1]
    up = len(capacity.nodes)  # the head (and the node an earlier test added)
    said: list[str] = []
    waiting = threading.Event()

    def say(line: str) -> None:
        said.append(line)
        waiting.set()

    # a worker too many for the nodes up: refused nowhere, it waits for the group's node
    thread = threading.Thread(target=wait_for_capacity, daemon=True, kwargs=dict(
        request=WorkerResources(up + 1, 1), timeout_s=120, say=say, poll_s=0.2))
    thread.start()
    assert waiting.wait(60)
    assert thread.is_alive() and f"waiting for capacity: {up + 1} workers" in said[0]
    scaling_cluster.add_node(num_cpus=1)
    thread.join(60)
    assert not thread.is_alive() and said[-1] == "bckd: capacity is there; starting the workers"
    # more than the nodes up now and the group at its maximum can give fails at once, naming
    # the setting (the bound counts the group's node that is up twice)
    with pytest.raises(ResourceError, match=f"num_workers: {up + 3} workers") as info:
        wait_for_capacity(WorkerResources(up + 3, 1), timeout_s=120, say=said.append)
    assert "group 'cpu': 1 node(s)" in str(info.value)
    assert f"room for {up + 2}" in str(info.value)


def test_gives_up_after_the_timeout(scaling_cluster):
    said: list[str] = []
    beyond_the_nodes_up = len(cluster_capacity().nodes) + 1
    with pytest.raises(ResourceError, match="after 1 s of waiting"):
        wait_for_capacity(WorkerResources(beyond_the_nodes_up, 1), timeout_s=1, say=said.append,
                          poll_s=0.2)
    assert len(said) == 1 and "waiting up to 1 s" in said[0]
