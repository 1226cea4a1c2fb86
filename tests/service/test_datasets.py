"""Registered data sets through the real API (uvicorn, local Ray, MLflow, the real
``jobs.train``): registration runs ``bckd data check``, sets are their owner's until an admin
shares them, a path is one owner's, an uploaded set lands in its owner's directory checked the
same way, and a job on a set trains with the set's classes."""

from __future__ import annotations

import json
import shutil
import tarfile

import pytest
import torch
from mmengine.runner.checkpoint import save_checkpoint

from bckd.data import SynthConfig, generate
from service.core.auth import hash_token
from service.stack.embedded import Stack, StackConfig, free_port
from tests.service.servicetools import TOKENS, wait_all

pytestmark = pytest.mark.slow

UPLOAD_CAP = 4_000_000  # bytes; the 4-class set's archive is about a tenth of it


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("dsets")
    sets = root / "datasets"
    generate(SynthConfig(out=sets / "four", num_train=16, num_val=8, image_size=128,
                         num_classes=4, workers=1), progress=False)
    bad = sets / "bad"
    shutil.copytree(sets / "four", bad)
    ann = json.loads((bad / "annotations/instances_val.json").read_text())
    ann["annotations"][1]["bbox"] = [120, 3, 40, 5]
    (bad / "annotations/instances_val.json").write_text(json.dumps(ann))
    (root / "outside").mkdir()
    users = ";".join(f"{hash_token(t)} {n} user" for n, t in TOKENS.items())
    st = Stack(StackConfig(
        data_dir=root / "state", api_port=free_port(), dashboard_port=free_port(),
        mlflow_port=free_port(), num_cpus=2,
        extra_env={"BCKD_DATA_ROOTS": json.dumps([str(sets)]), "BCKD_TOKENS": users,
                   "BCKD_RECONCILE_INTERVAL_S": "0.5",
                   # SIGINT -> SIGKILL grace of a cancel (as test_api.py): a job cancelled
                   # before it trains may use all of it (the default 90 s), and no test here
                   # checks how a cancelled job ends
                   "BCKD_STOP_WAIT_S": "10",
                   "BCKD_MAX_UPLOAD_BYTES": str(UPLOAD_CAP)}))
    st.start()
    st.root, st.sets = root, sets
    yield st
    st.stop()


TINY = {"train_cfg.max_epochs": 1, "train_dataloader.batch_size": 4,
        "val_dataloader.batch_size": 4, "train_dataloader.num_workers": 0,
        "val_dataloader.num_workers": 0, "train_dataloader.persistent_workers": False,
        "val_dataloader.persistent_workers": False}


def loc(r) -> list:
    return r.json()["detail"][0]["loc"]


def test_registration_checks_the_set(stack, alice):
    r = alice.post("/v1/datasets", json={"name": "four", "path": str(stack.sets / "four"),
                                         "description": "4 classes"})
    assert r.status_code == 201, r.text
    summary = r.json()["summary"]
    assert summary["classes"] == ["disk_solid", "square_solid", "triangle_solid", "ring_solid"]
    assert summary["splits"]["train"]["images"] == 16 and summary["splits"]["val"]["images"] == 8
    assert alice.post("/v1/datasets", json={"name": "four", "path": str(stack.sets / "four")}
                      ).status_code == 409
    r = alice.post("/v1/datasets", json={"name": "bad", "path": str(stack.sets / "bad")})
    assert r.status_code == 422 and loc(r) == ["body", "path"], r.text
    assert "annotation id 2" in r.text and "[120, 3, 40, 5]" in r.text
    r = alice.post("/v1/datasets", json={"name": "out", "path": str(stack.root / "outside")})
    assert r.status_code == 422 and "outside the shared data roots" in r.text
    names = [d["name"] for d in alice.get("/v1/datasets").json()["data"]]
    assert names == ["four"]
    assert alice.get("/v1/datasets/four").json()["description"] == "4 classes"


def test_another_user_neither_sees_nor_uses_a_set_until_an_admin_shares_it(stack, alice,
                                                                           bob, admin):
    alice.post("/v1/datasets", json={"name": "four", "path": str(stack.sets / "four")})
    assert bob.get("/v1/datasets").json()["count"] == 0
    assert bob.get("/v1/datasets/four", params={"owner": "alice"}).status_code == 404
    job = {"kind": "train", "config": "synth/gfl_student", "dataset": "alice/four",
           "overrides": TINY, "name": "on-alices"}
    r = bob.post("/v1/jobs", json=job)
    assert r.status_code == 422 and loc(r) == ["body", "dataset"], r.text
    assert bob.put("/v1/datasets/four/shared", params={"owner": "alice"},
                   json={"shared": True}).status_code == 403
    assert admin.put("/v1/datasets/four/shared", params={"owner": "alice"},
                     json={"shared": True}).json()["shared"] is True
    assert [d["owner"] for d in bob.get("/v1/datasets").json()["data"]] == ["alice"]
    r = bob.post("/v1/jobs", json=job)
    assert r.status_code == 201, r.text
    bob.post(f"/v1/jobs/{r.json()['id']}/cancel")
    wait_all(admin, [r.json()["id"]])


def test_a_job_on_a_set_trains_with_its_classes(stack, alice, admin):
    alice.post("/v1/datasets", json={"name": "four", "path": str(stack.sets / "four")})
    r = alice.post("/v1/jobs", json={"kind": "train", "config": "synth/gfl_student",
                                     "dataset": "four", "overrides": TINY, "name": "four-cls"})
    assert r.status_code == 201, r.text
    (job,) = wait_all(admin, [r.json()["id"]])
    assert job["status"] == "SUCCEEDED", job
    spec = json.loads((stack.data_dir / "owners/alice/jobs" / f"{job['id']}.json").read_text())
    assert spec["overrides"]["model.bbox_head.num_classes"] == 4
    assert spec["overrides"]["train_dataloader.dataset.metainfo.classes"][3] == "ring_solid"
    final = torch.load(stack.data_dir / "owners/alice/runs/four-cls/final.pth",
                       map_location="cpu", weights_only=False)
    assert final["state_dict"]["bbox_head.gfl_cls.weight"].shape[0] == 4  # 4 classes, 1 prior


def test_a_teacher_of_other_classes_is_refused_naming_both_lists(stack, alice):
    alice.post("/v1/datasets", json={"name": "four", "path": str(stack.sets / "four")})
    eight = [f"c{i}" for i in range(8)]
    ckpt = stack.sets / "teacher8.pth"
    save_checkpoint({"state_dict": {}, "meta": {"dataset_meta": {"classes": eight}}},
                    str(ckpt))
    r = alice.post("/v1/jobs", json={"kind": "distill", "config": "synth/bckd_gfl",
                                     "dataset": "four", "teacher_ckpt": str(ckpt),
                                     "overrides": TINY, "name": "mismatch"})
    assert r.status_code == 422 and loc(r) == ["body", "teacher_ckpt"], r.text
    msg = r.json()["detail"][0]["msg"]
    assert str(eight) in msg and "'ring_solid'" in msg


def tar_of(src, to) -> bytes:
    """``src`` as ``tar czf to myset/`` makes it."""
    with tarfile.open(to, "w:gz") as tar:
        tar.add(src, arcname="myset")
    return to.read_bytes()


def upload(c, name: str, body: bytes, **params):
    return c.post(f"/v1/datasets/{name}/archive", content=body, params=params,
                  headers={"Content-Type": "application/gzip"})


def test_a_path_is_one_owners(stack, alice, bob):
    alice.post("/v1/datasets", json={"name": "four", "path": str(stack.sets / "four")})
    for path in (stack.sets / "four", stack.sets / "four" / "train"):  # the set, inside it
        r = bob.post("/v1/datasets", json={"name": "mine", "path": str(path)})
        assert r.status_code == 409 and loc(r) == ["body", "path"], r.text
        assert "another owner" in r.text
    r = bob.post("/v1/datasets", json={"name": "mine",
                                       "path": str(stack.data_dir / "owners" / "alice")})
    assert r.status_code == 403 and loc(r) == ["body", "path"], r.text
    assert [d for d in bob.get("/v1/datasets").json()["data"] if d["owner"] == "bob"] == []


def test_an_uploaded_set_is_checked_and_is_its_owners_alone(stack, alice, bob, admin,
                                                              tmp_path):
    r = upload(alice, "up", tar_of(stack.sets / "four", tmp_path / "four.tgz"),
               description="uploaded")
    assert r.status_code == 201, r.text
    up = r.json()
    sets = stack.data_dir / "owners" / "alice" / "datasets"
    assert up["path"] == str(sets / "up") and up["description"] == "uploaded"
    assert up["summary"]["classes"][3] == "ring_solid"
    assert up["summary"]["splits"]["train"]["images"] == 16
    assert upload(alice, "up", b"whatever").status_code == 409
    r = bob.post("/v1/datasets", json={"name": "hers", "path": up["path"]})
    assert r.status_code == 403 and loc(r) == ["body", "path"], r.text
    r = admin.put("/v1/datasets/up/shared", params={"owner": "alice"}, json={"shared": True})
    assert r.status_code == 409 and loc(r) == ["body", "shared"], r.text
    # a set that fails the check, an archive with a link, one over the cap: refused, no trace
    r = upload(alice, "bad", tar_of(stack.sets / "bad", tmp_path / "bad.tgz"))
    assert r.status_code == 422 and loc(r) == ["body", "archive"], r.text
    assert "annotation id 2" in r.text and str(sets / "bad") in r.text
    link = tmp_path / "link.tgz"
    with tarfile.open(link, "w:gz") as tar:
        info = tarfile.TarInfo("myset/annotations")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc"
        tar.addfile(info)
    r = upload(alice, "link", link.read_bytes())
    assert r.status_code == 422 and "a link" in r.text, r.text
    r = upload(alice, "big", bytes(UPLOAD_CAP + 1))
    assert r.status_code == 413 and loc(r) == ["body", "archive"], r.text
    assert sorted(p.name for p in sets.iterdir()) == ["up"]
    # alice's job may read it (her directory); the policy accepts the set's paths
    r = alice.post("/v1/jobs", json={"kind": "train", "config": "synth/gfl_student",
                                     "dataset": "up", "overrides": TINY, "name": "on-up"})
    assert r.status_code == 201, r.text
    alice.post(f"/v1/jobs/{r.json()['id']}/cancel")
    wait_all(admin, [r.json()["id"]])
