"""The trust boundary, tried as an attacker would: the real API under uvicorn, a real local Ray
cluster running the real ``jobs.train``, a real MLflow server, the shipped configs.

Every attack must be refused with a 4xx whose ``loc`` names the field, and nothing may have
run: no marker file, no row, no Ray job, no MLflow run. Then two users train under one name
(separate directories and runs), a changed config under an old name is a 409, and one user
cannot read another's runs until an admin shares them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.core.auth import hash_token
from service.stack.embedded import Stack, StackConfig, free_port
from tests.jobs.jobtools import make_synth
from tests.service.servicetools import TOKENS, wait_all

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("sec")
    data = make_synth(root / "datasets" / "synth")
    (root / "outside").mkdir()
    (root / "outside" / "secret.pth").write_bytes(b"not yours")
    os.symlink(root / "outside", root / "datasets" / "escape")
    users = ";".join(f"{hash_token(t)} {n} user" for n, t in TOKENS.items())
    st = Stack(StackConfig(
        data_dir=root / "state", api_port=free_port(), dashboard_port=free_port(),
        mlflow_port=free_port(), num_cpus=2,
        extra_env={"BCKD_DATA_ROOTS": json.dumps([str(root / "datasets")]),
                   "BCKD_TOKENS": users, "BCKD_RECONCILE_INTERVAL_S": "0.5",
                   "BCKD_MAX_BODY_BYTES": "200000",
                   "BCKD_STOP_WAIT_S": "10"}))  # why: test_datasets.py
    st.start()
    st.root, st.data = root, data
    yield st
    st.stop()


def tiny_overrides(epochs: int = 1) -> dict:
    return {"train_cfg.max_epochs": epochs, "train_dataloader.batch_size": 4,
            "val_dataloader.batch_size": 4, "train_dataloader.num_workers": 0,
            "val_dataloader.num_workers": 0, "train_dataloader.persistent_workers": False,
            "val_dataloader.persistent_workers": False}


def upload(content: dict, kind: str = "train") -> dict:
    return {"kind": kind, "config_upload": {"format": "json", "content": json.dumps(content)}}


def clean_upload(stack: Stack) -> dict:
    """A real, trainable config as data: the shipped GFL student, dumped to JSON."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(ROOT / "configs/synth/gfl_student.py")).to_dict()
    cfg.pop("custom_imports", None)
    cfg["data_root"] = f"{stack.data}/"
    for split in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[split]["dataset"]["data_root"] = f"{stack.data}/"
    for ev in ("val_evaluator", "test_evaluator"):
        cfg[ev]["ann_file"] = f"{stack.data}/annotations/instances_val.json"
    return cfg


def nothing_ran(stack: Stack, admin: httpx.Client, marker: Path) -> None:
    assert not marker.exists(), "an attack ran code"
    assert admin.get("/v1/jobs").json()["count"] == 0
    ray_token = (stack.data_dir / "ray_auth_token").read_text().strip()
    ray_jobs = httpx.get(f"{stack.ray_url}/api/jobs/",
                         headers={"Authorization": f"Bearer {ray_token}"}).json()
    assert ray_jobs == []
    from mlflow.tracking import MlflowClient

    mlflow = MlflowClient(tracking_uri=stack.mlflow_admin_uri)
    exps = [e.experiment_id for e in mlflow.search_experiments()]
    assert mlflow.search_runs(exps) == [] if exps else True


def attacks(stack: Stack) -> dict[str, tuple[dict, str]]:
    """name -> (request body, the field its 4xx must name)."""
    marker = stack.root / "pwned"
    touch = f"touch {marker}"
    evil_py = stack.root / "outside" / "evil_teacher.py"
    evil_py.write_text(f"import os\nos.system({touch!r})\nmodel = dict(type='GFL')\n")
    base = clean_upload(stack)

    def changed(path: str, value) -> dict:
        cfg = json.loads(json.dumps(base))
        node = cfg
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        node[leaf] = value
        return cfg

    hook = [{"type": "os.system", "command": touch}]
    shipped = {"kind": "train", "config": "synth/gfl_student", "data_root": str(stack.data)}
    other_run_dir = stack.data_dir / "owners" / "bob" / "runs" / "x"
    return {
        # code, by upload
        "upload hook os.system": (upload(changed("custom_hooks", hook)),
                                  "config_upload.content.custom_hooks.0.type"),
        "upload model type import path": (upload(changed("model.type", "posix.system")),
                                          "config_upload.content.model.type"),
        "upload builtin eval transform": (
            upload(changed("train_dataloader.dataset.pipeline.0.type", "eval")),
            "config_upload.content.train_dataloader.dataset.pipeline.0.type"),
        "upload optimizer constructor": (
            upload(changed("optim_wrapper.constructor", "subprocess.getoutput")),
            "config_upload.content.optim_wrapper.constructor"),
        "upload collate_fn": (upload(changed("train_dataloader.collate_fn",
                                             {"type": "os.popen", "cmd": touch})),
                              "config_upload.content.train_dataloader.collate_fn.type"),
        "upload _scope_": (upload(changed("model._scope_", "os")),
                           "config_upload.content.model._scope_"),
        "upload custom_imports": (upload(changed("custom_imports", {"imports": ["os"]})),
                                  "config_upload.content.custom_imports"),
        "upload _base_": (upload(changed("_base_", [str(evil_py)])),
                          "config_upload.content._base_"),
        "upload .py teacher": (upload({"model": {
            "type": "BCKDDetector", "student": base["model"], "teacher": str(evil_py)},
            **{k: v for k, v in base.items() if k != "model"}}, kind="distill"),
            "config_upload.content.model.teacher"),
        "upload yaml python tag": ({"kind": "train", "config_upload": {
            "format": "yaml", "content": f"model: !!python/object/apply:os.system [{touch!r}]"}},
            "config_upload.content"),
        # code, by override of a shipped config
        "override hook": ({**shipped, "overrides": {"+custom_hooks": hook}},
                          "overrides.+custom_hooks"),
        "override model type": ({**shipped, "overrides": {"model.type": "os.system"}},
                                "overrides.model.type"),
        "override default_scope": ({**shipped, "overrides": {"default_scope": "os"}},
                                   "overrides.default_scope"),
        "override custom_imports": ({**shipped, "overrides": {
            "custom_imports.imports": ["os"]}}, "overrides.custom_imports.imports"),
        # paths: absolute, .., symlinks, another owner's files
        "upload absolute data_root": (
            upload(changed("train_dataloader.dataset.data_root", "/etc/")),
            "config_upload.content.train_dataloader.dataset.data_root"),
        "upload ann_file ..": (
            upload(changed("train_dataloader.dataset.ann_file", "../../outside/secret.pth")),
            "config_upload.content.train_dataloader.dataset.ann_file"),
        "upload image prefix symlink": (
            upload(changed("train_dataloader.dataset.data_prefix.img",
                           f"{stack.root}/datasets/escape/")),
            "config_upload.content.train_dataloader.dataset.data_prefix.img"),
        "upload load_from": (upload(changed("load_from", str(stack.root / "outside/secret.pth"))),
                             "config_upload.content.load_from"),
        "upload pretrained backbone": (upload(changed("model.backbone.init_cfg", {
            "type": "Pretrained", "checkpoint": f"{stack.data}/../../outside/secret.pth"})),
            "config_upload.content.model.backbone.init_cfg.checkpoint"),
        "upload work_dir of another owner": (upload(changed("work_dir", str(other_run_dir))),
                                             "config_upload.content.work_dir"),
        "upload state dir": (upload(changed("train_dataloader.dataset.ann_file",
                                            str(stack.data_dir / "tokens"))),
                             "config_upload.content.train_dataloader.dataset.ann_file"),
        "data_root ..": ({**shipped, "data_root": f"{stack.data}/../../outside"}, "data_root"),
        "data_root symlink": ({**shipped, "data_root": f"{stack.root}/datasets/escape"},
                              "data_root"),
        "override resume path": ({**shipped, "overrides": {"+resume": "/etc/hostname"}},
                                 "overrides.+resume"),
        "teacher_ckpt outside": ({"kind": "distill", "config": "synth/bckd_gfl",
                                  "data_root": str(stack.data),
                                  "teacher_ckpt": str(stack.root / "outside/secret.pth")},
                                 "teacher_ckpt"),
        "teacher_ckpt of another owner": ({"kind": "distill", "config": "synth/bckd_gfl",
                                           "data_root": str(stack.data),
                                           "teacher_ckpt": str(other_run_dir / "final.pth")},
                                          "teacher_ckpt"),
        "run name traversal": ({**shipped, "name": "../bob"}, "name"),
        # malformed, deep and oversized
        "deep upload": ({"kind": "train", "config_upload": {
            "format": "json", "content": "[" * 50_000 + "]" * 50_000}}, "config_upload.content"),
        "deep override": ({**shipped, "overrides": {"+deep": json.loads("[" * 40 + "]" * 40)}},
                          "overrides.+deep"),
        "upload not a mapping": ({"kind": "train", "config_upload": {
            "format": "json", "content": "[1, 2]"}}, "config_upload.content"),
    }


def test_every_attack_is_refused_naming_its_field_and_nothing_runs(stack, alice, admin):
    marker = stack.root / "pwned"
    refused = {}
    for label, (body, field) in attacks(stack).items():
        r = alice.post("/v1/jobs", json=body)
        assert 400 <= r.status_code < 500, (label, r.status_code, r.text)
        loc = r.json()["detail"][0]["loc"]
        refused[label] = ".".join(str(p) for p in loc[1:])
        assert refused[label] == field, (label, r.json())
    for raw, code in ((b"{not json", 422), (b"x" * 300_000, 413)):
        r = alice.post("/v1/jobs", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == code, r.text
    nothing_ran(stack, admin, marker)


def test_the_job_entrypoint_refuses_an_attack_that_bypassed_the_api(stack, tmp_path):
    """A job file written by hand and run as Ray would run it: the policy holds in the job."""
    marker = tmp_path / "pwned"
    evil_py = tmp_path / "evil.py"
    evil_py.write_text(f"import os\nos.system('touch {marker}')\nmodel = dict(type='GFL')\n")
    run_dir = tmp_path / "owners" / "mallory" / "runs" / "x"
    cfg = clean_upload(stack)
    cfg["custom_hooks"] = [{"type": "os.system", "command": f"touch {marker}"}]
    spec = {"version": 2, "kind": "train", "name": "x", "experiment": "e", "owner": "mallory",
            "mlflow_run_id": "0" * 32,  # the policy refuses before the run is looked up
            "run_dir": str(run_dir), "configs_dir": str(ROOT / "configs"),
            "read_roots": [str(stack.root / "datasets")], "base_dir": str(ROOT),
            "config_data": cfg, "overrides": {}, "tags": {}}
    for i, (label, change, key) in enumerate((
            ("hook in the data", {}, "custom_hooks.0.type"),
            ("override", {"config_data": clean_upload(stack),
                          "overrides": {"model.type": "os.system"}}, "model.type"),
            ("a config file to load", {"config_file": str(evil_py)},
             f"--spec {tmp_path / 'job2.json'}"))):
        path = tmp_path / f"job{i}.json"
        path.write_text(json.dumps({**spec, **change}))
        r = subprocess.run([sys.executable, "-m", "jobs.train", "--spec", str(path)], cwd=ROOT,
                           capture_output=True, text=True, timeout=300,
                           env={**os.environ, "MLFLOW_TRACKING_URI": stack.mlflow_url})
        assert r.returncode == 2, (label, r.stdout[-2000:], r.stderr[-3000:])
        assert f"bckd: error: {key}:" in r.stderr, (label, r.stderr[-3000:])
    assert not marker.exists() and not (stack.root / "pwned").exists()
    assert not (run_dir / "run.json").exists()  # failed before any MLflow run was opened


def workers_of(c: httpx.Client, job_id: str, timeout: float = 600) -> list[dict]:
    """The ALIVE Ray Train workers of the job's view, once it has any."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = c.get(f"/v1/jobs/{job_id}/view").json()
        alive = [w for w in view["workers"]
                 if w["class_name"] == "RayTrainWorker" and w["state"] == "ALIVE"]
        if alive:
            return alive
        assert view["job"]["status"] in ("PENDING", "RUNNING"), view
        time.sleep(0.5)
    raise AssertionError(f"no worker of {job_id} in its view: {view}")


def test_two_users_one_name_separate_runs_and_reads(stack, alice, bob, admin):
    body = {"kind": "train", "config": "synth/gfl_student", "data_root": str(stack.data),
            "name": "shared-name", "experiment": "sec", "overrides": tiny_overrides()}
    ra, rb = alice.post("/v1/jobs", json=body), bob.post("/v1/jobs", json=body)
    assert ra.status_code == rb.status_code == 201, (ra.text, rb.text)
    # her job's view lists its Ray Train workers, each with its reservation (the job page)
    workers = workers_of(alice, ra.json()["id"])
    assert all(w["resources"].get("CPU", 0) > 0 and w["pid"] for w in workers), workers
    assert bob.get(f"/v1/jobs/{ra.json()['id']}/view").status_code == 404
    ja, jb = wait_all(admin, [ra.json()["id"], rb.json()["id"]])
    assert ja["status"] == jb["status"] == "SUCCEEDED", (ja, jb)
    assert ja["mlflow_run_id"] != jb["mlflow_run_id"]
    owners = stack.data_dir / "owners"
    for user in ("alice", "bob"):
        run_dir = owners / user / "runs" / "shared-name"
        assert (run_dir / "final.pth").is_file()
        assert json.loads((run_dir / "run.json").read_text())["mlflow_run_id"] == \
            (ja if user == "alice" else jb)["mlflow_run_id"]

    # compare and runs:/ show only the caller's own runs
    def compared(c: httpx.Client) -> set[str]:
        r = c.get("/v1/experiments/sec/compare")
        return {run["run_id"] for run in r.json()["runs"]} if r.status_code == 200 else set()

    assert compared(alice) == {ja["mlflow_run_id"]}
    assert compared(bob) == {jb["mlflow_run_id"]}
    assert compared(admin) == {ja["mlflow_run_id"], jb["mlflow_run_id"]}
    steal = {"kind": "distill", "config": "synth/bckd_gfl", "data_root": str(stack.data),
             "name": "steal", "overrides": tiny_overrides(),
             "teacher_ckpt": f"runs:/{ja['mlflow_run_id']}/checkpoints/final.pth"}
    r = bob.post("/v1/jobs", json=steal)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "teacher_ckpt"]
    assert not (owners / "bob" / "teachers").exists()

    # an admin shares alice's run: bob sees it and may fetch it, into his own directory
    assert bob.put(f"/v1/runs/{ja['mlflow_run_id']}/shared", json={"shared": True}
                   ).status_code == 403
    assert admin.put(f"/v1/runs/{ja['mlflow_run_id']}/shared", json={"shared": True}
                     ).status_code == 200
    assert compared(bob) == {ja["mlflow_run_id"], jb["mlflow_run_id"]}
    r = bob.post("/v1/jobs", json=steal)
    assert r.status_code == 201, r.text
    assert any((owners / "bob" / "teachers").rglob("final.pth"))
    bob.post(f"/v1/jobs/{r.json()['id']}/cancel")
    wait_all(admin, [r.json()["id"]])

    # a changed config under an old name is a 409 naming the key; the same config resumes
    changed = {**body, "overrides": {**tiny_overrides(), "optim_wrapper.optimizer.lr": 0.5}}
    r = alice.post("/v1/jobs", json=changed)
    assert r.status_code == 409, r.text
    assert "optim_wrapper.optimizer.lr" in r.json()["detail"][0]["msg"]
    assert r.json()["detail"][0]["loc"] == ["body", "name"]
    again = alice.post("/v1/jobs", json=body)
    assert again.status_code == 201, again.text
    (resumed,) = wait_all(admin, [again.json()["id"]])
    assert resumed["status"] == "SUCCEEDED" and resumed["mlflow_run_id"] == ja["mlflow_run_id"]
