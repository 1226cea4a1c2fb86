"""Sweeps of a job's config values (the distillation loss weights by default) with Ray Tune.

The driver is :func:`bckd.tune.sweep.run_sweep`; each trial is :func:`bckd.tune.trial.run_trial`,
one :func:`bckd.runtime.launch.run_job` whose MLflow run nests under the sweep's parent run.
Modules import Ray Tune and MLflow lazily where they can, so ``bckd --help`` stays fast.
"""

from bckd.tune.space import DEFAULT_SPACE, Param, load_space
from bckd.tune.spec import SweepResult, SweepSpec
from bckd.tune.sweep import run_sweep

__all__ = ["DEFAULT_SPACE", "Param", "SweepResult", "SweepSpec", "load_space", "run_sweep"]
