"""The policy's view of a path is its reader's: for each path argument, the real class (mmdet's
CocoDataset and CocoMetric, mmengine's checkpoint loader and LocalVisBackend, this project's
teacher checkpoint reader) is built from the config the policy checked, in the job's working
directory, and the file it opens must be the one the policy resolved (``check_config``
returns them by key).
"""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bckd.config.policy import ConfigPolicy, Roots, check_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Roots:
    """A data root with a one-image COCO set, a run directory, and the job's working directory
    (``base``) as the process's."""
    import cv2

    data = tmp_path / "datasets" / "set"
    (data / "images").mkdir(parents=True)
    (data / "annotations").mkdir()
    cv2.imwrite(str(data / "images" / "a.png"), np.zeros((32, 32, 3), np.uint8))
    (data / "annotations" / "train.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10],
                         "area": 100, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "thing"}]}))
    run = tmp_path / "owners" / "alice" / "runs" / "r"
    run.mkdir(parents=True)
    base = tmp_path / "project"
    base.mkdir()
    monkeypatch.chdir(base)
    return Roots(read=(tmp_path / "datasets", tmp_path / "owners" / "alice"), write=run,
                 base=base)


@pytest.fixture()
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file the process opens from now on, resolved."""
    seen: list[Path] = []
    real = builtins.open

    def spy(file, *args, **kwargs):
        if isinstance(file, str | Path):
            seen.append(Path(file).resolve())
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    return seen


def checked(cfg: dict, roots: Roots) -> dict[str, Path]:
    return check_config(cfg, ConfigPolicy(ROOT / "configs", roots))


def dataset_cfg(data_root, ann_file: str, img: str) -> dict:
    return {"type": "CocoDataset", "data_root": data_root, "ann_file": ann_file,
            "data_prefix": {"img": img}, "metainfo": {"classes": ["thing"]},
            "pipeline": [{"type": "LoadImageFromFile"}]}


@pytest.mark.parametrize("layout", ["relative data_root", "absolute data_root", "no data_root"])
def test_coco_dataset_opens_the_files_the_policy_checked(job, opened, layout):
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules

    register_all_modules()
    data = job.read[0] / "set"
    if layout == "relative data_root":
        ds = dataset_cfg("../datasets/set/", "annotations/train.json", "images/")
    elif layout == "absolute data_root":
        ds = dataset_cfg(str(data), "annotations/train.json", "images/")
    else:
        ds = dataset_cfg(None, "../datasets/set/annotations/train.json",
                         "../datasets/set/images/")
    paths = checked({"train_dataloader": {"dataset": ds}}, job)
    assert paths["train_dataloader.dataset.ann_file"] == data / "annotations" / "train.json"
    assert paths["train_dataloader.dataset.data_prefix.img"] == data / "images"
    dataset = DATASETS.build(ds)
    assert paths["train_dataloader.dataset.ann_file"] in opened
    dataset[0]
    assert paths["train_dataloader.dataset.data_prefix.img"] / "a.png" in opened


def test_coco_metric_opens_its_ann_file_as_given(job, opened):
    from mmdet.registry import METRICS
    from mmdet.utils import register_all_modules

    register_all_modules()
    metric = {"type": "CocoMetric", "ann_file": "../datasets/set/annotations/train.json"}
    paths = checked({"val_evaluator": metric}, job)
    METRICS.build(metric)
    assert paths["val_evaluator.ann_file"] in opened
    assert paths["val_evaluator.ann_file"] == job.read[0] / "set/annotations/train.json"


def test_checkpoint_readers_open_the_checked_file(job, opened):
    from mmengine.model.weight_init import PretrainedInit
    from mmengine.runner.checkpoint import _load_checkpoint

    from bckd.checkpoint import load_state_dict

    model = torch.nn.Linear(2, 2)
    file = job.read[1] / "w.pth"
    torch.save({"state_dict": model.state_dict()}, file)
    rel = "../owners/alice/w.pth"
    cfg = {"load_from": rel,
           "model": {"type": "BCKDDetector", "teacher_ckpt": rel,
                     "student": {"type": "GFL", "backbone": {
                         "type": "ResNet", "depth": 18,
                         "init_cfg": {"type": "Pretrained", "checkpoint": rel}}}}}
    paths = checked(cfg, job)
    for key in ("load_from", "model.teacher_ckpt",
                "model.student.backbone.init_cfg.checkpoint"):
        assert paths[key] == file, key
    readers = {"load_from": lambda: _load_checkpoint(rel, map_location="cpu"),  # the Runner's
               "init_cfg.checkpoint": lambda: PretrainedInit(checkpoint=rel)(model),
               "teacher_ckpt": lambda: load_state_dict(rel)}
    for key, read in readers.items():
        opened.clear()
        read()
        assert file in opened, key


def test_local_vis_backend_writes_where_the_policy_checked(job):
    from mmengine.registry import VISBACKENDS

    backend = {"type": "LocalVisBackend", "save_dir": "../owners/alice/runs/r/vis"}
    paths = checked({"visualizer": {"type": "DetLocalVisualizer", "vis_backends": [backend]}},
                    job)
    VISBACKENDS.build(backend).add_scalars({"x": 1.0})
    written = paths["visualizer.vis_backends.0.save_dir"]
    assert written == job.write / "vis" and (written / "scalars.json").is_file()


def test_checkpoint_hook_saves_under_the_out_dir_the_policy_checked(job):
    import logging
    from types import SimpleNamespace

    from mmengine.hooks import CheckpointHook

    hook = {"type": "CheckpointHook", "interval": 1, "out_dir": "../owners/alice/runs/r/ckpt"}
    paths = checked({"default_hooks": {"checkpoint": hook}}, job)
    built = CheckpointHook(interval=1, out_dir=hook["out_dir"])
    # mmengine saves into <out_dir>/<the work dir's last part>
    built.before_train(SimpleNamespace(work_dir="/elsewhere/w", logger=logging.getLogger()))
    assert Path(built.out_dir).resolve() == paths["default_hooks.checkpoint.out_dir"] / "w"


def test_coco_metric_writes_its_results_beside_the_prefix(job, tmp_path):
    from bckd.config.policy import PolicyError

    metric = {"type": "CocoMetric", "outfile_prefix": "../owners/alice/runs/r/eval/coco"}
    paths = checked({"val_evaluator": metric}, job)
    # CocoMetric writes f"{outfile_prefix}.bbox.json": its directory must be the run's
    assert paths["val_evaluator.outfile_prefix"].parent == job.write / "eval"
    metric["outfile_prefix"] = "../owners/alice/runs/r"  # would write runs/r.bbox.json
    with pytest.raises(PolicyError, match="outputs go under the run directory"):
        checked({"val_evaluator": metric}, job)
