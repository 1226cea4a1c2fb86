"""Fixtures shared across test folders; each folder's helpers live in its own ``*tools.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local 2-CPU Ray cluster for one test module (``bckd.runtime.cluster.connect``, as a
    ``bckd train`` without ``--address`` starts it); yields its GCS address."""
    import ray  # here, not at collection: Ray reads its auth settings at its first import

    from bckd.runtime.cluster import connect

    if ray.is_initialized():
        ray.shutdown()
    connect(num_cpus=2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
