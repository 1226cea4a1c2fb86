"""The embedded stack of ``bckd serve``: Ray head + MLflow server + the API, on loopback.

Each part is a child process owned by :class:`Stack`; ``stop()`` ends them in reverse order
(API, MLflow, Ray). Ray keeps its token auth on: the stack writes a token file
(``<data_dir>/ray_auth_token``) and exports ``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN_PATH`` to Ray and to the API, whose ``JobSubmissionClient`` then sends it.

Ports: the API's, the dashboard's and MLflow's are the config's; every other Ray port is a free
one. Before anything starts, :func:`check_ports` refuses a port that is no TCP port, one given
to two parts, or one already taken on the host. Ray's workers bind ports of a range (``ray
start``'s default 10002-19999); the stack gives Ray the longest run of that range that holds
none of its ports (:func:`worker_port_range`), so ``--dashboard-port 18265`` works and no
worker takes the API's or MLflow's port before they bind it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service.auth import write_admin_token
from service.settings import PROJECT_ROOT

__all__ = ["RAY_WORKER_PORTS", "PortError", "Stack", "StackConfig", "check_ports", "free_port",
           "wait_http", "worker_port_range"]

RAY_WORKER_PORTS = (10002, 19999)  # `ray start`'s default --min-worker-port/--max-worker-port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None,
              ok=(200, 401, 403)) -> None:
    """Poll ``url`` until it answers one of ``ok`` (401: up, but wants a token)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode} before {url} "
                               "answered")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status in ok:
                    return
        except urllib.error.HTTPError as err:
            if err.code in ok:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:g} s")


@dataclass
class StackConfig:
    data_dir: Path = Path(".bckd")  # DB, tokens, MLflow store, durable logs
    host: str = "127.0.0.1"  # everything binds here; loopback by default
    api_port: int = 8000
    dashboard_port: int = 8265
    mlflow_port: int = 5000
    num_cpus: int | None = None  # Ray's CPU count; None: all cores
    ray_address: str | None = None  # attach to this dashboard URL instead of starting Ray
    mlflow_uri: str | None = None  # attach to this tracking server instead of starting one
    database_url: str | None = None  # instead of sqlite:///<data_dir>/service.db
    extra_env: dict[str, str] = field(default_factory=dict)  # for the API process


class PortError(ValueError):
    """A port of the :class:`StackConfig` field ``field`` that the stack cannot use; ``other``
    is the field that already has it, if that is the reason."""

    def __init__(self, field: str, port: int, reason: str, other: str | None = None):
        self.field, self.port, self.reason, self.other = field, port, reason, other
        super().__init__(self.describe())

    def describe(self, names: Mapping[str, str] | None = None) -> str:
        """One line, the fields as ``names`` calls them (``bckd serve``: its options)."""
        name = (names or {}).get
        why = self.reason if self.other is None else f"{self.reason} {name(self.other, self.other)}"
        return f"{name(self.field, self.field)} {self.port}: {why}"


def own_ports(cfg: StackConfig) -> dict[str, int]:
    """The ports the stack binds itself, by config field (a part it attaches to binds none)."""
    ports = {"api_port": cfg.api_port}
    if cfg.ray_address is None:
        ports["dashboard_port"] = cfg.dashboard_port
    if cfg.mlflow_uri is None:
        ports["mlflow_port"] = cfg.mlflow_port
    return ports


def check_ports(cfg: StackConfig) -> dict[str, int]:
    """:func:`own_ports`, or :class:`PortError` for the first that is no TCP port, repeats an
    earlier one or is already taken on ``cfg.host``."""
    ports = own_ports(cfg)
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if not 1 <= port <= 65535:
            raise PortError(name, port, "not a TCP port (1-65535)")
        if port in seen:
            raise PortError(name, port, "the same port as", other=seen[port])
        seen[port] = name
        if not _bindable(cfg.host, port):
            raise PortError(name, port, f"already in use on {cfg.host}")
    return ports


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        # as the servers bind: a port whose last connection is in TIME_WAIT counts as free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def worker_port_range(taken: Iterable[int],
                      ports: tuple[int, int] = RAY_WORKER_PORTS) -> tuple[int, int]:
    """The longest run ``(first, last)`` of ``ports`` that holds none of ``taken``.

    Ray refuses a dashboard port inside its worker range, and a worker may bind a port of the
    range that the API or MLflow is about to take; cutting the range around them avoids both.
    """
    lo, hi = ports
    cuts = sorted({p for p in taken if lo <= p <= hi})
    gaps = zip([lo - 1, *cuts], [*cuts, hi + 1], strict=True)  # (taken, next taken) neighbours
    below, above = max(gaps, key=lambda g: g[1] - g[0])
    return below + 1, above - 1


def _spare_port(taken: set[int], avoid: tuple[int, int]) -> int:
    """A free port that is none of ``taken`` and outside ``avoid``; added to ``taken``."""
    for _ in range(100):
        port = free_port()
        if port not in taken and not avoid[0] <= port <= avoid[1]:
            taken.add(port)
            return port
    raise RuntimeError(f"no free port outside {avoid[0]}-{avoid[1]}: check "
                       "net.ipv4.ip_local_port_range")


class Stack:
    def __init__(self, cfg: StackConfig):
        self.cfg = cfg
        self.data_dir = cfg.data_dir.resolve()
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.ray_url = cfg.ray_address or f"http://{cfg.host}:{cfg.dashboard_port}"
        self.mlflow_url = cfg.mlflow_uri or f"http://{cfg.host}:{cfg.mlflow_port}"
        self.api_url = f"http://{cfg.host}:{cfg.api_port}"
        self.tokens_file = self.data_dir / "tokens"
        self.admin_token_file: Path | None = None
        # Ray's token, which its dashboard asks for once per browser; None: an attached cluster
        self.ray_token_file = self.data_dir / "ray_auth_token" if cfg.ray_address is None else None
        self.worker_ports: tuple[int, int] | None = None  # Ray's workers' range, once started
        self._ray_tmp: str | None = None
        self.env = dict(os.environ)

    def _spawn(self, label: str, argv: list[str], env: dict[str, str], log: Path,
               cwd: Path = PROJECT_ROOT) -> subprocess.Popen:
        fh = open(log, "ab")  # noqa: SIM115 - the child owns it for its lifetime
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)  # Ctrl-C reaches us only; we stop it
        fh.close()
        self.procs.append((label, proc))
        return proc

    def start(self, timeout: float = 180.0) -> None:
        ports = check_ports(self.cfg)  # before anything starts
        self.data_dir.mkdir(parents=True, exist_ok=True)
        logs = self.data_dir / "service-logs"
        logs.mkdir(exist_ok=True)
        self.admin_token_file = write_admin_token(self.data_dir, self.tokens_file)
        waits = []
        if self.ray_token_file is not None:
            proc = self._spawn("ray", self._ray_argv(set(ports.values())), self._ray_env(),
                               logs / "ray.log")
            waits.append((f"{self.ray_url}/api/version", proc))
        if self.cfg.mlflow_uri is None:
            store = self.data_dir / "mlflow"
            store.mkdir(exist_ok=True)
            argv = [sys.executable, "-m", "mlflow", "server",
                    "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
                    "--artifacts-destination", str(store / "artifacts"),
                    "--host", self.cfg.host, "--port", str(self.cfg.mlflow_port),
                    "--workers", "1"]
            proc = self._spawn("mlflow", argv, self.env, logs / "mlflow.log")
            waits.append((f"{self.mlflow_url}/health", proc))
        try:
            for url, proc in waits:  # started together, waited for in turn
                wait_http(url, timeout, proc)
            self.start_api(timeout)
        except BaseException:
            self.stop()
            raise

    def _ray_env(self) -> dict[str, str]:
        token = self.ray_token_file
        if not token.exists():
            token.touch(mode=0o600)
            token.write_text(secrets.token_hex(32))
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
        self.env.pop("RAY_AUTH_TOKEN", None)
        ray_env = dict(self.env, RAY_JOB_STOP_SIGNAL="SIGINT")
        # Nothing here drains (no Serve proxies): stop in seconds, not Ray's default 30 s.
        ray_env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "3")
        ray_env.pop("RAY_ADDRESS", None)
        return ray_env

    def _ray_argv(self, taken: set[int]) -> list[str]:
        """``ray start --head`` with the dashboard's port, workers in a range without the
        stack's ports, and a free port, outside that range, for each other Ray port."""
        self.worker_ports = worker_port_range(taken)
        # A short private temp dir: Ray's unix sockets live there (path length limit), and
        # a plain `ray.init()` elsewhere on the machine does not find this cluster.
        self._ray_tmp = tempfile.mkdtemp(prefix="bckd-ray-", dir="/tmp")
        argv = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                "--node-ip-address", self.cfg.host,
                "--dashboard-host", self.cfg.host, "--dashboard-port",
                str(self.cfg.dashboard_port), "--include-dashboard", "true",
                "--min-worker-port", str(self.worker_ports[0]),
                "--max-worker-port", str(self.worker_ports[1]),
                "--temp-dir", self._ray_tmp, "--disable-usage-stats"]
        # Ray's fixed default ports (GCS 6379, agent 52365, ...) clash with any other cluster
        # on the machine; pick free ones so several stacks (and tests) can run side by side.
        for flag in ("--port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                     "--runtime-env-agent-port", "--metrics-export-port",
                     "--ray-client-server-port", "--node-manager-port",
                     "--object-manager-port"):
            argv += [flag, str(_spare_port(taken, self.worker_ports))]
        if self.cfg.num_cpus is not None:
            argv += ["--num-cpus", str(self.cfg.num_cpus)]
        return argv

    def api_env(self) -> dict[str, str]:
        env = dict(self.env)
        env.update(BCKD_DATA_DIR=str(self.data_dir), BCKD_RAY_ADDRESS=self.ray_url,
                   BCKD_MLFLOW_URI=self.mlflow_url, BCKD_TOKENS_FILE=str(self.tokens_file),
                   BCKD_JOB_PYTHON=sys.executable)
        if self.cfg.database_url:
            env["BCKD_DATABASE_URL"] = self.cfg.database_url
        env.update(self.cfg.extra_env)
        return env

    def start_api(self, timeout: float = 60.0) -> subprocess.Popen:
        argv = [sys.executable, "-m", "uvicorn", "service.main:app", "--host", self.cfg.host,
                "--port", str(self.cfg.api_port), "--log-level", "warning"]
        proc = self._spawn("api", argv, self.api_env(), self.data_dir / "service-logs" /
                           "api.log")
        wait_http(f"{self.api_url}/v1/health", timeout, proc)
        return proc

    def stop_api(self) -> None:
        for label, proc in [p for p in self.procs if p[0] == "api"]:
            _terminate(proc)
            self.procs.remove((label, proc))

    def stop(self) -> None:
        for _label, proc in reversed(self.procs):
            _terminate(proc)
        self.procs.clear()
        if self._ray_tmp is not None:
            shutil.rmtree(self._ray_tmp, ignore_errors=True)
            self._ray_tmp = None


def _terminate(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM the leader (``ray start --block`` then stops its own children in order), then
    SIGKILL whatever is left of its process group (its own session, so nothing else)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
