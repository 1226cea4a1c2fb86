"""``bckd data ...``: data set tools (``bckd data synth``)."""

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
        seed=args.seed,
        workers=args.workers,
    )
    summary = generate(cfg, progress=not args.quiet)
    print(f"wrote {summary['train']} train and {summary['val']} val images to {summary['out']}")
    return 0


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
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(handler=_synth)
