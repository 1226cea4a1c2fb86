"""Running training jobs: config checks, Ray cluster, MLflow tracking, mmengine hooks, workers.

The driver side is :func:`bckd.engine.launch.run_job` (its input:
:class:`bckd.engine.spec.JobSpec`); the worker side is :func:`bckd.engine.worker.train_worker`.
Modules import Ray, MLflow and mmengine lazily where they can, so ``bckd --help`` stays fast.
"""

from bckd.engine.launch import run_job
from bckd.engine.spec import JobResult, JobSpec

__all__ = ["JobResult", "JobSpec", "run_job"]
