"""``bckd serve`` and its ports, and the one poll-until-done loop (``Client.wait``).

The refusals run the real command and start nothing. The start runs the real ``bckd serve``
(Ray with token auth, MLflow, the API under uvicorn on loopback) with the dashboard on a port
inside Ray's default worker range, and jobs of the stand-in ``tests/service/fake_job.py`` on the
tiny configs of ``tests/service/configs``, submitted with ``bckd jobs`` and ``Client``. Then
its supervisor: the API killed (SIGKILL) while a job runs comes back, the job trains on through
the outage and ends SUCCEEDED, and Ctrl-C stops API, MLflow and Ray in that order (last: it ends
the module's ``bckd serve``).
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from service.client.api_client import Client
from service.stack.embedded import (
    RAY_WORKER_PORTS,
    PortError,
    Stack,
    StackConfig,
    free_port,
    worker_port_range,
)
from service.stack.mlflow_server import admin_login, admin_uri
from tests.service.servicetools import alive, toy_dataset

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


def bckd(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, **kw)


def test_worker_range_is_rays_default_cut_around_the_stacks_ports():
    assert worker_port_range([8000, 8265, 5000]) == RAY_WORKER_PORTS == (10002, 19999)
    assert worker_port_range([18265]) == (10002, 18264)
    assert worker_port_range([10500, 8000]) == (10501, 19999)
    assert worker_port_range([12000, 17000, 18000]) == (12001, 16999)


@pytest.fixture
def listening():
    """A port something on loopback already listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("case", ["duplicate", "in use", "no port"])
def test_serve_refuses_a_bad_port_in_one_line_before_anything_starts(case, listening, tmp_path):
    api = free_port()
    argv, line = {
        # a free dashboard port: another cluster on the machine may hold Ray's default 8265
        "duplicate": (["--port", str(api), "--dashboard-port", str(free_port()),
                       "--mlflow-port", str(api)],
                      f"--mlflow-port {api}: the same port as --port"),
        "in use": (["--port", str(listening)], f"--port {listening}: already in use on 127.0.0.1"),
        "no port": (["--port", str(api), "--dashboard-port", "70000"],
                    "--dashboard-port 70000: not a TCP port (1-65535)"),
    }[case]
    r = bckd("serve", "--data-dir", str(tmp_path / "state"), *argv)
    assert (r.returncode, r.stderr, r.stdout) == (2, f"bckd: error: {line}\n", "")
    assert not (tmp_path / "state").exists()  # nothing started, nothing written


def test_stack_refuses_a_port_given_twice_naming_both_fields(tmp_path):
    port = free_port()
    stack = Stack(StackConfig(data_dir=tmp_path / "state", api_port=port, dashboard_port=port))
    with pytest.raises(PortError, match=f"^dashboard_port {port}: the same port as api_port$"):
        stack.start()
    assert stack.procs == [] and not (tmp_path / "state").exists()


def port_in_worker_range() -> int:
    """A free port in Ray's default worker range (the issue's was 18265)."""
    lo, hi = RAY_WORKER_PORTS
    for port in range(18265, hi):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {lo}-{hi}")


class Serve:
    """``bckd serve`` as a child process, its output read line by line."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", *argv], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, text: str, timeout: float = 300) -> list[str]:
        """The lines printed up to the first that holds ``text``."""
        while not any(text in line for line in self.seen):
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {text!r} in {timeout} s: {self.seen}") from None
            if line is None:
                raise AssertionError(f"bckd serve exited {self.proc.wait()}: {self.seen}")
            self.seen.append(line)
        return self.seen

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    toy = toy_dataset(root)
    ports = {"api": free_port(), "dashboard": port_in_worker_range(), "mlflow": free_port()}
    env = dict(os.environ, BCKD_JOB_MODULE=str(HERE / "fake_job.py"),
               BCKD_CONFIGS_DIR=str(HERE / "configs"),
               BCKD_DATA_ROOTS=json.dumps([str(root / "datasets")]),
               BCKD_RECONCILE_INTERVAL_S="0.5")
    serve = Serve(["--data-dir", str(root / "state"), "--port", str(ports["api"]),
                   "--dashboard-port", str(ports["dashboard"]), "--mlflow-port",
                   str(ports["mlflow"]), "--num-cpus", "2"], env)
    try:
        lines = serve.until("Ctrl-C stops")
    except AssertionError:
        serve.stop()
        raise
    yield {"serve": serve, "lines": lines, "ports": ports, "state": root / "state",
           "toy": str(toy), "api": f"http://127.0.0.1:{ports['api']}",
           "dashboard": f"http://127.0.0.1:{ports['dashboard']}",
           "mlflow": f"http://127.0.0.1:{ports['mlflow']}"}
    serve.stop()


def line_of(lines: list[str], label: str) -> str:
    return next(line for line in lines if line.strip().startswith(label))


@pytest.mark.slow
def test_serve_with_the_dashboard_in_rays_worker_range_cuts_the_range(served):
    lines, ports = served["lines"], served["ports"]
    assert served["dashboard"] in line_of(lines, "Ray dashboard:")
    lo, hi = worker_port_range(ports.values())
    assert not lo <= ports["dashboard"] <= hi
    assert line_of(lines, "Ray workers:").endswith(f"ports {lo}-{hi}")
    r = httpx.get(f"{served['api']}/v1/ready", timeout=60)
    assert r.json()["checks"]["ray"] == "ok", r.text


@pytest.mark.slow
def test_serve_prints_where_the_dashboards_token_is(served):
    token_file = served["state"].resolve() / "ray_auth_token"
    line = line_of(served["lines"], "Ray token:")
    assert str(token_file) in line and "dashboard" in line and "operator only" in line
    # the dashboard's own prompt names `ray get-auth-token`, which reads ~/.ray/auth_token
    assert f"RAY_AUTH_TOKEN_PATH={token_file} ray get-auth-token" in line
    # what the dashboard's token dialog does with the file's text: it signs the browser in
    url = f"{served['dashboard']}/api/authenticate"
    token = token_file.read_text().strip()
    assert httpx.post(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert httpx.post(url, headers={"Authorization": "Bearer wrong"}).status_code == 403
    # users get the job page instead, which asks the API with their own token
    assert line_of(served["lines"], "job page:").split()[2] == f"{served['api']}/watch"
    assert httpx.get(f"{served['api']}/watch").status_code == 200
    # and their own MLflow login; the admin's file is the operator's, and it is MLflow's admin
    mlflow = line_of(served["lines"], "MLflow:")
    admin_file = served["state"].resolve() / "mlflow_admin"
    assert "`bckd jobs mlflow-login`" in mlflow and f"operator only: {admin_file}" in mlflow
    login = admin_login(served["state"])
    users = f"{served['mlflow']}/api/2.0/mlflow/users/get?username={login.username}"
    assert httpx.get(users, auth=(login.username, login.password)).json()["user"]["is_admin"]


@pytest.mark.slow
def test_jobs_submit_follow_streams_the_log_and_waits_for_the_end(served):
    # the job's supervisor is a Ray actor: it runs only if workers start in the cut range
    r = bckd("jobs", "--url", served["api"], "--token-file", str(served["state"] / "admin_token"),
             "submit", "train", "toy_teacher", "--data-root", served["toy"],
             "--set", "train_cfg.max_epochs=1", "--follow")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    job_id = r.stdout.split()[1].rstrip(":")  # "job <id>: PENDING ..."
    assert "step 3" in r.stdout  # the log, streamed
    assert r.stdout.rstrip().splitlines()[-1].startswith(f"job {job_id}: SUCCEEDED")


@pytest.mark.slow
def test_client_wait_polls_until_every_job_ended(served):
    client = Client(served["api"], (served["state"] / "admin_token").read_text().strip())
    ids = [client.submit({"kind": "train", "config": "toy_teacher", "data_root": served["toy"],
                          "name": f"wait-{i}", "overrides": {"train_cfg.max_epochs": 1 + i}}
                         )["id"] for i in range(2)]
    looks: list[dict[str, str]] = []
    ended = client.wait(ids, poll_s=0.5,
                        on_poll=lambda states: looks.append({i: j["status"] for i, j in
                                                             states.items()}))
    assert sorted(ended) == sorted(ids)
    assert {j["status"] for j in ended.values()} == {"SUCCEEDED"}, ended
    assert looks and looks[-1] == {i: "SUCCEEDED" for i in ids}
    assert all(set(look) == set(ids) for look in looks)  # every look reports every job


def started_pids(lines: list[str]) -> dict[str, int]:
    """The parts' pids from the start-up line ``processes: ray pid 1, mlflow pid 2, ...``."""
    listed = line_of(lines, "processes:").split(":", 1)[1]
    return {label: int(pid) for label, pid in re.findall(r"(\w+) pid (\d+)", listed)}


@pytest.mark.slow
def test_a_killed_api_is_restarted_and_the_job_it_left_trains_on_to_succeeded(served):
    from mlflow.tracking import MlflowClient

    serve = served["serve"]
    pids = started_pids(served["lines"])
    assert set(pids) == {"ray", "mlflow", "api"}
    client = Client(served["api"], (served["state"] / "admin_token").read_text().strip())
    epochs = 12  # the stand-in's 4 steps of 0.25 s an epoch: 12 s, longer than the outage
    job_id = client.submit({"kind": "train", "config": "toy_teacher", "data_root": served["toy"],
                            "name": "outlives-its-api",
                            "overrides": {"train_cfg.max_epochs": epochs}})["id"]
    deadline = time.monotonic() + 60
    while not ((job := client.get(job_id))["status"] == "RUNNING" and job["mlflow_run_id"]):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    killed_at = time.time()
    os.kill(pids["api"], signal.SIGKILL)
    restarted = serve.until("api restarted (pid", timeout=60)[-1]
    new_api = int(re.search(r"api restarted \(pid (\d+)", restarted).group(1))
    serve.until("api is up again", timeout=60)
    back_at = time.time()
    assert httpx.get(f"{served['api']}/v1/health", timeout=10).status_code == 200
    exited = next(line for line in serve.seen
                  if line.startswith(f"bckd serve: api (pid {pids['api']}) "))
    assert "exited: killed by SIGKILL" in exited and "api.log; restart 1 in 1 s" in exited
    assert new_api != pids["api"] and alive(new_api) and not alive(pids["api"])
    assert alive(pids["ray"]) and alive(pids["mlflow"])  # untouched: the same processes
    assert not any(re.match(r"bckd serve: (ray|mlflow) ", line) for line in serve.seen)

    job = client.wait([job_id], poll_s=0.5)[job_id]  # the new API's reconciler follows it
    assert job["status"] == "SUCCEEDED" and job["attempts"] == 1, job
    mlflow = MlflowClient(admin_uri(served["mlflow"], admin_login(served["state"])))
    run = mlflow.get_run(job["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    losses = mlflow.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in losses) == list(range(4 * epochs))  # each step once
    # it trained while the API was away: steps logged between the kill and the API's return
    assert any(killed_at * 1000 < m.timestamp < back_at * 1000 for m in losses), \
        (killed_at, back_at, [m.timestamp for m in losses])


@pytest.mark.slow
def test_ctrl_c_stops_the_api_then_mlflow_then_ray_and_restarts_nothing(served):
    # last in the module: it ends the module's bckd serve (the fixture's stop is then a no-op)
    serve = served["serve"]
    pids = started_pids(served["lines"])
    pids.update((label, int(pid)) for label, pid in
                re.findall(r"bckd serve: (\w+) restarted \(pid (\d+)", "\n".join(serve.seen)))
    assert serve.stop() == 0
    serve.until("ray stopped", timeout=5)
    after = serve.seen[serve.seen.index("bckd serve: stopping ..."):]
    assert [line for line in after if line.endswith(" stopped")] == [
        "bckd serve: api stopped", "bckd serve: mlflow stopped", "bckd serve: ray stopped"]
    assert not any("restarted" in line or "exited" in line for line in after), after
    assert not any(alive(pid) for pid in pids.values()), pids
