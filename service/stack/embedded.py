"""The embedded stack of ``bckd serve``: Ray head + MLflow server + the API, on loopback.

Each part is a child process owned by :class:`Stack`, in its own session, with the command line,
environment and log it was started with (:class:`Part`), so that ``respawn`` starts it again the
same way: Ray on the same ports, token and temp dir, MLflow on the same port and backend store.
``stop()`` ends them in reverse order (API, MLflow, Ray). Watching and restarting them is
``service.stack.supervisor``'s; ``Stack`` alone (the demo, the benchmarks) restarts nothing.
Ray keeps its token auth on: the stack writes a token file (``<data_dir>/ray_auth_token``) and
exports ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH`` to Ray and to the API, whose
``JobSubmissionClient`` then sends it. MLflow checks logins (``service.stack.mlflow_server``);
its admin login goes to the API only. The ports: ``service.stack.ports``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bckd.tracking.login import LOGIN_ENV
from service.adapters.mlflow_users import Login
from service.core.auth import write_admin_token
from service.settings import PROJECT_ROOT
from service.stack.mlflow_server import admin_uri, api_env, mlflow_server
from service.stack.ports import (
    RAY_WORKER_PORTS,
    PortError,
    check_ports,
    free_port,
    own_ports,
    spare_port,
    worker_port_range,
)
from service.stack.sandbox import confine
from service.stack.takeover import die_with, remove_lock, take_over, write_lock

# the port names stay importable from here, where the stack's users found them first
__all__ = ["RAY_WORKER_PORTS", "Part", "PortError", "Stack", "StackConfig", "answers",
           "check_ports", "free_port", "wait_http", "worker_port_range"]


def answers(url: str, ok=(200, 401, 403), timeout: float = 5.0) -> bool:
    """Whether ``url`` answers one of ``ok`` now (401: up, but wants a token)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status in ok
    except urllib.error.HTTPError as err:
        return err.code in ok
    except OSError:
        return False


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None,
              ok=(200, 401, 403)) -> None:
    """Poll ``url`` until it answers one of ``ok``; fails early if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode} before {url} "
                               "answered")
        if answers(url, ok):
            return
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


@dataclass
class Part:
    """One child process of the stack and what it takes to start it again the same way."""

    label: str  # "ray", "mlflow", "api"
    argv: list[str]
    env: dict[str, str]
    log: Path  # stdout and stderr, appended to across restarts
    health_url: str | None = None  # answers once the part is up
    proc: subprocess.Popen | None = None
    started_at: float = 0.0  # time.monotonic() of the last start


class Stack:
    def __init__(self, cfg: StackConfig):
        self.cfg = cfg
        self.data_dir = cfg.data_dir.resolve()
        self.parts: dict[str, Part] = {}  # in start order; stop() goes the other way
        self.ray_url = cfg.ray_address or f"http://{cfg.host}:{cfg.dashboard_port}"
        self.mlflow_url = cfg.mlflow_uri or f"http://{cfg.host}:{cfg.mlflow_port}"
        self.api_url = f"http://{cfg.host}:{cfg.api_port}"
        self.tokens_file = self.data_dir / "tokens"
        self.admin_token_file: Path | None = None
        # Ray's token, which its dashboard asks for once per browser; None: an attached cluster
        self.ray_token_file = self.data_dir / "ray_auth_token" if cfg.ray_address is None else None
        self.mlflow_admin: Login | None = None  # the API's; None: an attached MLflow's is in env
        self.worker_ports: tuple[int, int] | None = None  # Ray's workers' range, once started
        self._ray_tmp: str | None = None
        self.env = dict(os.environ)
        self.say: Callable[[str], None] = print  # what start() found of an earlier stack

    @property
    def procs(self) -> list[tuple[str, subprocess.Popen]]:
        """The parts' processes by label, in start order."""
        return [(label, part.proc) for label, part in self.parts.items()]

    def spawn(self, label: str, argv: list[str], env: dict[str, str], log: Path,
              health_url: str | None = None) -> subprocess.Popen:
        """Start the part ``label`` (it replaces a stopped one of that label)."""
        part = Part(label, argv, env, log, health_url)
        self.parts[label] = part
        proc = _launch(part)
        self._write_lock()  # at once: a supervisor killed during the start leaves it behind
        return proc

    def respawn(self, label: str) -> subprocess.Popen:
        """Start ``label`` again as it was started first. What is left of its old process group
        is killed first: a Ray head whose ``ray start`` died leaves its GCS and raylet holding
        the ports the new one needs."""
        part = self.parts[label]
        _terminate(part.proc, grace=5.0)
        with open(part.log, "a") as fh:  # where one run's output ends in the log
            fh.write(f"\n--- bckd serve: {label} restarted at {time.strftime('%F %T')} ---\n")
        proc = _launch(part)
        self._write_lock()
        return proc

    def start(self, timeout: float = 180.0) -> None:
        # an earlier stack of this data dir whose supervisor died holds the ports: clear it first
        take_over(self.data_dir, own_ports(self.cfg), self.say)
        ports = check_ports(self.cfg)  # before anything starts
        self.data_dir.mkdir(parents=True, exist_ok=True)
        logs = self.data_dir / "service-logs"
        logs.mkdir(exist_ok=True)
        self.admin_token_file = write_admin_token(self.data_dir, self.tokens_file)
        waits = []
        if self.ray_token_file is not None:
            url = f"{self.ray_url}/api/version"
            # Ray, and so every job's driver and worker, in the jobs' sandbox
            # (service.stack.sandbox)
            argv, env = confine(self._ray_argv(set(ports.values())), self._ray_env(),
                                self.data_dir, hidden=[self.tokens_file])
            proc = self.spawn("ray", argv, env, logs / "ray.log", url)
            waits.append((url, proc))
        if self.cfg.mlflow_uri is None:
            argv, env, self.mlflow_admin = mlflow_server(self.data_dir, self.cfg.host,
                                                         self.cfg.mlflow_port)
            url = f"{self.mlflow_url}/health"
            proc = self.spawn("mlflow", argv, {**self.env, **env}, logs / "mlflow.log", url)
            waits.append((url, proc))
        try:
            for url, proc in waits:  # started together, waited for in turn
                wait_http(url, timeout, proc)
            self.start_api(timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def mlflow_admin_uri(self) -> str:
        """The tracking URI with the admin login in it (a test's or an operator's client)."""
        return admin_uri(self.mlflow_url, self.mlflow_admin)

    def _write_lock(self) -> None:
        write_lock(self.data_dir, {label: p.proc.pid for label, p in self.parts.items()},
                   own_ports(self.cfg), self.api_url, self._ray_tmp)

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
        for name in LOGIN_ENV:  # a job logs with its owner's login, given in its submission
            ray_env.pop(name, None)
        # Ray's own processes (Ray Train's placement-group cleaner among them) that ask the
        # state API without an address find it here; else they take the last `ray start` on
        # the machine, maybe another cluster, and there miss this cluster's Train controller
        # and remove its placement group, killing a healthy run (bckd.runtime.cluster.connect).
        ray_env["RAY_API_SERVER_ADDRESS"] = self.ray_url
        if self.cfg.host in ("127.0.0.1", "::1", "localhost"):  # test_loopback.py
            # `ray start` swaps a loopback node IP for the host's and binds there or on every
            # interface, unless it believes clusters are off (its Windows/macOS default)
            ray_env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
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
            argv += [flag, str(spare_port(taken, self.worker_ports))]
        if self.cfg.num_cpus is not None:
            argv += ["--num-cpus", str(self.cfg.num_cpus)]
        return argv

    def api_env(self) -> dict[str, str]:
        env = dict(self.env)
        env.update(BCKD_DATA_DIR=str(self.data_dir), BCKD_RAY_ADDRESS=self.ray_url,
                   BCKD_MLFLOW_URI=self.mlflow_url, BCKD_TOKENS_FILE=str(self.tokens_file),
                   BCKD_JOB_PYTHON=sys.executable,
                   # Ray's clients let this variable override the address they are given
                   RAY_API_SERVER_ADDRESS=self.ray_url)
        if self.cfg.database_url:
            env["BCKD_DATABASE_URL"] = self.cfg.database_url
        if self.mlflow_admin is not None:  # the API's MLflow clients send it (Settings)
            env.update(api_env(self.data_dir))
        env.update(self.cfg.extra_env)
        return env

    def start_api(self, timeout: float = 60.0) -> subprocess.Popen:
        argv = [sys.executable, "-m", "uvicorn", "service.main:app", "--host", self.cfg.host,
                "--port", str(self.cfg.api_port), "--log-level", "warning"]
        url = f"{self.api_url}/v1/health"
        proc = self.spawn("api", argv, self.api_env(), self.data_dir / "service-logs" /
                          "api.log", url)
        wait_http(url, timeout, proc)
        return proc

    def stop_api(self) -> None:
        if (part := self.parts.pop("api", None)) is not None:
            _terminate(part.proc)

    def stop(self, said: Callable[[str], None] | None = None) -> None:
        """End the parts, the last started first (API, MLflow, Ray); ``said(label)`` after
        each. Nothing restarts them meanwhile: the supervisor runs in the caller's thread."""
        while self.parts:
            label, part = self.parts.popitem()  # the last inserted
            _terminate(part.proc)
            if said is not None:
                said(label)
        if self._ray_tmp is not None:
            shutil.rmtree(self._ray_tmp, ignore_errors=True)
            self._ray_tmp = None
        remove_lock(self.data_dir)


def _launch(part: Part, cwd: Path = PROJECT_ROOT) -> subprocess.Popen:
    fh = open(part.log, "ab")  # noqa: SIM115 - the child owns it for its lifetime
    # Its own session: Ctrl-C reaches us only, and we stop it. A parent-death signal: a part
    # never runs on without its supervisor (SIGKILLed, OOM-killed), see service.stack.takeover.
    part.proc = subprocess.Popen(part.argv, env=part.env, cwd=cwd, stdout=fh,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=die_with(os.getpid()))  # noqa: PLW1509
    fh.close()
    part.started_at = time.monotonic()
    return part.proc


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
