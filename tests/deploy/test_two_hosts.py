"""Two hosts made of network namespaces: a BCKD job through the API on a two-node Ray cluster.

    host "head" (netns, 10.231.K.1)         veth         host "worker" (netns, 10.231.K.2)
    Ray head (1 CPU) + MLflow + the API  <---------->  Ray worker node (1 CPU)

Everything listens on the veth addresses or on each namespace's own loopback, so no traffic
leaves the two namespaces. Both hosts see one filesystem: the work dirs (Ray Train checkpoints)
are "a path both see", like an NFS mount. The test process talks to the API and MLflow from
inside the head namespace (``setns`` on its own thread).

1. A 2-worker distillation submitted through the API runs one Train worker on each host.
2. It loses the worker host mid-run (every process in that namespace SIGKILLed). It ends
   FAILED, honestly, with its MLflow run FAILED: the service submits jobs without
   ``--max-failures`` (0), and the surviving host has 1 CPU for 2 workers, so there is no capacity
   to resume on; Ray Train gives up at once instead of waiting.
3. The worker host comes back and the same job name is submitted again: it resumes from the
   checkpoint the failed attempt left on the shared path, again one worker on each host, in the
   same MLflow run, and SUCCEEDS, the run FINISHED.

One job and its rerun make the whole story (a separate job that only succeeded cost 80 s).
Root only (``ip netns``); about 3 minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.stack.mlflow_server import admin_login, admin_uri

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
TAG = f"{os.getpid() % 100000}"
NET = f"10.231.{os.getpid() % 250}"
HEAD_NS, WORKER_NS = f"bckd-h1-{TAG}", f"bckd-h2-{TAG}"
HEAD_IP, WORKER_IP = f"{NET}.1", f"{NET}.2"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED", "LOST")
CLONE_NEWNET = 0x40000000
# Each host's end of the veth has this name inside its namespace. Gloo (torch.distributed on
# CPU) otherwise binds to the address the hostname resolves to, 127.0.x.1 here since both
# namespaces share one hostname, and the peers cannot connect; GLOO_SOCKET_IFNAME picks the NIC.
IFNAME = "bckd0"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces "
                       "(`ip netns add`) and a veth pair; CI runs as root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's `ip`"),
]


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def netns_pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                         timeout=30).stdout
    return [int(p) for p in out.split()]


def kill_host(ns: str) -> None:
    """SIGKILL every process in the namespace: the host is gone, nothing shuts down cleanly."""
    for _ in range(5):  # a dying raylet may still fork; repeat until the namespace is empty
        pids = netns_pids(ns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


@contextlib.contextmanager
def in_netns(ns: str):
    """Run this thread's new sockets in ``ns`` (``setns`` affects the calling thread only)."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        yield
    finally:
        libc.setns(home, CLONE_NEWNET)
        os.close(home)
        os.close(target)


class Hosts:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.token = tmp / "ray_auth_token"
        self.token.write_text(os.urandom(24).hex())
        self.procs: list[subprocess.Popen] = []
        self.veth = (f"bk{TAG}a", f"bk{TAG}b")

    def up(self) -> None:
        sh("ip", "netns", "add", HEAD_NS)
        sh("ip", "netns", "add", WORKER_NS)
        sh("ip", "link", "add", self.veth[0], "type", "veth", "peer", "name", self.veth[1])
        for ns, dev, ip in ((HEAD_NS, self.veth[0], HEAD_IP), (WORKER_NS, self.veth[1], WORKER_IP)):
            sh("ip", "link", "set", dev, "netns", ns)
            sh("ip", "-n", ns, "link", "set", dev, "name", IFNAME)
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", IFNAME)
            sh("ip", "-n", ns, "link", "set", IFNAME, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def down(self) -> None:
        for ns in (WORKER_NS, HEAD_NS):
            with contextlib.suppress(Exception):
                kill_host(ns)
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.wait(10)
        for ns in (WORKER_NS, HEAD_NS):  # deleting a namespace deletes its end of the veth
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        for d in (f"/tmp/bk2h-{TAG}-1", f"/tmp/bk2h-{TAG}-2"):
            shutil.rmtree(d, ignore_errors=True)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RAY_", "BCKD_", "MLFLOW_"))}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token),
                   RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1", **extra)
        return env

    def spawn(self, ns: str, argv: list[str], log: str, **env: str) -> subprocess.Popen:
        with open(self.tmp / log, "ab") as fh:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], cwd=self.tmp,
                                    env=self.env(**env), stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def ray_node(self, ns: str, ip: str, n: int, *args: str) -> None:
        self.spawn(ns, [PY, "-m", "ray.scripts.scripts", "start", "--block",
                        "--node-ip-address", ip, "--num-cpus", "1", "--disable-usage-stats",
                        "--object-store-memory", "100000000", "--temp-dir",
                        f"/tmp/bk2h-{TAG}-{n}", *args], f"ray-{ns}.log",
                   RAY_JOB_STOP_SIGNAL="SIGINT", GLOO_SOCKET_IFNAME=IFNAME)

    def start_head(self) -> None:
        self.ray_node(HEAD_NS, HEAD_IP, 1, "--head", "--port", "6379", "--dashboard-host",
                      HEAD_IP, "--dashboard-port", "8265", "--include-dashboard", "true")

    def start_worker(self) -> None:
        self.ray_node(WORKER_NS, WORKER_IP, 2, "--address", f"{HEAD_IP}:6379")

    def start_service(self, data_roots: list[str], configs: Path) -> None:
        self.spawn(HEAD_NS, [str(Path(PY).parent / "bckd"), "serve", "--host", HEAD_IP,
                             "--data-dir", str(self.tmp / "state"),
                             "--ray-address", f"http://{HEAD_IP}:8265"], "serve.log",
                   BCKD_CONFIGS_DIR=str(configs), BCKD_DATA_ROOTS=json.dumps(data_roots),
                   BCKD_RECONCILE_INTERVAL_S="1", BCKD_LOST_GRACE_S="60")


def _teacher_checkpoint(configs: Path, out: Path) -> Path:
    """A randomly initialised GFL teacher: distillation runs the same whatever it knows."""
    code = (
        "import sys, torch\n"
        "from mmengine.config import Config\n"
        "from mmengine.registry import init_default_scope\n"
        "from mmdet.registry import MODELS\n"
        "import mmdet.models  # noqa\n"
        "init_default_scope('mmdet')\n"
        "cfg = Config.fromfile(sys.argv[1])\n"
        "torch.manual_seed(0)\n"
        "torch.save({'state_dict': MODELS.build(cfg.model).state_dict()}, sys.argv[2])\n")
    subprocess.run([PY, "-c", code, str(configs / "synth" / "gfl_teacher.py"), str(out)],
                   check=True, capture_output=True, timeout=120)
    return out


def _overrides(data: Path, max_epochs: int) -> dict:
    return {
        "train_dataloader.batch_size": 4, "val_dataloader.batch_size": 4,
        "train_dataloader.num_workers": 0, "val_dataloader.num_workers": 0,
        "train_dataloader.persistent_workers": False, "val_dataloader.persistent_workers": False,
        "train_cfg.max_epochs": max_epochs,
        "model.student.test_cfg.score_thr": 0.0,
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from bckd.data.synth import SynthConfig, generate

    tmp = tmp_path_factory.mktemp("two_hosts")
    data = tmp / "data" / "synth"
    generate(SynthConfig(out=data, num_train=16, num_val=8, image_size=128, workers=1),
             progress=False)
    # Jobs run in the head's working directory (tmp), where `configs/...` must resolve.
    configs = tmp / "configs"
    shutil.copytree(ROOT / "configs", configs)
    hosts = Hosts(tmp)
    try:
        hosts.up()
        hosts.start_head()
        hosts.start_worker()
        hosts.start_service([str(tmp / "data")], configs)
        teacher = _teacher_checkpoint(configs, tmp / "data" / "teacher.pth")  # while they start
        hosts.data, hosts.teacher = data, teacher
        with in_netns(HEAD_NS):
            _wait_ready(hosts)
            yield hosts
    finally:
        hosts.down()


def _wait_ready(hosts: Hosts, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    token_file = hosts.tmp / "state" / "admin_token"
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, OSError):
            if token_file.exists():
                hosts.api = httpx.Client(
                    base_url=f"http://{HEAD_IP}:8000", timeout=30,
                    headers={"Authorization": f"Bearer {token_file.read_text().strip()}"})
                if hosts.api.get("/v1/ready").status_code == 200 and _alive_nodes(hosts) == 2:
                    return
        time.sleep(1)
    raise TimeoutError(f"the two-host stack did not come up; logs in {hosts.tmp}")


def _alive_nodes(hosts: Hosts) -> int:
    """ALIVE nodes, from the dashboard's state API (with the Ray token, over plain HTTP: no Ray
    client in this process, whose token cache would outlive the test)."""
    r = httpx.get(f"http://{HEAD_IP}:8265/api/v0/nodes", params={"limit": 100}, timeout=10,
                  headers={"Authorization": f"Bearer {hosts.token.read_text()}"})
    r.raise_for_status()
    return sum(n["state"] == "ALIVE" for n in r.json()["data"]["result"]["result"])


def _submit(hosts: Hosts, name: str, max_epochs: int) -> str:
    r = hosts.api.post("/v1/jobs", json={
        "kind": "distill", "config": "synth/bckd_gfl", "name": name,
        "data_root": str(hosts.data), "teacher_ckpt": str(hosts.teacher),
        "resources": {"num_workers": 2, "cpus_per_worker": 1},
        "overrides": _overrides(hosts.data, max_epochs)})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _wait(hosts: Hosts, job_id: str, pred, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        job = hosts.api.get(f"/v1/jobs/{job_id}").json()
        if pred(job):
            return job
        time.sleep(1)
    log = hosts.api.get(f"/v1/jobs/{job_id}/logs", params={"tail": 60}).json()["text"]
    raise AssertionError(f"job {job_id} did not get there within {timeout:g} s: {job}\n{log}")


def _log(hosts: Hosts, job_id: str) -> str:
    return hosts.api.get(f"/v1/jobs/{job_id}/logs", params={"tail": 100000}).json()["text"]


def _mlflow_run(hosts: Hosts, run_id: str):
    from mlflow.tracking import MlflowClient

    login = admin_login(hosts.tmp / "state")  # the stack's MLflow checks logins
    return MlflowClient(tracking_uri=admin_uri(f"http://{HEAD_IP}:5000", login)).get_run(run_id)


def _one_worker_on_each_host(log: str) -> None:
    """The Train controller prints its worker group: one rank per host."""
    for ip in (HEAD_IP, WORKER_IP):
        assert re.search(rf"\(ip={re.escape(ip)}, pid=\d+\) world_rank=\d", log), log[-3000:]


def test_a_two_host_job_loses_its_worker_host_fails_then_a_rerun_resumes(cluster):
    name = "two-hosts-killed"
    job_id = _submit(cluster, name, max_epochs=3)
    run_dir = cluster.tmp / "state" / "owners" / "admin" / "runs" / name  # the owner's run dir
    snapshot = run_dir / "ray_train" / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + 240
    while not (snapshot.exists() and "checkpoint_iter_" in snapshot.read_text()):
        assert time.monotonic() < deadline, _log(cluster, job_id)[-3000:]
        job = cluster.api.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] not in TERMINAL, f"{job}\n{_log(cluster, job_id)[-3000:]}"
        time.sleep(0.5)
    kill_host(WORKER_NS)  # mid-run: epoch 1 is checkpointed, epochs 2-3 are not

    job = _wait(cluster, job_id, lambda j: j["status"] in TERMINAL, timeout=120)
    log = _log(cluster, job_id)
    assert job["status"] == "FAILED", f"{job}\n{log[-3000:]}"
    _one_worker_on_each_host(log)
    # The survivor's collective broke on the lost peer; the job says so and stops at once.
    assert "training failed" in log and WORKER_IP in job["message"], job["message"]
    run_id = job["mlflow_run_id"]
    assert _mlflow_run(cluster, run_id).info.status == "FAILED"

    # The host comes back; the same name resumes from the checkpoint on the shared path.
    cluster.start_worker()
    deadline = time.monotonic() + 90
    while _alive_nodes(cluster) < 2:
        assert time.monotonic() < deadline, "the worker host did not rejoin"
        time.sleep(1)
    again = _submit(cluster, name, max_epochs=3)
    job = _wait(cluster, again, lambda j: j["status"] in TERMINAL, timeout=240)
    log = _log(cluster, again)
    assert job["status"] == "SUCCEEDED", f"{job}\n{log[-3000:]}"
    _one_worker_on_each_host(log)
    assert job["mlflow_run_id"] == run_id  # the same MLflow run, reopened
    run = _mlflow_run(cluster, run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["world_size"] == "2"
    assert run.data.tags["bckd.resumed_from_checkpoint"] == "true"
