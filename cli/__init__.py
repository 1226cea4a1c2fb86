"""The ``bckd`` command: ``bckd <command> ...``; see ``bckd --help``.

It sits above the three layers (``bckd`` <- ``jobs`` <- ``service``) and imports only the one
module whose command runs, so ``bckd train`` never loads the service and ``bckd jobs`` never
loads mmdet. ``bckd --help`` lists every command from the table below without importing any.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from bckd.commandline import run_handler

__all__ = ["COMMANDS", "build_parser", "main"]

# command -> (module whose add_parser registers it, one-line summary for `bckd --help`)
COMMANDS = {
    "data": ("bckd.data.cli", "data set tools"),
    "train": ("jobs.train", "train or distill a detector on Ray Train, tracked in MLflow"),
    "sweep": ("jobs.sweep",
              "sweep loss weights (or any config keys) with Ray Tune, nested in MLflow"),
    "serve": ("service.stack.serve", "run Ray + MLflow + the REST API on this machine"),
    "jobs": ("service.client.jobs_cli", "submit and follow jobs through the REST API"),
    "export": ("bckd.export.cli", "write the (distilled) student as ONNX, checked against torch"),
    "predict": ("bckd.export.cli", "COCO detections and drawn images with a student or its ONNX"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``bckd`` parser, with ``command``'s arguments (the others as names only)."""
    parser = argparse.ArgumentParser(
        prog="bckd",
        description="BCKD distillation of dense object detectors on mmdet 3.x, Ray and MLflow.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = COMMANDS.get(command, (None,))[0]
    if chosen is not None:
        importlib.import_module(chosen).add_parser(sub)
    for name, (module, summary) in COMMANDS.items():
        if module != chosen:
            sub.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    return run_handler(args.handler, args)
