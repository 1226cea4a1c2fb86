"""The jobs' sandbox (``service.stack.sandbox``): a job that runs code cannot read the service's
secrets.

The view alone, on plain commands (fast); then the real stack (``bckd serve``'s ``Stack``: the
API, MLflow, and the Ray head in the sandbox) running a real job through the API, its driver
(``jobs.train``) and a Ray Train worker, with a test-only probe in every Python process of the
cluster (``tests/jobs/sandbox_probe/sitecustomize.py``, which says why no request can turn it
on). Each process tries to read the tokens file, the database, the admin token, Ray's token file,
the MLflow store and another owner's file, and writes what it got to a file the test reads.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from service.core.auth import hash_token
from service.stack.embedded import Stack, StackConfig, free_port
from service.stack.sandbox import SandboxUnavailable, bwrap_argv, confine, sandbox_mode
from tests.jobs.jobtools import make_synth
from tests.service.servicetools import TOKENS, client, wait_all

HERE = Path(__file__).resolve().parent
PROBE_SITE = HERE / "sandbox_probe"
SECRETS = ("tokens", "service.db", "admin_token", "ray_auth_token", "mlflow/mlflow.db")


def state_dir(root: Path) -> Path:
    """A data dir holding each secret, and an owner's file."""
    state = root / "state"
    (state / "mlflow").mkdir(parents=True)
    for name in SECRETS:
        (state / name).write_text(f"secret {name}\n")
    (state / "owners" / "alice").mkdir(parents=True)
    (state / "owners" / "alice" / "mine.txt").write_text("alice's\n")
    return state


def sandboxed(cmd: str, state: Path, **kw) -> subprocess.CompletedProcess:
    argv, env = confine(["sh", "-c", cmd], dict(os.environ), state, **kw)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_the_setting_is_bwrap_by_default_off_on_request_and_nothing_else():
    assert sandbox_mode({}) == sandbox_mode({"BCKD_JOB_SANDBOX": ""}) == "bwrap"
    assert sandbox_mode({"BCKD_JOB_SANDBOX": "OFF"}) == "off"
    with pytest.raises(ValueError, match="BCKD_JOB_SANDBOX='none': use bwrap"):
        sandbox_mode({"BCKD_JOB_SANDBOX": "none"})


def test_without_bwrap_the_stack_refuses_unless_the_operator_turned_the_sandbox_off(tmp_path):
    env = {"PATH": str(tmp_path), "RAY_AUTH_TOKEN_PATH": "/nowhere"}  # no bwrap on this PATH
    with pytest.raises(SandboxUnavailable,
                       match=r"apt-get install bubblewrap.*BCKD_JOB_SANDBOX=off"):
        confine(["ray", "start"], env, tmp_path)
    off = {**env, "BCKD_JOB_SANDBOX": "off"}
    assert confine(["ray", "start"], off, tmp_path) == (["ray", "start"], off)


def test_the_view_has_no_secrets_its_owners_dir_and_none_of_the_services_processes(tmp_path):
    state = state_dir(tmp_path)
    outside_tokens = tmp_path / "etc-tokens"  # a BCKD_TOKENS_FILE outside the data dir
    outside_tokens.write_text("secret\n")
    reads = " ; ".join(f"cat {state / n} 2>/dev/null && echo LEAK {n}" for n in SECRETS)
    r = sandboxed(f"{reads} ; cat {outside_tokens} 2>/dev/null && echo LEAK outside ; "
                  f"cat {state}/owners/alice/mine.txt ; echo new > {state}/owners/alice/new.txt"
                  f" ; cat /proc/{os.getpid()}/root{state}/tokens 2>/dev/null && echo LEAK proc"
                  f" ; umount {state} 2>/dev/null ; cat {state}/tokens 2>/dev/null && "
                  "echo LEAK umount ; ls /proc | grep -c '^[0-9]'",
                  state, hidden=[outside_tokens])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert not [x for x in lines if x.startswith("LEAK")], lines
    assert lines[0] == "alice's"  # the owners' files are there, and writable
    assert (state / "owners" / "alice" / "new.txt").read_text() == "new\n"
    # bwrap's init, sh, ls and grep: the service's processes (this one) are not there
    assert int(lines[-1]) <= 4


def test_the_view_keeps_the_gpus_and_hides_the_hosts_disks(tmp_path):
    argv = bwrap_argv(["true"], tmp_path)
    assert argv[argv.index("--dev") + 1] == "/dev"  # a minimal /dev ...
    nvidia = sorted(str(p) for p in Path("/dev").glob("nvidia*"))
    bound = [argv[i + 1] for i, a in enumerate(argv) if a == "--dev-bind"]
    assert set(nvidia) <= set(bound)  # ... with the GPUs where there are some
    assert not [b for b in bound if "sd" in b or "nvme" in b]


@pytest.mark.slow
def test_a_jobs_driver_and_train_worker_can_read_none_of_the_services_secrets(tmp_path,
                                                                                monkeypatch):
    data = make_synth(tmp_path / "datasets" / "synth")
    state = tmp_path / "state"
    out = tmp_path / "probe"
    out.mkdir()
    spec = tmp_path / "probe.json"
    bobs = state / "owners" / "bob" / "runs" / "x" / "final.pth"  # another owner's file
    bobs.parent.mkdir(parents=True)
    bobs.write_bytes(b"bob's")
    spec.write_text(json.dumps({"out": str(out), "read": {
        **{n: str(state / n) for n in SECRETS}, "another owner's file": str(bobs)}}))
    # the stack's own environment, which Ray's processes inherit: no request can set it
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(PROBE_SITE), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("BCKD_SANDBOX_PROBE", str(spec))
    monkeypatch.delenv("BCKD_JOB_SANDBOX", raising=False)
    users = ";".join(f"{hash_token(t)} {n} user" for n, t in TOKENS.items())
    stack = Stack(StackConfig(
        data_dir=state, api_port=free_port(), dashboard_port=free_port(),
        mlflow_port=free_port(), num_cpus=2,
        extra_env={"BCKD_DATA_ROOTS": json.dumps([str(tmp_path / "datasets")]),
                   "BCKD_TOKENS": users, "BCKD_RECONCILE_INTERVAL_S": "0.5"}))
    stack.start()
    try:
        alice = client(stack, TOKENS["alice"])
        body = {"kind": "train", "config": "synth/gfl_student", "data_root": str(data),
                "name": "probed", "overrides": {
                    "train_cfg.max_epochs": 1, "train_dataloader.batch_size": 4,
                    "val_dataloader.batch_size": 4, "train_dataloader.num_workers": 0,
                    "val_dataloader.num_workers": 0,
                    "train_dataloader.persistent_workers": False,
                    "val_dataloader.persistent_workers": False}}
        r = alice.post("/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        (job,) = wait_all(alice, [r.json()["id"]], timeout=600)
        logs = alice.get(f"/v1/jobs/{job['id']}/logs", params={"tail": 100_000}).json()["text"]
        assert job["status"] == "SUCCEEDED", (job, logs[-3000:])
    finally:
        stack.stop()
    assert (state / "owners" / "alice" / "runs" / "probed" / "final.pth").is_file()
    records = [json.loads(p.read_text()) for p in out.glob("*.json")]

    def one(pred) -> dict:
        found = [r for r in records if pred(r)]
        assert len(found) == 1, [r["argv"] for r in records]
        return found[0]

    # the positive control: outside the sandbox, the API reads what the jobs cannot
    api = one(lambda r: "service.main:app" in r["argv"])
    assert {n: api["reads"][n] for n in ("tokens", "admin_token", "ray_auth_token",
                                         "mlflow/mlflow.db")} == dict.fromkeys(
        ("tokens", "admin_token", "ray_auth_token", "mlflow/mlflow.db"), "read")
    assert (state / "service.db").is_file()  # the path the probes tried is the database's
    driver = one(lambda r: "jobs.train" in r["argv"])
    (pid,) = set(re.findall(r"RayTrainWorker pid=(\d+)", logs))
    # (Ray's setup_worker.py, when a worker has one, probes too, then execs the worker)
    worker = one(lambda r: r["pid"] == int(pid) and r["argv"][1].endswith("default_worker.py"))
    for probed in (driver, worker):
        secrets = {n: probed["reads"][n] for n in SECRETS}
        assert all(v.startswith("FileNotFoundError") for v in secrets.values()), probed
        # The limit docs/SERVICE.md states ("The sandbox of a job"): owners/ is in the view,
        # every owner's, because Ray's processes write every owner's runs.
        assert probed["reads"]["another owner's file"] == "read"
