"""``bckd export`` and ``bckd predict`` on real mmdet students (GFL, RetinaNet, a BCKD
distiller's checkpoint): ONNX parity with torch through onnxruntime, no teacher in the graph,
COCO results from both backends, and each bad input named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mmcv
import numpy as np
import onnx
import pytest
import torch
from exporttools import config, make_synth, numel, plain_checkpoint, save_checkpoint
from mmdet.registry import MODELS
from pycocotools.coco import COCO

from bckd.config.loader import CONFIG_JSON, write_config_json
from bckd.export.inference import InferenceConfig, batches
from bckd.export.onnx import OnnxRaw, check_parity, export_onnx
from bckd.export.raw import RawHeadOutputs, detections
from bckd.export.source import build_student, resolve
from cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def images(data) -> list[str]:
    return [str(p) for p in sorted((data / "val").glob("*.jpg"))]


@pytest.mark.parametrize("name", ["gfl_student", "retinanet_student"])
def test_onnx_matches_torch_raw_and_after_nms(name, data, images, tmp_path):
    source = resolve(str(plain_checkpoint(name, data, tmp_path)))
    detector = build_student(source)
    spec = InferenceConfig.from_config(source.cfg)
    example, _ = next(batches(spec, detector, images[:1], 1))
    path = export_onnx(detector, spec, tmp_path / "student.onnx", example)
    # score_thr 0: hundreds of detections per image for an initialized head to agree on
    report = check_parity(detector, OnnxRaw(path), images, score_thr=0.0, batch_size=3)
    assert set(report["max_abs_diff"]) == {"cls_score", "bbox_pred"}
    assert max(report["max_abs_diff"].values()) < 1e-4, report
    assert report["detections"]["torch"] > 100 and report["detections_match"], report


def test_post_processing_equals_mmdet_predict(data, images, tmp_path):
    """The one post-processing function gives what the detector's own predict gives."""
    source = resolve(str(plain_checkpoint("gfl_student", data, tmp_path)))
    detector = build_student(source)
    spec = InferenceConfig.from_config(source.cfg)
    inputs, samples = next(batches(spec, detector, images[:2], 2))
    with torch.inference_mode():
        ours = detections(detector.bbox_head, RawHeadOutputs(detector)(inputs),
                          [s.metainfo for s in samples], score_thr=0.0)
        detector.bbox_head.test_cfg.score_thr = 0.0
        theirs = detector.predict(inputs, samples, rescale=True)
    for a, b in zip(ours, theirs, strict=True):
        assert len(a) > 0
        torch.testing.assert_close(a.bboxes, b.pred_instances.bboxes)
        assert torch.equal(a.labels, b.pred_instances.labels)


def _distiller_checkpoint(data: Path, directory: Path) -> tuple[Path, torch.nn.Module]:
    """A BCKD GFL distiller's checkpoint that also carries its teacher's weights (as some
    distillers' checkpoints do) and a channel adapter's; returns it and the teacher."""
    torch.manual_seed(1)
    teacher = MODELS.build(config("gfl_teacher", data).model)
    teacher.init_weights()
    teacher_ckpt = save_checkpoint(config("gfl_teacher", data), teacher.state_dict(),
                                   directory / "teacher.pth")
    cfg = config("bckd_gfl", data, **{"model.teacher_ckpt": str(teacher_ckpt)})
    distiller = MODELS.build(cfg.model)
    distiller.init_weights()
    state = {**distiller.state_dict(),
             **{f"teacher.{k}": v for k, v in teacher.state_dict().items()},
             "distill_adapters.feat.0.weight": torch.zeros(96, 64, 1, 1)}
    return save_checkpoint(cfg, state, directory / "bckd_gfl.pth"), teacher


def test_distillation_checkpoint_exports_the_student_only(data, images, tmp_path):
    ckpt, teacher = _distiller_checkpoint(data, tmp_path)
    out = tmp_path / "student.onnx"
    assert cli_main(["export", str(ckpt), "--format", "onnx", "--out", str(out)]) == 0
    source = resolve(str(ckpt))
    student = build_student(source)
    assert type(student).__name__ == "GFL"
    assert all(k.startswith(("teacher.", "distill_adapters.")) for k in source.dropped_keys)
    assert len(source.dropped_keys) == len(teacher.state_dict()) + 1
    graph = onnx.load(str(out)).graph
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    total = sum(w.size for w in weights.values())
    # Constant folding merges BN into the convs, so the graph holds at most the student's
    # tensors; the teacher alone is several times larger.
    assert total <= numel(student) < numel(teacher) / 2
    assert not any("teacher" in name or "adapter" in name for name in weights)
    head_weight = student.bbox_head.gfl_cls.weight.detach().numpy()
    assert np.array_equal(weights["detector.bbox_head.gfl_cls.weight"], head_weight)


def test_predict_torch_and_onnx_write_the_same_coco_results(data, images, tmp_path, capsys):
    ckpt = plain_checkpoint("gfl_student", data, tmp_path)
    onnx_file = tmp_path / "student.onnx"
    assert cli_main(["export", str(ckpt), "--out", str(onnx_file)]) == 0
    assert "detections after NMS match" in capsys.readouterr().out
    ann = str(data / "annotations/instances_val.json")
    runs = {"torch": [str(ckpt)], "onnx": [str(onnx_file)], "both": [str(ckpt), "--onnx",
                                                                       str(onnx_file)]}
    found = {}
    for kind, model in runs.items():
        out = tmp_path / kind
        argv = ["predict", *model, *images, "--out", str(out), "--score-thr", "0.0",
                "--annotations", ann, "--batch-size", "4"]
        assert cli_main(argv) == 0
        printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert printed["images"] == len(images) and printed["images_per_s"] > 0
        found[kind] = json.loads((out / "detections.json").read_text())
        assert sorted(p.name for p in (out / "vis").iterdir()) == [Path(p).name for p in images]
    results = found["torch"]
    assert len(results) > 100  # an initialized head scores about 0.01 everywhere
    assert {"image_id", "file_name", "category_id", "bbox", "score"} <= set(results[0])
    coco = COCO(ann)
    loaded = coco.loadRes(results)  # ids and categories are the annotation file's
    assert set(loaded.getImgIds()) <= set(coco.getImgIds())
    assert {r["category_id"] for r in results} <= set(coco.getCatIds())
    for kind in ("onnx", "both"):
        assert len(found[kind]) == len(results)
        assert _unmatched(results, found[kind]) == []


def _unmatched(a: list[dict], b: list[dict], tol: float = 1e-2) -> list[dict]:
    """Results of ``a`` with no result of ``b`` on the same image and category whose box is
    within ``tol`` px (order-free: near-equal scores may swap between backends)."""
    def key(r: dict) -> tuple:
        return r["image_id"], r["category_id"]

    boxes: dict[tuple, list] = {}
    for r in b:
        boxes.setdefault(key(r), []).append(r["bbox"])
    return [r for r in a if not any(np.abs(np.subtract(r["bbox"], box)).max() <= tol
                                    for box in boxes.get(key(r), []))]


def test_bad_inputs_are_named(data, tmp_path, capsys):
    missing = str(tmp_path / "nope.pth")
    assert cli_main(["export", missing]) == 2
    assert repr(missing) in capsys.readouterr().err
    # a teacher's checkpoint with a student's config: the shapes are named
    teacher = plain_checkpoint("gfl_teacher", data, tmp_path)
    # a job's config.json beside the checkpoint: the config export reads
    write_config_json(config("gfl_student", data), tmp_path / CONFIG_JSON)
    torch.save({"state_dict": torch.load(teacher, weights_only=False)["state_dict"]},
               tmp_path / "teacher_only.pth")
    assert cli_main(["export", str(tmp_path / "teacher_only.pth")]) == 2
    err = capsys.readouterr().err
    assert "teacher_only.pth" in err and "keys of other shapes" in err
    # no config anywhere
    bare = tmp_path / "bare" / "w.pth"
    bare.parent.mkdir()
    save_checkpoint(config("gfl_student", data), {}, bare, with_cfg=False)
    assert cli_main(["export", str(bare)]) == 2
    assert "pass --config" in capsys.readouterr().err
    # an image that is not there
    ckpt = plain_checkpoint("gfl_student", data, tmp_path)
    assert cli_main(["predict", str(ckpt), str(tmp_path / "x.jpg"), "--out",
                     str(tmp_path / "o")]) == 2
    assert "x.jpg" in capsys.readouterr().err


def test_a_checkpoints_config_is_read_as_data_never_run(data, tmp_path):
    # meta['cfg'] as mmengine writes it: read as literals, the same config as the file's
    ckpt = save_checkpoint(config("gfl_student", data), {}, tmp_path / "gfl_student.pth")
    source = resolve(str(ckpt))
    assert source.cfg.model.to_dict() == config("gfl_student", data).model.to_dict()
    assert "custom_imports" not in source.cfg  # a checkpoint's imports are never honoured
    # text that would run code if executed: refused, naming what to pass, and nothing ran
    sentinel = tmp_path / "ran"
    planted = tmp_path / "planted"
    planted.mkdir()
    for text in (f"model = dict(type='GFL')\nimport os\nos.mkdir({str(sentinel)!r})\n",
                 f"model = dict(type=__import__('os').mkdir({str(sentinel)!r}))\n",
                 f"model = dict(**__import__('os').mkdir({str(sentinel)!r}))\n"):
        save_checkpoint(config("gfl_student", data), {}, planted / "w.pth")
        torch.save({"meta": {"cfg": text}, "state_dict": {}}, planted / "w.pth")
        with pytest.raises(ValueError, match="is not plain data.*pass --config"):
            resolve(str(planted / "w.pth"))
        assert not sentinel.exists()
    # a job's config.json beside the file is preferred to meta['cfg'] (the job's own record)
    write_config_json(config("gfl_student", data), planted / CONFIG_JSON)
    assert resolve(str(planted / "w.pth")).cfg.model.type == "GFL"


def test_predict_draws_what_a_person_can_read_and_prints_no_library_warnings(data, images,
                                                                             tmp_path):
    # an initialized head scores about 0.01 everywhere: dozens of boxes after NMS are in
    # detections.json at --score-thr 0, but none reaches the drawing threshold. Run as a person
    # runs it (a process of its own: pytest would catch the warnings before stderr)
    ckpt = plain_checkpoint("gfl_student", data, tmp_path)
    drawn = {}
    for thr in ("0.0", None):
        out = tmp_path / f"draw-{thr}"
        argv = [sys.executable, "-m", "cli", "predict", str(ckpt), images[0], "--out", str(out),
                "--score-thr", "0.0", *(["--draw-thr", thr] if thr else [])]
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "Warning" not in proc.stderr, proc.stderr
        assert len(json.loads((out / "detections.json").read_text())) > 20
        drawn[thr] = np.abs(mmcv.imread(str(out / "vis" / Path(images[0]).name)).astype(float)
                            - mmcv.imread(images[0]).astype(float)).mean()
    assert drawn[None] < 10 < drawn["0.0"], drawn  # re-encoding only, against dozens of boxes
