"""``bckd export`` and ``bckd predict``: the student as ONNX, and detections for images.

  bckd export RUN_OR_CKPT --format onnx [--out student.onnx]
  bckd predict RUN_OR_CKPT IMAGES... --out DIR [--score-thr 0.3] [--onnx FILE]

RUN_OR_CKPT: an MLflow run id (its checkpoints/final.pth), a runs:/<id>/<path> URI, or a
checkpoint file; predict also takes a .onnx file written by `bckd export`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from bckd.commandline import add_command

__all__ = ["add_parser"]

CHECK_IMAGES = 4  # images of the parity check when none are given
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ONNX_ARTIFACT_DIR = "export"  # the run's artifact export/student.onnx (and check.json)
DRAW_THR = 0.3  # the score from which `bckd predict` draws a box: few enough to read


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="RUN_OR_CKPT",
                        help="MLflow run id, runs:/<id>/<path> URI, or checkpoint file")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking store (default: MLFLOW_TRACKING_URI, else "
                        "work_dirs/mlflow.db)")
    parser.add_argument("--config", default=None,
                        help="config file (default: the run's config.json, or config.json beside "
                        "the file, else the checkpoint's meta['cfg'] read as data)")


def _val_images(cfg) -> list[Path]:
    """The first images of the config's val set, when it is on this machine (any format
    OpenCV reads, in sub-folders too: a COCO ``file_name`` may have them)."""
    dataset = cfg.get("val_dataloader", {}).get("dataset", {})
    folder = Path(dataset.get("data_root", "")) / (dataset.get("data_prefix") or {}).get("img", "")
    found = (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return sorted(found)[:CHECK_IMAGES] if folder.is_dir() else []


def _synth_images(directory: Path) -> list[Path]:
    from bckd.data.synth import SynthConfig, generate

    generate(SynthConfig(out=directory, num_train=1, num_val=CHECK_IMAGES, image_size=128,
                         workers=1), progress=False)
    return sorted((directory / "val").glob("*.jpg"))


def _quiet(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``handler`` without the libraries' warnings (torch's, mmengine's, onnx's deprecations):
    a person at the terminal reads what the command did, and the warnings say nothing of that."""
    def run(args: argparse.Namespace) -> int:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return handler(args)
    return run


def _export(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from bckd.export.inference import InferenceConfig, batches
    from bckd.export.onnx import OnnxRaw, check_parity, export_onnx, format_report, write_report
    from bckd.export.source import build_student, resolve

    with tempfile.TemporaryDirectory(prefix="bckd-export-") as tmp:
        source = resolve(args.source, args.tracking_uri, args.config, workdir=tmp)
        detector = build_student(source)
        if source.dropped_keys:
            print(f"dropped {len(source.dropped_keys)} keys that are not the student's "
                  f"(e.g. {source.dropped_keys[0]})")
        spec = InferenceConfig.from_config(source.cfg)
        images = args.check_images or _val_images(source.cfg) or _synth_images(Path(tmp) / "s")
        example, _ = next(batches(spec, detector, images[:1], 1))
        path = export_onnx(detector, spec, args.out, example)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
        report = check_parity(detector, OnnxRaw(path), images, args.score_thr)
        print(format_report(report))
        if source.run_id is not None:
            named = Path(tmp) / "student.onnx"
            shutil.copyfile(path, named)
            client = MlflowClient(source.tracking_uri)
            client.log_artifact(source.run_id, str(named), ONNX_ARTIFACT_DIR)
            client.log_artifact(source.run_id, str(write_report(report, Path(tmp) / "check.json")),
                                ONNX_ARTIFACT_DIR)
            print(f"logged {ONNX_ARTIFACT_DIR}/student.onnx to MLflow run {source.run_id}")
    return 0 if report["detections_match"] else 1


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    _source_arguments(parser)
    parser.add_argument("--format", choices=["onnx"], default="onnx", help="only onnx")
    parser.add_argument("--out", type=Path, default=Path("student.onnx"),
                        help="output file (default student.onnx)")
    parser.add_argument("--check-images", nargs="+", default=None, metavar="IMAGE",
                        help=f"images of the torch/onnxruntime check (default: {CHECK_IMAGES} "
                        "of the config's val set, else synthetic ones)")
    parser.add_argument("--score-thr", type=float, default=None,
                        help="score threshold of the check (default: the head's test_cfg)")


def _predict(args: argparse.Namespace) -> int:
    from bckd.export.inference import InferenceConfig, build_detector
    from bckd.export.onnx import OnnxRaw
    from bckd.export.predict import predict

    onnx_file = args.onnx or (args.source if args.source.endswith(".onnx") else None)
    with tempfile.TemporaryDirectory(prefix="bckd-predict-") as tmp:
        if onnx_file is not None and onnx_file == args.source:
            backend = OnnxRaw(onnx_file)
            spec, detector = backend.spec, build_detector(backend.spec)
        else:
            from bckd.export.source import build_student, resolve

            source = resolve(args.source, args.tracking_uri, args.config, workdir=tmp)
            detector, spec = build_student(source), InferenceConfig.from_config(source.cfg)
            backend = OnnxRaw(onnx_file) if onnx_file else None
            if backend is not None and backend.spec.model != spec.model:
                raise ValueError(f"--onnx {onnx_file!r} holds another model than RUN_OR_CKPT "
                                 f"{args.source!r} (their stored model configs differ)")
        result = predict(spec, detector, backend, args.images, args.out, args.score_thr,
                         args.batch_size, draw=not args.no_draw, annotations=args.annotations,
                         draw_thr=args.draw_thr)
    kind = "onnxruntime" if backend is not None else "torch"
    print(f"wrote {len(result.results)} detections of {result.images} images to "
          f"{result.json_path}")
    print(json.dumps({"backend": kind, "images": result.images,
                      "images_per_s": round(result.images_per_s, 2)}))
    return 0


def _predict_arguments(parser: argparse.ArgumentParser) -> None:
    _source_arguments(parser)
    parser.add_argument("images", nargs="+", metavar="IMAGES", help="image files")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--score-thr", type=float, default=None,
                        help="keep detections above this score (default: the head's test_cfg)")
    parser.add_argument("--onnx", default=None, metavar="FILE",
                        help="run this ONNX file (from `bckd export`) with onnxruntime")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch (8)")
    parser.add_argument("--annotations", default=None,
                        help="COCO file whose image ids the results use (by file name)")
    parser.add_argument("--no-draw", action="store_true", help="no images with boxes")
    parser.add_argument("--draw-thr", type=float, default=DRAW_THR,
                        help=f"draw the boxes scoring at least this ({DRAW_THR}; detections.json "
                             "keeps every box above --score-thr)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``bckd export`` and ``bckd predict`` on the ``bckd`` parser's subcommands."""
    add_command(sub, "export", "write the (distilled) student as ONNX, checked against torch",
                __doc__, _export_arguments, _quiet(_export))
    add_command(sub, "predict", "COCO detections and drawn images with a student or its ONNX",
                __doc__, _predict_arguments, _quiet(_predict))
