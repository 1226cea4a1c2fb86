"""Each owner's own MLflow login, provisioned through MLflow's basic-auth app, and the marks
(seals) that only the service can put on MLflow objects.

The tracking server runs MLflow's auth app with ``default_permission = NO_PERMISSIONS``
(``service.stack.embedded``; compose and KubeRay do the same): a login sees no experiment until
it is granted one. The service holds the admin login, in MLflow's own variables
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` of the API's environment (every
MLflow client of the process then sends it). For each owner it makes an MLflow user of the
owner's name, whose password is an HMAC of the owner's name under the service's MLflow secret
(``BCKD_MLFLOW_SECRET``, else the admin password), so API replicas agree without a table, and
grants that user EDIT on each experiment it creates for the owner. The owner gets the login from
``GET /v1/me/mlflow``; the owner's jobs log with it (``service.core.jobs.driver_env``).

Why MLflow's app and not a proxy in the API: MLflow's UI and REST API then check every route
themselves, artifacts and the UI's own ajax calls included; a proxy would have to know each
route's resource. Why EDIT and not MANAGE: MANAGE would let an owner grant others their
experiments; sharing goes through the service (an admin's ``PUT /v1/runs/{id}/shared``).

A login may still create experiments of any name (MLflow's app lets every user create one), so
an experiment's name proves nothing: the service tags each experiment it creates with a seal, an
HMAC of its name under the same secret (:meth:`MlflowUsers.seal`), and
trusts an experiment's owner (the name's ``<owner>/`` part) only where the seal holds. A login
cannot read another owner's experiment, so it cannot copy its seal, and a seal moved to another
name does not hold there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from dataclasses import dataclass

from bckd.tracking.login import LOGIN_ENV

__all__ = ["Login", "MlflowUsers", "OwnerLoginRefused"]

# What an owner's user may do on each experiment the service made for them: log runs, metrics
# and artifacts, create runs (a sweep's trials), rename; not delete, nor grant others.
OWNER_PERMISSION = "EDIT"


class OwnerLoginRefused(ValueError):
    """The owner's name is the service's own MLflow admin's: no login is made for it."""


@dataclass(frozen=True)
class Login:
    username: str
    password: str

    def env(self) -> dict[str, str]:
        """MLflow's variables for this login (every MLflow client of a process reads them)."""
        return dict(zip(LOGIN_ENV, (self.username, self.password), strict=True))


class MlflowUsers:
    """The owners' MLflow users on the tracking server ``uri``, made with the ``admin`` login;
    ``secret`` keys their passwords and the seals (``Settings.mlflow_secret``; empty: the admin
    password)."""

    def __init__(self, uri: str, admin: Login, secret: str = ""):
        from mlflow.server.auth.client import AuthServiceClient

        self.admin = admin
        self.client = AuthServiceClient(uri)  # sends the process's MLflow login: the admin's
        self._key = hashlib.sha256(b"bckd-mlflow\0" + (secret or admin.password).encode()
                                   ).digest()
        self._lock = threading.Lock()
        self._made: set[str] = set()  # owners whose user has their password, in this process
        self._granted: set[tuple[str, str]] = set()

    def _mac(self, *parts: str) -> str:
        msg = "\0".join(parts).encode()
        return base64.urlsafe_b64encode(hmac.digest(self._key, msg, "sha256")).decode()[:40]

    def seal(self, *parts: str) -> str:
        """A mark of ``parts`` that only a holder of the service's secret can make."""
        return self._mac("seal", *parts)

    def holds(self, mark: str | None, *parts: str) -> bool:
        return mark is not None and hmac.compare_digest(mark, self.seal(*parts))

    def login(self, owner: str) -> Login:
        """``owner``'s login (made on the server by :meth:`ensure`)."""
        if owner == self.admin.username:
            raise OwnerLoginRefused(f"owner {owner!r} has the name of the service's MLflow admin")
        return Login(owner, self._mac("login", owner))

    def ensure(self, owner: str) -> Login:
        """``owner``'s login, its user made (or its password set again) on the server once per
        process."""
        from mlflow.exceptions import MlflowException

        login = self.login(owner)
        with self._lock:
            if owner in self._made:
                return login
        try:
            self.client.create_user(login.username, login.password)
        except MlflowException as err:  # made earlier: by another replica, or before a rotation
            if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "INVALID_PARAMETER_VALUE"):
                raise
            self.client.update_user_password(login.username, login.password)
        with self._lock:
            self._made.add(owner)
        return login

    def grant(self, owner: str, experiment_id: str) -> None:
        """Give ``owner``'s user :data:`OWNER_PERMISSION` on the experiment (once per process)."""
        from mlflow.exceptions import MlflowException

        if (owner, experiment_id) in self._granted:
            return
        self.ensure(owner)
        try:
            self.client.grant_user_permission(owner, "experiment", experiment_id,
                                              OWNER_PERMISSION)
        except MlflowException as err:  # granted by another replica, or by an earlier process
            if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "INVALID_PARAMETER_VALUE"):
                raise
        with self._lock:
            self._granted.add((owner, experiment_id))
