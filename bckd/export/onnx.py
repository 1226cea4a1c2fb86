"""Write the student as ONNX, run it with onnxruntime, and check it against torch.

The file's input ``images`` is ``(B, 3, H, W)`` float32, what mmdet's data preprocessor outputs
(channel order, mean/std, padding: see the stored config); its outputs are the head's raw maps
(:mod:`bckd.export.raw`). Batch, height and width are dynamic. The file's metadata holds
``bckd.inference_config`` (:class:`~bckd.export.inference.InferenceConfig` as JSON).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from bckd.export.inference import InferenceConfig, batches
from bckd.export.raw import RawHeadOutputs, detections, output_names

__all__ = ["METADATA_KEY", "OnnxRaw", "check_parity", "export_onnx", "format_report",
           "match_detections", "write_report"]

METADATA_KEY = "bckd.inference_config"
OPSET = 17  # onnxruntime 1.32 runs 7..23; 17 has every op these heads trace to


def export_onnx(detector: nn.Module, spec: InferenceConfig, path: str | Path,
                example: Tensor) -> Path:
    """Trace ``detector``'s backbone, neck and head on ``example`` ``(B, 3, H, W)`` into ``path``.

    The TorchScript exporter (``dynamo=False``), not torch.export's: it traces the heads'
    per-level Python loops as they run and needs no onnxscript; torch 2.13 still ships it.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = RawHeadOutputs(detector).eval()
    names = output_names(detector, example)
    axes = {"images": {0: "batch", 2: "height", 3: "width"}}
    axes.update({name: {0: "batch", 2: f"{name}_h", 3: f"{name}_w"} for name in names})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
        torch.onnx.export(graph, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["images"], output_names=names, dynamic_axes=axes)
    detector.eval()  # the exporter restores the wrapper's mode onto its children
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {METADATA_KEY: spec.to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


class OnnxRaw:
    """An ONNX file as a callable ``images (B, 3, H, W) -> raw maps`` (torch tensors), plus the
    :class:`InferenceConfig` stored in it."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        if not Path(path).is_file():
            raise FileNotFoundError(f"--onnx: no such file {str(path)!r}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph
            raise ValueError(f"--onnx {str(path)!r} is not a loadable ONNX model: {err}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise ValueError(f"--onnx {str(path)!r} was not written by `bckd export` (no "
                             f"{METADATA_KEY} metadata)")
        self.spec = InferenceConfig.from_json(meta[METADATA_KEY])
        self.names = [o.name for o in self.session.get_outputs()]

    def __call__(self, images: Tensor) -> list[Tensor]:
        outputs = self.session.run(None, {"images": images.numpy()})
        return [torch.from_numpy(o) for o in outputs]


def match_detections(a, b, box_tol: float, score_tol: float) -> bool:
    """Whether two images' detections (``InstanceData``) are the same set: equal counts, and
    each of ``a`` (by score) pairs with an unused one of ``b`` of the same label whose box is
    within ``box_tol`` px and score within ``score_tol`` (near ties may swap order)."""
    if len(a) != len(b):
        return False
    close = ((a.bboxes[:, None] - b.bboxes[None]).abs().amax(-1) <= box_tol)  # (Na, Nb)
    close &= (a.labels[:, None] == b.labels[None])
    close &= ((a.scores[:, None] - b.scores[None]).abs() <= score_tol)
    used = torch.zeros(len(b), dtype=torch.bool)
    for i in a.scores.argsort(descending=True).tolist():
        free = (close[i] & ~used).nonzero()
        if len(free) == 0:
            return False
        used[free[0, 0]] = True
    return True


def check_parity(detector: nn.Module, runner: OnnxRaw, images: Sequence[str | Path],
                 score_thr: float | None = None, batch_size: int = 4, box_tol: float = 1e-2,
                 score_tol: float = 1e-4) -> dict:
    """Run torch and onnxruntime on ``images``: the maximum absolute difference of each raw
    output group, and whether the detections after NMS match (:func:`match_detections`)."""
    graph = RawHeadOutputs(detector).eval()
    diffs: dict[str, float] = {}
    counts = {"torch": 0, "onnx": 0}
    matched = True
    for inputs, samples in batches(runner.spec, detector, images, batch_size):
        with torch.inference_mode():
            ours = list(graph(inputs))
        theirs = runner(inputs)
        for name, x, y in zip(runner.names, ours, theirs, strict=True):
            group = name.rsplit("_", 1)[0]
            diffs[group] = max(diffs.get(group, 0.0), float((x - y).abs().max()))
        metas = [s.metainfo for s in samples]
        with torch.inference_mode():
            dets_t = detections(detector.bbox_head, ours, metas, score_thr)
            dets_o = detections(detector.bbox_head, theirs, metas, score_thr)
        for t, o in zip(dets_t, dets_o, strict=True):
            counts["torch"] += len(t)
            counts["onnx"] += len(o)
            matched &= match_detections(t, o, box_tol, score_tol)
    return {"images": len(images), "files": [Path(p).name for p in images],
            "max_abs_diff": diffs, "detections": counts,
            "detections_match": matched, "box_tol_px": box_tol, "score_tol": score_tol}


def format_report(report: dict) -> str:
    diffs = " ".join(f"{k}={v:.2e}" for k, v in report["max_abs_diff"].items())
    verdict = "match" if report["detections_match"] else "DIFFER"
    return (f"onnxruntime vs torch on {report['images']} images: max |diff| {diffs}; "
            f"detections after NMS {verdict} (torch {report['detections']['torch']}, onnx "
            f"{report['detections']['onnx']}; boxes within {report['box_tol_px']} px)")


def write_report(report: dict, path: str | Path) -> Path:
    Path(path).write_text(json.dumps(report, indent=2) + "\n")
    return Path(path)
