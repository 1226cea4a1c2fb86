"""Detections for a list of images with the torch student or its ONNX file.

Both backends share the batches (test pipeline + data preprocessor) and the post-processing
(:func:`bckd.export.raw.detections`); only the raw maps come from torch or onnxruntime.
Writes ``detections.json`` in COCO's results format and, unless told not to, each image with
its boxes drawn by mmdet's ``DetLocalVisualizer``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from bckd.export.inference import InferenceConfig, batches
from bckd.export.raw import RawHeadOutputs, detections

__all__ = ["Prediction", "coco_results", "predict"]

Backend = Callable[[Tensor], Sequence[Tensor]]  # images (B, 3, H, W) -> raw head maps


@dataclass
class Prediction:
    results: list[dict]  # COCO results: image_id, file_name, category_id, bbox xywh, score
    images: int
    seconds: float  # pipeline + preprocessor + model + post-processing, drawing excluded
    json_path: Path

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


def _image_ids(spec: InferenceConfig, annotations: str | None) -> dict[str, int]:
    """File name -> COCO image id, from an annotation file (so the results load with
    ``COCO.loadRes`` against it)."""
    if not annotations:
        return {}
    images = json.loads(Path(annotations).read_text()).get("images", [])
    return {Path(im["file_name"]).name: im["id"] for im in images}


def coco_results(spec: InferenceConfig, path: str, image_id: int, dets) -> list[dict]:
    """One image's detections as COCO results (``bbox`` is ``[x, y, w, h]`` in pixels)."""
    boxes = dets.bboxes.tolist()
    return [{"image_id": image_id, "file_name": Path(path).name,
             "category_id": spec.category_ids[label], "bbox": [x1, y1, x2 - x1, y2 - y1],
             "score": score}
            for (x1, y1, x2, y2), label, score in zip(boxes, dets.labels.tolist(),
                                                       dets.scores.tolist(), strict=True)]


def _visualizer(spec: InferenceConfig):
    from mmdet.visualization import DetLocalVisualizer

    # ManagerMixin keeps instances by name; a fresh name per call.
    visualizer = DetLocalVisualizer(name=f"bckd-predict-{uuid.uuid4().hex}")
    visualizer.dataset_meta = {"classes": spec.classes, "palette": "random"}
    return visualizer


def predict(spec: InferenceConfig, detector: torch.nn.Module, backend: Backend | None,
            images: Sequence[str | Path], out: str | Path, score_thr: float | None = None,
            batch_size: int = 8, draw: bool = True, annotations: str | None = None,
            draw_thr: float = 0.0) -> Prediction:
    """Detect objects in ``images``; write ``out/detections.json`` and ``out/vis/<name>``.

    Args:
        detector: the student (its data preprocessor and head; its weights when ``backend`` is
            None, i.e. torch).
        backend: onnxruntime's raw maps (:class:`bckd.export.onnx.OnnxRaw`), or None for torch.
        annotations: a COCO file whose image ids the results use (default: the images' order).
        draw_thr: the drawn images show the boxes scoring at least this; the json keeps all
            (``bckd predict`` draws from :data:`bckd.export.cli.DRAW_THR`, which a person can
            read: at the head's 0.05 a 128 px image holds a hundred boxes).
    """
    import mmcv

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    backend = backend or RawHeadOutputs(detector).eval()
    ids = _image_ids(spec, annotations)
    visualizer = _visualizer(spec) if draw else None
    results: list[dict] = []
    seconds = 0.0
    start = time.perf_counter()
    for inputs, samples in batches(spec, detector, list(images), batch_size):
        with torch.inference_mode():
            dets = detections(detector.bbox_head, backend(inputs),
                              [s.metainfo for s in samples], score_thr)
        seconds += time.perf_counter() - start
        for sample, det in zip(samples, dets, strict=True):
            path = sample.metainfo["img_path"]
            image_id = ids.get(Path(path).name, sample.metainfo.get("img_id", 0) + 1)
            results += coco_results(spec, path, image_id, det)
            if visualizer is not None:
                sample.pred_instances = det
                visualizer.add_datasample(Path(path).name, mmcv.imread(path, channel_order="rgb"),
                                          sample, draw_gt=False, pred_score_thr=draw_thr,
                                          out_file=str(out / "vis" / Path(path).name))
        start = time.perf_counter()
    json_path = out / "detections.json"
    json_path.write_text(json.dumps(results) + "\n")
    return Prediction(results, len(images), seconds, json_path)
