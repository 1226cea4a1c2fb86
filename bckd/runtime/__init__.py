"""The Ray runtime of a training job: the driver, the per-worker function and their hooks.

The driver is :func:`bckd.runtime.launch.run_job` (its input: :class:`bckd.config.spec.JobSpec`),
which connects to the cluster (:mod:`~bckd.runtime.cluster`) and runs a TorchTrainer; each worker
runs :func:`bckd.runtime.worker.train_worker`, an mmengine Runner with the hooks of
:mod:`bckd.runtime.hooks`. Checkpoints (:mod:`~bckd.runtime.ray_checkpoints`), stop signals
(:mod:`~bckd.runtime.signals`, :mod:`~bckd.runtime.stop`) and injected faults for tests
(:mod:`~bckd.runtime.faults`) live beside them. Modules import Ray, MLflow and mmengine lazily
where they can, so ``bckd --help`` stays fast.
"""
