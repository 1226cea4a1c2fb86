"""What predicting needs from a training config, as plain JSON data, and batches of images.

:class:`InferenceConfig` is the student's model config, the test pipeline, the class names and
their COCO category ids. ``bckd export`` stores it in the ONNX file's metadata, so a ``.onnx``
file alone is enough to predict, and reading it back executes no config code (JSON, where a
``.py`` config would run).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from mmengine.config import Config, ConfigDict

__all__ = ["InferenceConfig", "batches", "build_detector"]


def _plain(value):
    """Config values as JSON types (tuples -> lists, ConfigDict -> dict)."""
    return json.loads(json.dumps(value, default=lambda v: v.to_dict() if hasattr(v, "to_dict")
                                 else list(v)))


def _category_ids(cfg: Config, classes: Sequence[str]) -> list[int]:
    """COCO ids of ``classes``: from the val annotation file when it exists (by name), else
    ``1, 2, ...`` in class order, as ``bckd data synth`` writes them."""
    ann_file = (cfg.get("val_evaluator") or {}).get("ann_file")
    if isinstance(ann_file, str) and Path(ann_file).is_file():
        by_name = {c["name"]: c["id"] for c in json.loads(Path(ann_file).read_text())
                   .get("categories", [])}
        if all(name in by_name for name in classes):
            return [by_name[name] for name in classes]
    return list(range(1, len(classes) + 1))


@dataclass
class InferenceConfig:
    model: dict  # the student's plain mmdet model config
    pipeline: list[dict]  # the test pipeline, without annotations
    classes: list[str]
    category_ids: list[int]  # COCO id of each class, by label
    default_scope: str = "mmdet"

    @classmethod
    def from_config(cls, cfg: Config) -> InferenceConfig:
        from mmdet.utils import get_test_pipeline_cfg

        from bckd.export.source import student_model_config

        model = student_model_config(cfg)
        pipeline = [dict(t) for t in _plain(get_test_pipeline_cfg(cfg))
                    if t["type"] != "LoadAnnotations"]
        dataset = cfg.test_dataloader.dataset
        while "metainfo" not in dataset and "dataset" in dataset:
            dataset = dataset.dataset
        classes = list((dataset.get("metainfo") or cfg.get("metainfo") or {}).get("classes", []))
        num_classes = model["bbox_head"]["num_classes"]
        if len(classes) != num_classes:  # a config without metainfo: the labels are the names
            classes = [str(i) for i in range(num_classes)]
        return cls(_plain(model), pipeline, classes, _category_ids(cfg, classes),
                   cfg.get("default_scope", "mmdet"))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> InferenceConfig:
        return cls(**json.loads(text))


def build_detector(spec: InferenceConfig) -> torch.nn.Module:
    """The student detector of ``spec`` in eval mode, with initial weights (what an ONNX run
    needs of it: the data preprocessor and the head's priors, coder and ``test_cfg``)."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    import bckd.distill  # noqa: F401  (registers this project's modules, as training does)

    init_default_scope(spec.default_scope)
    return MODELS.build(ConfigDict(copy.deepcopy(spec.model))).eval()  # heads read attrs


def batches(spec: InferenceConfig, detector: torch.nn.Module, images: Sequence[str | Path],
            batch_size: int) -> Iterator[tuple[torch.Tensor, list]]:
    """``(inputs (B, 3, H, W), data_samples)`` per batch of ``images``: the test pipeline, then
    the detector's data preprocessor (normalize, pad to the batch's largest, divisible size).
    Each sample's metainfo carries ``img_path``, ``ori_shape``, ``img_shape``, ``scale_factor``."""
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope

    init_default_scope(spec.default_scope)
    pipeline = Compose(copy.deepcopy(spec.pipeline))
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        packed = []
        for path in chunk:
            if not Path(path).is_file():
                raise FileNotFoundError(f"IMAGES: no such file {str(path)!r}")
            packed.append(pipeline(dict(img_path=str(path), img_id=start + len(packed))))
        data = detector.data_preprocessor(pseudo_collate(packed), False)
        yield data["inputs"], data["data_samples"]
