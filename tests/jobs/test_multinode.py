"""A run on a two-node ``ray.cluster_utils.Cluster`` (one CPU each) places one worker per node."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from jobtools import TEACHER_CONFIG, head_of_one_cpu, make_synth, tiny

from bckd.config.spec import JobSpec
from bckd.runtime.launch import run_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_nodes():
    with head_of_one_cpu() as cluster:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        yield cluster


def test_workers_run_on_different_nodes(two_nodes, tmp_path: Path):
    data = make_synth(tmp_path / "synth")
    # Both "nodes" share this machine's disk, which stands in for the shared storage a real
    # multi-node run needs (--storage-path on NFS or s3://).
    result = run_job(JobSpec(TEACHER_CONFIG, num_workers=2, name="two_nodes",
                             cfg_options=tiny(data, max_epochs=1),
                             work_dir=str(tmp_path / "work_dirs" / "two_nodes"),
                             storage_path=str(tmp_path / "shared")))
    assert result.status == "FINISHED", result.error
    nodes = {r["node_id"] for r in result.ranks}
    assert len(nodes) == 2, result.ranks
    assert len({r["params_sha256"] for r in result.ranks}) == 1
    assert list((tmp_path / "shared" / "two_nodes").glob("checkpoint_iter_*"))
