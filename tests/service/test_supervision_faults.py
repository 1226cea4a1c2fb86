"""The issue-34 faults on the real stack: ``bckd serve`` (Ray with token auth, MLflow, the API)
running the real ``jobs.train`` on a tiny synthetic set.

1. The supervisor SIGKILLed mid-job (as the OOM killer would): its parts end with it (their
   parent-death signal), a second ``bckd serve`` on the same data dir starts without hand work
   and says what it found, and the job ends SUCCEEDED with one MLflow run and no step twice.
2. The job's worker stopped (SIGSTOP) past the stall timeout: the job is marked stalled (REST,
   ``bckd jobs list``), then stopped and restarted by the service, and ends SUCCEEDED.

Several minutes on 2 cores: each job's workers import mmdet, and the first fault costs a Ray
restart and a resumed attempt, the second a stall timeout twice and a resumed attempt.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from service.client.api_client import Client
from service.stack.embedded import free_port
from service.stack.mlflow_server import admin_login, admin_uri
from service.stack.takeover import Identity
from tests.jobs.jobtools import make_synth
from tests.service.test_serve import Serve, started_pids

ROOT = Path(__file__).resolve().parents[2]
STALL_FLOOR_S = 40  # above the longest silence of a healthy tiny job here (an evaluation)

pytestmark = pytest.mark.slow


def tiny(epochs: int) -> dict:
    return {"train_cfg.max_epochs": epochs, "train_dataloader.batch_size": 4,
            "val_dataloader.batch_size": 4, "train_dataloader.num_workers": 0,
            "val_dataloader.num_workers": 0, "train_dataloader.persistent_workers": False,
            "val_dataloader.persistent_workers": False}


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    data = make_synth(root / "datasets" / "synth")
    ports = [free_port() for _ in range(3)]
    argv = ["--data-dir", str(root / "state"), "--port", str(ports[0]), "--dashboard-port",
            str(ports[1]), "--mlflow-port", str(ports[2]), "--num-cpus", "2"]
    env = dict(os.environ, BCKD_DATA_ROOTS=json.dumps([str(root / "datasets")]),
               BCKD_RECONCILE_INTERVAL_S="0.5", BCKD_LOST_GRACE_S="5", BCKD_STOP_WAIT_S="10",
               BCKD_STALL_FLOOR_S=str(STALL_FLOOR_S), RAY_DEDUP_LOGS="0")
    serves: list[Serve] = []
    yield {"root": root, "data": data, "argv": argv, "env": env, "serves": serves,
           "api": f"http://127.0.0.1:{ports[0]}", "dashboard": f"http://127.0.0.1:{ports[1]}",
           "mlflow": f"http://127.0.0.1:{ports[2]}", "state": root / "state"}
    for serve in serves:
        serve.stop()


def start(place) -> Serve:
    serve = Serve(place["argv"], place["env"])
    place["serves"].append(serve)
    serve.until("Ctrl-C stops", timeout=300)
    return serve


def client(place) -> Client:
    return Client(place["api"], (place["state"] / "admin_token").read_text().strip())


def wait(c: Client, job_id: str, pred, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while not pred(job := c.get(job_id)):
        assert time.monotonic() < deadline, f"{what}: {job}"
        time.sleep(0.5)
    return job


def trained_epochs(job: dict) -> float:
    return (job.get("metrics") or {}).get("epoch", 0.0)


def the_one_run(place, name: str):
    mlflow = MlflowClient(admin_uri(place["mlflow"], admin_login(place["state"])))
    exp = mlflow.get_experiment_by_name("admin/faults")  # the admin token's owner's
    runs = mlflow.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return mlflow, runs[0]


def test_a_killed_supervisors_stack_ends_and_the_next_serve_finishes_its_job(place):
    first = start(place)
    pids = started_pids(first.seen)
    c = client(place)
    epochs = 5
    job_id = c.submit({"kind": "train", "config": "synth/gfl_student",
                       "data_root": str(place["data"]), "name": "outlives-serve",
                       "experiment": "faults", "overrides": tiny(epochs), "max_restarts": 2,
                       "max_failures": 1})["id"]
    # past the first epoch's checkpoint, so that the next attempt resumes
    wait(c, job_id, lambda j: j["status"] == "RUNNING" and trained_epochs(j) >= 2, 600,
         "never trained a second epoch")
    killed = time.monotonic()
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait()
    # the decision: the parts end with their supervisor (parent-death signal), no hand work
    deadline = time.monotonic() + 60
    while any(Identity.of(pid) for pid in pids.values()):
        assert time.monotonic() < deadline, {k: Identity.of(p) for k, p in pids.items()}
        time.sleep(0.5)
    ended_s = time.monotonic() - killed

    second = start(place)
    said = f"bckd serve: the earlier bckd serve of this data dir (pid {first.proc.pid}, started "
    assert [line.startswith(said) and line.endswith(") is gone; clearing what it left")
            for line in second.seen if "earlier bckd serve" in line] == [True], second.seen
    for label, pid in pids.items():
        assert f"bckd serve:   {label} (pid {pid}): already ended" in second.seen, second.seen

    job = wait(c, job_id, lambda j: j["status"] in ("SUCCEEDED", "FAILED", "STOPPED", "LOST"),
               900, "never ended")
    assert job["status"] == "SUCCEEDED" and job["restarts"] == 1, (job, ended_s)
    mlflow, run = the_one_run(place, "outlives-serve")
    assert run.info.status == "FINISHED"
    steps = [m.step for m in mlflow.get_metric_history(run.info.run_id, "loss")]
    assert sorted(steps) == list(range(1, epochs * 4 + 1)), steps  # each step once
    replayed = run.data.tags.get("bckd.replayed_steps")
    if replayed is not None:  # the killed attempt logged past the checkpoint resumed from
        for window in replayed.split(","):
            first_step, last_step = map(int, window.split("-"))
            assert 1 <= first_step <= last_step <= epochs * 4, replayed


def worker_pid(place) -> int:
    """The host pid of the job's Ray Train worker. Ray's state API (with this stack's token)
    names it by its pid in Ray's PID namespace (the jobs' sandbox has its own), so the host's
    process is the RayTrainWorker in the namespace of this stack's raylet (its command line
    names the stack's Ray temp dir) whose pid there is that one."""
    code = ("from ray.util.state import list_actors\n"
            f"a = list_actors(address={place['dashboard']!r}, filters=[('class_name', '=', "
            "'RayTrainWorker'), ('state', '=', 'ALIVE')])\n"
            "print(a[0].pid if len(a) == 1 else '')")
    env = dict(os.environ, RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN_PATH=str(place["state"] / "ray_auth_token"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip(), out.stderr[-2000:]
    inner = int(out.stdout)
    ray_tmp = json.loads((place["state"] / "serve.json").read_text())["ray_tmp"]
    procs = [Identity.of(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()]
    procs = [i for i in procs if i is not None and i.cmdline]
    raylet = next(i for i in procs if "raylet" in i.cmdline[0] and
                  any(ray_tmp in arg for arg in i.cmdline))
    ns = _ns(raylet.pid)
    found = [i.pid for i in procs if i.cmdline[0].startswith("ray::RayTrainWorker")
             and _ns(i.pid) == ns and _ns_pid(i.pid) == inner]
    assert len(found) == 1, (inner, found)
    return found[0]


def _ns(pid: int) -> str | None:
    """``pid``'s PID namespace (None: it has ended)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _ns_pid(pid: int) -> int | None:
    """``pid``'s number in its own PID namespace (the last of /proc's NSpid; None: ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return int(re.search(r"^NSpid:\s+(.*)$", status, re.MULTILINE).group(1).split()[-1])


def test_a_stopped_worker_is_marked_stalled_then_restarted_and_the_job_succeeds(place):
    if not place["serves"] or place["serves"][-1].proc.poll() is not None:
        start(place)
    c = client(place)
    job_id = c.submit({"kind": "train", "config": "synth/gfl_student",
                       "data_root": str(place["data"]), "name": "hangs",
                       "experiment": "faults", "overrides": tiny(5), "max_restarts": 1})["id"]
    wait(c, job_id, lambda j: j["status"] == "RUNNING" and trained_epochs(j) >= 2, 600,
         "never trained a second epoch")
    pid = worker_pid(place)
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        job = wait(c, job_id, lambda j: j["stalled"], 4 * STALL_FLOOR_S, "never marked")
        marked_s = time.monotonic() - stopped
        assert job["status"] == "RUNNING" and job["stalled_at"], job
        assert job["message"].startswith("stalled: no progress for "), job
        listed = subprocess.run(
            [sys.executable, "-m", "cli", "jobs", "--url", place["api"], "--token-file",
             str(place["state"] / "admin_token"), "list"],
            cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
        assert re.search(rf"^{job_id} +train +RUNNING\* ", listed, re.MULTILINE), listed
        assert "* stalled: no progress past its stall timeout" in listed
        job = wait(c, job_id, lambda j: j["restarts"] == 1, 4 * STALL_FLOOR_S + 120,
                   "never restarted")
        assert job["message"].startswith("restart 1 of 1 after: stalled: no progress for "), job
        assert not job["stalled"]
    finally:
        if Identity.of(pid) is not None:  # the hung worker, if the stop left it
            os.kill(pid, signal.SIGKILL)
    job = wait(c, job_id, lambda j: j["status"] in ("SUCCEEDED", "FAILED", "STOPPED", "LOST"),
               900, "never ended")
    assert job["status"] == "SUCCEEDED" and job["attempts"] == 2, (job, marked_s)
    assert marked_s >= STALL_FLOOR_S, marked_s
    mlflow, run = the_one_run(place, "hangs")
    steps = [m.step for m in mlflow.get_metric_history(run.info.run_id, "loss")]
    assert sorted(steps) == list(range(1, 21)), steps
