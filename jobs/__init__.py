"""Entrypoints that the CLI and the REST service run: ``python -m jobs.<name>``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from bckd.commandline import Handler, run_handler

__all__ = ["run_module"]


def run_module(name: str, doc: str | None, arguments: Callable[[argparse.ArgumentParser], None],
               handler: Handler, argv: Sequence[str] | None = None) -> int:
    """``python -m jobs.<name> ARGS`` parses and runs as ``bckd <name> ARGS`` does, without
    going through the ``bckd`` dispatcher (which sits above this layer)."""
    parser = argparse.ArgumentParser(prog=f"bckd {name}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return run_handler(handler, args)
