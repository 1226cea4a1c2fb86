"""``bckd data ...``: data set tools (``bckd data synth``, ``bckd data check``)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]


def _synth(args: argparse.Namespace) -> int:
    from bckd.data.synth import SynthConfig, generate

    cfg = SynthConfig(
        out=args.out,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
        num_classes=args.num_classes,
        min_object_size=args.min_object_size,
        seed=args.seed,
        workers=args.workers,
    )
    summary = generate(cfg, progress=not args.quiet)
    print(f"wrote {summary['train']} train and {summary['val']} val images to {summary['out']}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from bckd.data.check import DataSetError, SplitLayout, check_dataset

    layout = {split: SplitLayout(getattr(args, f"{split}_ann") or
                                 f"annotations/instances_{split}.json",
                                 getattr(args, f"{split}_images") or f"{split}/")
              for split in ("train", "val")}
    try:
        summary = check_dataset(args.dir, layout, decode=not args.no_decode)
    except DataSetError as err:
        raise ValueError(str(err)) from None  # one message, exit code 2
    print(format_summary(summary))
    return 0


def format_summary(summary) -> str:
    """The summary as a person reads it: classes, then per split counts and box sizes."""
    lines = [f"{summary.root}: {len(summary.classes)} classes, ok"]
    for split, s in summary.splits.items():
        lines.append(f"{split}: {s.images} images, {s.boxes} boxes ({s.ann_file}, {s.image_dir})")
        width = max(len(n) for n in s.boxes_per_class)
        lines += [f"  {name:<{width}} {count:>8}" for name, count in s.boxes_per_class.items()]
        lines.append("  box side sqrt(w*h), px: " + ", ".join(
            f"{k} {v}" for k, v in s.sizes.items()))
        lines.append("  " + " ".join(f"[{k}] {v}" for k, v in s.size_bins.items()))
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``bckd data ...`` on the ``bckd`` parser's subcommands."""
    data = sub.add_parser("data", help="data set tools")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    synth = data_sub.add_parser(
        "synth",
        help="write a synthetic COCO-format detection data set",
        description="Write train/val images and COCO annotations of shapes told apart by shape "
        "and texture, with a long-tailed class frequency, occlusion and clutter.",
    )
    synth.add_argument("--out", type=Path, required=True, help="output directory")
    synth.add_argument("--num-train", type=int, default=2000, help="train images (default 2000)")
    synth.add_argument("--num-val", type=int, default=500, help="val images (default 500)")
    synth.add_argument("--image-size", type=int, default=256, help="square side in px (256)")
    synth.add_argument("--num-classes", type=int, default=8, help="categories (default 8)")
    synth.add_argument("--min-object-size", type=int, default=8,
                       help="smallest object side in px (default 8); the largest is half the "
                       "image")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(handler=_synth)
    check = data_sub.add_parser(
        "check",
        help="validate a COCO-format data set and print its summary",
        description="Check that every image exists, decodes and has its annotated size, that "
        "boxes are inside their images with positive size, and that categories are consistent "
        "(train and val alike); print images, boxes per class and a box-size histogram. "
        "Layout: DIR/annotations/instances_{train,val}.json and DIR/{train,val}/.")
    check.add_argument("dir", type=Path, help="the data set's root directory")
    for split in ("train", "val"):
        check.add_argument(f"--{split}-ann", default=None, metavar="FILE",
                           help=f"{split} annotations, relative to DIR "
                           f"(annotations/instances_{split}.json)")
        check.add_argument(f"--{split}-images", default=None, metavar="DIR",
                           help=f"{split} image folder, relative to DIR ({split}/)")
    check.add_argument("--no-decode", action="store_true",
                       help="do not open the images (annotations only)")
    check.set_defaults(handler=_check)
