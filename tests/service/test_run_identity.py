"""A job's MLflow run is the one the API made for it, never one named in its log (issue 29).

The real app and database in this process (``tests/service/inprocess.py``), a real MLflow store
(SQLite) and the real reconciler pass. Ray is the stand-in ``HeldRay`` because its log must say
a chosen line at a chosen moment: a forged ``bckd: mlflow_run_id=<bob's run>`` in alice's
error, as a job made to fail with such a path prints it. The job side is the real
``open_owned_run`` that ``jobs.train`` calls, and the real ``jobs.train`` entrypoint.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bckd.tracking.runs import RunRefused, open_owned_run
from service.adapters.db import Job, session_scope, utcnow
from service.adapters.tracking import get_tracking
from service.core.auth import hash_token
from service.core.reconciler import reconcile_once
from service.core.states import JobStatus
from tests.service.inprocess import HeldRay, body, inprocess_api, row, until
from tests.service.servicetools import TOKENS, toy_dataset

ROOT = Path(__file__).resolve().parents[2]
BOB = {"Authorization": f"Bearer {TOKENS['bob']}"}
ADMIN_TOKEN = "root-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
USERS = ";".join([*(f"{hash_token(t)} {n} user" for n, t in TOKENS.items()),
                  f"{hash_token(ADMIN_TOKEN)} root admin"])
TOY_CLASSES = [f"c{i}" for i in range(8)]  # the toy teacher's head has 8 classes


class LoggingRay(HeldRay):
    """``HeldRay`` whose jobs' logs say what the test wrote (submission id -> text)."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: dict[str, str] = {}

    def logs(self, sid) -> str:
        return self.texts.get(sid, "")


@pytest.fixture
def toy(tmp_path):
    return toy_dataset(tmp_path)


def _api(monkeypatch, tmp_path, toy, ray=None, **env):
    return inprocess_api(monkeypatch, tmp_path, ray or HeldRay(), [toy.parent],
                         BCKD_TOKENS=USERS, **env)


def _mlflow(settings) -> MlflowClient:
    return MlflowClient(tracking_uri=settings.mlflow_uri)


def _submitted(settings, job_id: str) -> Job:
    return until(lambda: (j := row(settings, job_id)).submitted_at and j, f"{job_id} submitted")


def _reconcile(settings, ray) -> None:
    tracking = get_tracking(settings)
    for s in session_scope(settings):
        reconcile_once(s, ray, tracking, settings)


def _job_file(settings, job: dict) -> dict:
    path = settings.owners_dir / job["owner"] / "jobs" / f"{job['id']}.json"
    return json.loads(path.read_text())


def test_the_api_makes_the_run_and_the_job_file_names_it_and_a_rerun_keeps_it(
        tmp_path, monkeypatch, toy):
    with _api(monkeypatch, tmp_path, toy) as (c, settings):
        first = c.post("/v1/jobs", json=body(toy, name="kept"))
        assert first.status_code == 201, first.text
        job = first.json()
        run = _mlflow(settings).get_run(job["mlflow_run_id"])
        assert run.info.status == "SCHEDULED" and run.info.run_name == "kept"
        assert run.data.tags["bckd.owner"] == "alice" and run.data.tags["bckd.job_id"] == job["id"]
        spec = _job_file(settings, job)
        assert spec["mlflow_run_id"] == job["mlflow_run_id"]
        # the shipped config travels as data: the job executes no config file
        assert spec["config_name"] == "toy_teacher" and "config_file" not in spec
        assert spec["config_data"]["model"]["bbox_head"]["num_classes"] == 8
        for s in session_scope(settings):  # the first job ends
            s.get(Job, job["id"]).status = JobStatus.SUCCEEDED
            s.commit()
        again = c.post("/v1/jobs", json=body(toy, name="kept"))
        assert again.status_code == 201, again.text
        assert again.json()["id"] != job["id"]
        assert again.json()["mlflow_run_id"] == job["mlflow_run_id"]  # the rerun resumes in it
        assert _job_file(settings, again.json())["mlflow_run_id"] == job["mlflow_run_id"]
        # the rerun's job reopens it and names itself there
        tags = _job_file(settings, again.json())["tags"]
        open_owned_run(settings.mlflow_uri, job["mlflow_run_id"], "alice", tags)
        run = _mlflow(settings).get_run(job["mlflow_run_id"])
        assert run.info.status == "RUNNING" and run.data.tags["bckd.job_id"] == again.json()["id"]
        runs = _mlflow(settings).search_runs([run.info.experiment_id])
        assert [r.info.run_id for r in runs] == [job["mlflow_run_id"]]  # one run per name


def test_jobs_train_and_jobs_sweep_take_their_run_and_config_data_from_the_job_file(
        tmp_path, monkeypatch, toy):
    from jobs import sweep, train

    with _api(monkeypatch, tmp_path, toy) as (c, settings):
        for kind, module in (("train", train), ("sweep", sweep)):
            job = c.post("/v1/jobs", json=body(toy, kind=kind)).json()
            path = settings.owners_dir / "alice" / "jobs" / f"{job['id']}.json"
            parser = argparse.ArgumentParser()
            module._arguments(parser)
            spec = module._spec(parser.parse_args(["--spec", str(path)]))
            assert spec.run_id == job["mlflow_run_id"], kind
            # the config the job loads is the job file's data, written as JSON
            assert Path(spec.config).name == "request_config.json", kind
            assert json.loads(Path(spec.config).read_text())["model"]["type"] == "GFL"


def test_a_run_id_forged_into_a_jobs_log_changes_nothing(tmp_path, monkeypatch, toy):
    ray = LoggingRay()
    with _api(monkeypatch, tmp_path, toy, ray) as (c, settings):
        bob_job = c.post("/v1/jobs", json=body(toy, name="bobs"), headers=BOB).json()
        bob_run = bob_job["mlflow_run_id"]
        open_owned_run(settings.mlflow_uri, bob_run, "bob", {})  # bob's job is training
        before = _mlflow(settings).get_run(bob_run)
        failing, lost = (c.post("/v1/jobs", json=body(toy, name=n)).json()
                         for n in ("fails", "lost"))
        for job in (failing, lost):
            _submitted(settings, job["id"])
            ray.texts[job["id"]] = (  # the job's error prints a path it was given
                "Traceback (most recent call last):\nFileNotFoundError: /data/"
                f"bckd: mlflow_run_id={bob_run}/x.json\nbckd: mlflow_run_id={bob_run}\n")
        _reconcile(settings, ray)  # both RUNNING, their logs read
        ray.jobs[failing["id"]] = "FAILED"
        del ray.jobs[lost["id"]]  # Ray forgot it: LOST once the grace is over
        for s in session_scope(settings):
            s.get(Job, lost["id"]).ray_seen_at = utcnow() - timedelta(seconds=60)
            s.commit()
        _reconcile(settings, ray)
        for job, status, run_status in ((failing, "FAILED", "FAILED"),
                                        (lost, "LOST", "KILLED")):
            shown = c.get(f"/v1/jobs/{job['id']}").json()
            assert shown["status"] == status, shown
            assert shown["mlflow_run_id"] == job["mlflow_run_id"] != bob_run
            assert f"/runs/{job['mlflow_run_id']}?" in shown["links"]["mlflow_run"]
            # alice's own run is ended for her job, by the row's id
            assert _mlflow(settings).get_run(job["mlflow_run_id"]).info.status == run_status
        after = _mlflow(settings).get_run(bob_run)
        assert after.info.status == "RUNNING" and after.data.tags == before.data.tags
        assert after.data.tags["bckd.job_id"] == bob_job["id"]


def test_a_job_trains_only_in_its_owners_run(tmp_path, monkeypatch, toy):
    with _api(monkeypatch, tmp_path, toy) as (c, settings):
        job = c.post("/v1/jobs", json=body(toy, name="mine")).json()
        run_id, uri = job["mlflow_run_id"], settings.mlflow_uri
        with pytest.raises(RunRefused, match="not a run of owner 'bob'"):
            open_owned_run(uri, run_id, "bob", {"bckd.job_id": "x"})
        with pytest.raises(RunRefused, match="not in"):
            open_owned_run(uri, "0" * 32, "alice", {})
        # a job never writes the tags the service trusts
        open_owned_run(uri, run_id, "alice", {"bckd.owner": "bob", "bckd.shared": "true"})
        tags = _mlflow(settings).get_run(run_id).data.tags
        assert tags["bckd.owner"] == "alice" and "bckd.shared" not in tags
        _mlflow(settings).delete_run(run_id)
        with pytest.raises(RunRefused, match="deleted"):
            open_owned_run(uri, run_id, "alice", {})


def test_the_job_entrypoint_refuses_a_job_file_naming_another_owners_run(
        tmp_path, monkeypatch, toy):
    with _api(monkeypatch, tmp_path, toy) as (c, settings):
        job = c.post("/v1/jobs", json=body(toy, name="bobs"), headers=BOB).json()
        spec = _job_file(settings, job)
    data = tmp_path / "synth"
    for split in ("train", "val"):  # what the toy config's checks look for
        (data / split).mkdir(parents=True)
    (data / "annotations").mkdir()
    for split in ("train", "val"):
        (data / "annotations" / f"instances_{split}.json").write_text("{}")
    # mallory's job file, pointed at bob's run: refused before Ray or training starts
    spec.update(owner="mallory", tags={**spec["tags"], "bckd.owner": "mallory"},
                run_dir=str(tmp_path / "owners" / "mallory" / "runs" / "x"),
                read_roots=[str(tmp_path)], base_dir=str(tmp_path),
                overrides={"train_dataloader.dataset.data_root": f"{data}/",
                           "val_evaluator.ann_file": f"{data}/annotations/instances_val.json"})
    path = tmp_path / "mallory.json"
    path.write_text(json.dumps(spec))
    r = subprocess.run([sys.executable, "-m", "jobs.train", "--spec", str(path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "MLFLOW_TRACKING_URI": settings.mlflow_uri})
    assert r.returncode == 2, (r.stdout[-2000:], r.stderr[-3000:])
    assert "is not a run of owner 'mallory'" in r.stderr, r.stderr[-3000:]
    run = MlflowClient(tracking_uri=settings.mlflow_uri).get_run(job["mlflow_run_id"])
    assert run.info.status == "SCHEDULED" and run.data.tags["bckd.owner"] == "bob"


def test_runs_routes_refuse_another_owners_run_and_runs_no_job_made(
        tmp_path, monkeypatch, toy):
    with _api(monkeypatch, tmp_path, toy) as (c, settings):
        alice_run = c.post("/v1/jobs", json=body(toy, name="a")).json()["mlflow_run_id"]
        client = _mlflow(settings)
        stray = client.create_run(client.create_experiment("not-a-job")).info.run_id
        shared = {"shared": True}
        assert c.put(f"/v1/runs/{alice_run}/shared", json=shared).status_code == 403
        assert c.put(f"/v1/runs/{alice_run}/shared", json=shared,
                     headers=BOB).status_code == 403
        assert c.put(f"/v1/runs/{stray}/shared", json=shared, headers=ADMIN).status_code == 404
        assert "bckd.shared" not in client.get_run(stray).data.tags
        r = c.put(f"/v1/runs/{alice_run}/shared", json=shared, headers=ADMIN)
        assert r.status_code == 200 and client.get_run(alice_run).data.tags["bckd.shared"] == "true"
        # nor does an admin distill from a run that no job made
        teacher = body(toy, kind="distill", config="toy_bckd",
                       teacher_ckpt=f"runs:/{stray}/final.pth")
        r = c.post("/v1/jobs", json=teacher, headers=ADMIN)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "teacher_ckpt"


def _classes_dataset(root: Path) -> Path:
    """A data root whose train annotations name the toy head's 8 classes: the API then checks a
    local teacher checkpoint's classes, which reads the file with torch."""
    data = root / "datasets" / "classes"
    for split in ("train", "val"):
        (data / split).mkdir(parents=True)
    (data / "annotations").mkdir()
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(TOY_CLASSES)]
    for split in ("train", "val"):
        (data / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"images": [], "annotations": [], "categories": cats}))
    return data


def test_inputs_that_gave_500s_are_422s_naming_their_field(tmp_path, monkeypatch, toy):
    data = _classes_dataset(tmp_path)
    (tmp_path / "datasets" / "text.pth").write_text("not a torch file")
    with _api(monkeypatch, tmp_path, toy) as (c, settings):
        client = _mlflow(settings)
        own = c.post("/v1/jobs", json=body(toy, name="teacher")).json()["mlflow_run_id"]
        client.log_text(own, "model = dict(type='GFL')\n", "config.py")
        client.log_text(own, "not a torch file", "final.pth")
        upload = {"kind": "train", "config_upload": {"format": "json", "content": json.dumps(
            {"model": {"type": "GFL", "init_cfg": None}, "train_cfg": {"max_epochs": 1}})}}
        distill = {"kind": "distill", "config": "toy_bckd", "data_root": str(data)}
        cases = {
            "dict onto None": ({**upload, "overrides": {"model.init_cfg": {"type": "Normal"}}},
                               "overrides.model.init_cfg"),
            "dict onto a string": (body(toy, overrides={"model.type": {"a": 1}}),
                                   "overrides.model.type"),
            "a run's config.py": ({**distill, "teacher_ckpt": f"runs:/{own}/config.py"},
                                  "teacher_ckpt"),
            "a runs:/ query": ({**distill, "teacher_ckpt": f"runs:/{own}?q"}, "teacher_ckpt"),
            "a runs:/ query after the path": (
                {**distill, "teacher_ckpt": f"runs:/{own}/final.pth?q"}, "teacher_ckpt"),
            "a runs:/ .. path": ({**distill, "teacher_ckpt": f"runs:/{own}/../x.pth"},
                                 "teacher_ckpt"),
            "a run's .pth that is no torch file": (
                {**distill, "teacher_ckpt": f"runs:/{own}/final.pth"}, "teacher_ckpt"),
            "a local file that is no torch file": (
                {**distill, "teacher_ckpt": str(tmp_path / "datasets" / "text.pth")},
                "teacher_ckpt"),
        }
        count = len(c.get("/v1/jobs").json()["data"])
        for label, (req, field) in cases.items():
            r = c.post("/v1/jobs", json=req)
            assert r.status_code == 422, (label, r.status_code, r.text)
            locs = [".".join(str(p) for p in d["loc"] if p != "body")
                    for d in r.json()["detail"]]
            assert field in locs, (label, locs)
        assert len(c.get("/v1/jobs").json()["data"]) == count  # no job made
