"""The embedded stack's MLflow tracking server: its command line, and its auth app's settings.

MLflow runs its basic-auth app with ``default_permission = NO_PERMISSIONS``: a login sees
nothing it was not granted. The admin login is made once per data dir (``<data_dir>/
mlflow_admin``, 0600, hidden from the jobs' sandbox with the rest of the data dir) and goes to
the API only, which makes one login per owner (``service.adapters.mlflow_users``).
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

from service.adapters.mlflow_users import Login

__all__ = ["MLFLOW_ADMIN", "admin_login", "admin_uri", "api_env", "mlflow_server",
           "service_secret"]

# The admin's user name: no owner's (service.core.auth.OWNER_NAME starts with a letter or
# digit), so no owner's login can be the admin's.
MLFLOW_ADMIN = "_bckd"


def mlflow_server(data_dir: Path, host: str, port: int) -> tuple[list[str], dict[str, str], Login]:
    """``mlflow server``'s command line, the variables it needs besides the stack's, and the
    admin login; its stores (runs, artifacts, users) live in ``<data_dir>/mlflow``."""
    store = data_dir / "mlflow"
    store.mkdir(exist_ok=True)
    secrets_file = data_dir / "mlflow_admin"
    if not secrets_file.exists():
        secrets_file.touch(mode=0o600)
        secrets_file.write_text(json.dumps({
            "username": MLFLOW_ADMIN, "password": secrets.token_hex(24),
            "flask_secret": secrets.token_hex(32), "secret": secrets.token_hex(32)}))
    saved = json.loads(secrets_file.read_text())
    login = Login(saved["username"], saved["password"])
    ini = store / "auth.ini"
    ini.write_text("[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
                   f"database_uri = sqlite:///{store / 'auth.db'}\n"
                   f"admin_username = {saved['username']}\n"
                   # a login's PBKDF2 check once a minute, not on each of a job's requests:
                   # one worker, so a password the API changes is dropped at once
                   "auth_cache_ttl_seconds = 60\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    argv = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
            "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
            "--artifacts-destination", str(store / "artifacts"),
            "--host", host, "--port", str(port), "--workers", "1"]
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(ini),
           # read once: when the auth app makes the admin user in an empty auth.db
           "MLFLOW_AUTH_ADMIN_PASSWORD": saved["password"],
           # the UI's sessions and CSRF tokens outlive a restart of the server
           "MLFLOW_FLASK_SERVER_SECRET_KEY": saved["flask_secret"],
           # MLflow 3 starts a job runner and seven huey consumers beside the server for its
           # GenAI jobs (scorers, trace roll-ups), which BCKD never submits: about 35 s of CPU
           # at each start, on cores the Ray head is starting on. The tracking server is the
           # same without them; a deployment that wants them sets the variable itself.
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return argv, env, login


def service_secret(data_dir: Path) -> str:
    """The service's MLflow secret of the stack of ``data_dir`` (``BCKD_MLFLOW_SECRET``: the key
    of the owners' passwords and the seals); empty for a data dir made before it existed."""
    return json.loads((data_dir / "mlflow_admin").read_text()).get("secret", "")


def api_env(data_dir: Path) -> dict[str, str]:
    """What an API of the stack of ``data_dir`` needs of its MLflow: the admin login, in
    MLflow's own variables, and the service's secret. Every API of one MLflow needs the same:
    one with another secret would set each owner's password to its own at its first use."""
    return {**admin_login(data_dir).env(), "BCKD_MLFLOW_SECRET": service_secret(data_dir)}


def admin_login(data_dir: Path) -> Login | None:
    """The admin login of the stack of ``data_dir`` (None before its MLflow first started)."""
    path = data_dir / "mlflow_admin"
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    return Login(saved["username"], saved["password"])


def admin_uri(url: str, login: Login | None) -> str:
    """``url`` with ``login`` in it (MLflow's clients send it as basic auth): a test's or an
    operator's client of the stack's MLflow."""
    if login is None:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{login.username}:{login.password}@{rest}"
