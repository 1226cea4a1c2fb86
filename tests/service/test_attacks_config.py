"""Attacks through a request's config, tried against the real API in this process (FastAPI's
TestClient, the real app, database and validation; Ray stands in with ``HeldRay``, since a
refused request must never reach it).

Each payload is one an attacker would send to run code, open a config file, or read outside
their roots through mmengine's config language: keys holding quotes, newlines or unicode,
``mmdet::`` names and every argument that loads a config, paths through every reader's
semantics, numbers past their bounds. Each must be a 422 whose ``loc`` names the field; then
nothing has run (no sentinel file), nothing was submitted, and no job exists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from service.settings import PROJECT_ROOT
from tests.service.inprocess import HeldRay, body, inprocess_api
from tests.service.servicetools import toy_dataset


def upload(content: dict, kind: str = "train") -> dict:
    return {"kind": kind, "config_upload": {"format": "json", "content": json.dumps(content)}}


def attacks(toy: Path, own: Path, sentinel: Path) -> dict[str, tuple[dict, str]]:
    """name -> (request body, the field its 422 must name)."""
    evil = toy / "evil.py"  # readable: inside a data root
    evil.write_text(f"import pathlib\npathlib.Path({str(sentinel)!r}).touch()\n"
                    "model = dict(type='GFL')\n")
    (own / "runs" / "x" / "fake.json").mkdir(parents=True)  # a directory named like a file
    (toy.parent.parent / "outside").mkdir()
    (toy.parent.parent / "outside" / "secret.json").write_text("{}")
    code = f"__import__('os').system('touch {sentinel}')"
    model = {"type": "GFL", "bbox_head": {"type": "GFLHead", "num_classes": 8,
                                          "in_channels": 16}}
    data = {"model": model, "train_dataloader": {"batch_size": 2, "dataset": {
        "type": "CocoDataset", "data_root": f"{toy}/"}}}
    distill = {**data, "model": {"type": "BCKDDetector", "student": model,
                                 "teacher": "toy_teacher.py"}}

    def shipped(**overrides) -> dict:
        return body(toy, overrides=overrides)

    def direct(**overrides) -> dict:  # no data_root field: it would set the evaluator's too
        return {"kind": "train", "config": "toy_teacher",
                "overrides": {"train_dataloader.dataset.data_root": f"{toy}/", **overrides}}

    def changed(cfg: dict, where: str, value) -> dict:
        cfg = json.loads(json.dumps(cfg))
        node = cfg
        *parents, leaf = where.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        return cfg

    relative_outside = os.path.relpath(toy.parent.parent / "outside", PROJECT_ROOT)
    return {
        # keys: mmengine's pretty_text writes them unquoted into config.py
        "override key with a quote": (
            shipped(**{"+zz": [{f"a': {code}, 'b": 1}]}), "overrides.+zz"),
        "override key with a newline": (shipped(**{f"+a\n{code}": 1}), f"overrides.+a\n{code}"),
        "override key in unicode": (shipped(**{"+ｅval": 1}), "overrides.+ｅval"),
        "upload key with a quote": (upload(changed(data, "model.a'b", 1)),
                                    "config_upload.content.model.a'b"),
        "upload key in unicode": (upload(changed(data, "model.ｔype", "GFL")),
                                  "config_upload.content.model.ｔype"),
        "upload key mmengine reserves": (upload(changed(data, "filename", "x.py")),
                                         "config_upload.content.filename"),
        "override key mmengine reserves": (shipped(**{"+text": "x"}), "overrides.+text"),
        # config files: mmdet:: names, teacher configs, every argument that loads a config
        # with a data set of known classes, the API reads the teacher's head before the policy
        "mmdet:: absolute path": ({**upload(changed(distill, "model.teacher", f"mmdet::{evil}"),
                                            "distill"), "data_root": str(toy)},
                                  "config_upload.content.model.teacher"),
        "mmdet:: ..": (upload(changed(distill, "model.teacher", "mmdet::" + os.path.relpath(
            evil, PROJECT_ROOT / "x")), "distill"), "config_upload.content.model.teacher"),
        "teacher .py outside configs": (upload(changed(distill, "model.teacher", str(evil)),
                                               "distill"), "config_upload.content.model.teacher"),
        "teacher_config of mmdet's KD detector": (upload(changed(data, "model", {
            "type": "KnowledgeDistillationSingleStageDetector", "teacher_config": str(evil)})),
            "config_upload.content.model.teacher_config"),
        "teacher_config by override": (shipped(**{"+model.teacher_config": str(evil)}),
                                       "overrides.+model.teacher_config"),
        "init_cfg checkpoint .py": (upload(changed(data, "model.backbone", {
            "type": "ResNet", "depth": 18,
            "init_cfg": {"type": "Pretrained", "checkpoint": str(evil)}})),
            "config_upload.content.model.backbone.init_cfg.checkpoint"),
        "load_from .py": (shipped(**{"+load_from": str(evil)}), "overrides.+load_from"),
        "_base_": (upload(changed(data, "_base_", [str(evil)])), "config_upload.content._base_"),
        "custom_imports": (shipped(**{"+custom_imports": {"imports": ["os"]}}),
                           "overrides.+custom_imports"),
        # paths, as each reader resolves them
        "evaluator ann_file ..": (direct(**{
            "val_evaluator.ann_file": f"{toy}/../../outside/secret.json"}),
            "overrides.val_evaluator.ann_file"),
        "evaluator ann_file relative to the job's cwd": (direct(**{
            "val_evaluator.ann_file": f"{relative_outside}/secret.json"}),
            "overrides.val_evaluator.ann_file"),
        "dataset ann_file ..": (shipped(**{
            "+train_dataloader.dataset.ann_file": "../../outside/secret.json"}),
            "overrides.+train_dataloader.dataset.ann_file"),
        "dataset data_prefix ..": (shipped(**{
            "+train_dataloader.dataset.data_prefix": {"img": "../../outside/"}}),
            "overrides.+train_dataloader.dataset.data_prefix"),
        "relative data_root outside": (upload(changed(
            data, "train_dataloader.dataset.data_root", relative_outside)),
            "config_upload.content.train_dataloader.dataset.data_root"),
        "directory named like a file": (direct(**{
            "val_evaluator.ann_file": str(own / "runs" / "x" / "fake.json")}),
            "overrides.val_evaluator.ann_file"),
        "proposal_file (unpickled)": (shipped(**{
            "+train_dataloader.dataset.proposal_file": str(toy / "annotations" / "p.pkl")}),
            "overrides.+train_dataloader.dataset.proposal_file"),
        # numbers past their bounds
        "epochs": (shipped(**{"train_cfg.max_epochs": 10**9}), "overrides.train_cfg.max_epochs"),
        "batch size": (shipped(**{"train_dataloader.batch_size": 10**6}),
                       "overrides.train_dataloader.batch_size"),
        "repeats": (upload(changed(data, "train_dataloader.dataset", {
            "type": "RepeatDataset", "times": 10**9, "dataset": data["train_dataloader"][
                "dataset"]})), "config_upload.content.train_dataloader.dataset.times"),
    }


@pytest.fixture
def api(tmp_path, monkeypatch):
    toy = toy_dataset(tmp_path)
    (toy / "annotations" / "instances_train.json").write_text(json.dumps(
        {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}))
    ray = HeldRay()
    with inprocess_api(monkeypatch, tmp_path, ray, [toy.parent]) as (c, settings):
        yield c, settings, toy, ray


def test_every_config_attack_is_refused_naming_its_field_and_nothing_runs(api, tmp_path):
    c, settings, toy, ray = api
    own = settings.owners_dir / "alice"
    sentinel = tmp_path / "pwned"
    refused = {}
    for label, (request, field) in attacks(toy, own, sentinel).items():
        r = c.post("/v1/jobs", json=request)
        assert r.status_code == 422, (label, r.status_code, r.text)
        refused[label] = ".".join(str(p) for p in r.json()["detail"][0]["loc"][1:])
        assert refused[label] == field, (label, r.json())
    assert not sentinel.exists(), "an attack ran code"
    assert "submit" not in ray.calls
    assert c.get("/v1/jobs").json()["count"] == 0
    # the same API takes a clean request
    r = c.post("/v1/jobs", json=body(toy))
    assert r.status_code == 201, r.text
