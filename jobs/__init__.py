"""Entrypoints that the CLI and the REST service run: ``python -m jobs.<name>``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["add_command", "run_command"]


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    summary: str,
    doc: str | None,
    arguments: Callable[[argparse.ArgumentParser], None],
    handler: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """Register ``bckd <name>``: its one-line ``summary``, the module ``doc`` as description."""
    parser = sub.add_parser(name, help=summary, description=doc,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments(parser)
    parser.set_defaults(handler=handler)
    return parser


def run_command(name: str, argv: Sequence[str] | None = None) -> int:
    """``python -m jobs.<name> ARGS`` is ``bckd <name> ARGS`` (same parsing and error output)."""
    from bckd.cli import main

    return main([name, *(sys.argv[1:] if argv is None else argv)])
