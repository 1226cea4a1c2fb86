"""An MLflow login, handed from a job's driver to the processes it starts on Ray.

Kept apart from :mod:`bckd.tracking.runs` so that the service's stack and the cluster's rules
name these variables without importing MLflow.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["LOGIN_ENV", "tracking_login", "use_tracking_login"]

# MLflow's own variables of a login, for a tracking server that checks logins (the service's
# gives each job its owner's: service.core.jobs.driver_env)
LOGIN_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def tracking_login() -> dict[str, str]:
    """This process's MLflow login (:data:`LOGIN_ENV`), to hand to the processes it starts on
    Ray: Ray Train's workers and Tune's trials do not get the driver's environment
    (``bckd.runtime.cluster.DRIVER_ENV``)."""
    return {k: os.environ[k] for k in LOGIN_ENV if os.environ.get(k)}


def use_tracking_login(login: Mapping[str, str]) -> None:
    """Log to MLflow with ``login`` (from :func:`tracking_login`) in this process."""
    os.environ.update({k: v for k, v in login.items() if k in LOGIN_ENV})
