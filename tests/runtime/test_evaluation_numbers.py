"""What a training logs of an evaluation: COCO's own numbers, with its two quirks handled."""

from __future__ import annotations

import json

import torch
from mmdet.evaluation import CocoMetric
from mmengine.evaluator import Evaluator

from bckd.runtime.hooks.runner_state import evaluation_numbers


def _evaluator(tmp_path) -> Evaluator:
    ann = {"images": [{"id": 1, "width": 64, "height": 64, "file_name": "1.jpg"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [8, 8, 16, 16],
                            "area": 256, "iscrowd": 0}],
           "categories": [{"id": 1, "name": "a"}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    evaluator = Evaluator(CocoMetric(ann_file=str(tmp_path / "ann.json"), metric="bbox"))
    evaluator.dataset_meta = {"classes": ("a",)}
    return evaluator


def _evaluate(evaluator: Evaluator, boxes: list[list[float]]) -> dict:
    pred = {"bboxes": torch.tensor(boxes).reshape(-1, 4), "scores": torch.ones(len(boxes)),
            "labels": torch.zeros(len(boxes), dtype=torch.long)}
    evaluator.process([{"img_id": 1, "ori_shape": (64, 64), "pred_instances": pred}])
    return evaluator.evaluate(1)


def test_no_detection_is_map_zero_not_a_missing_point(tmp_path):
    evaluator = _evaluator(tmp_path)
    raw = _evaluate(evaluator, [])
    assert raw == {}  # mmdet's CocoMetric returns nothing when nothing was detected
    assert evaluation_numbers(raw, evaluator) == {
        "coco/bbox_mAP": 0.0, "coco/bbox_mAP_50": 0.0, "coco/bbox_mAP_75": 0.0}


def test_cocos_minus_one_for_an_empty_area_range_is_not_logged(tmp_path):
    evaluator = _evaluator(tmp_path)
    raw = _evaluate(evaluator, [[8, 8, 24, 24]])  # the one small object, found exactly
    assert raw["coco/bbox_mAP_l"] == -1.0 and raw["coco/bbox_mAP_m"] == -1.0  # no such objects
    got = evaluation_numbers(raw, evaluator)
    assert got["coco/bbox_mAP"] == 1.0 and got["coco/bbox_mAP_s"] == 1.0
    assert "coco/bbox_mAP_l" not in got and "coco/bbox_mAP_m" not in got
