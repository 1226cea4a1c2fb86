"""The config trust boundary: what a job may be, checked before anything is built.

:mod:`~bckd.config.policy` (with :mod:`~bckd.config.allowed` and :mod:`~bckd.config.paths`) is
the one config policy; :mod:`~bckd.config.overrides` applies checked overrides;
:mod:`~bckd.config.loader` loads a config and checks its data set and teacher;
:mod:`~bckd.config.jobfile` is the job file the API writes and a job reads;
:mod:`~bckd.config.spec` turns it into a :class:`~bckd.config.spec.JobSpec`;
:mod:`~bckd.config.dataset` points a config at a data set; :mod:`~bckd.config.run_info` says
what a run is, for MLflow. Modules import mmengine lazily where they can, so ``bckd --help``
stays fast.
"""
