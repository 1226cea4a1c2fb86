"""What every ``bckd`` command shares: one subcommand's registration and its error handling."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

__all__ = ["Handler", "add_command", "run_handler"]

Handler = Callable[[argparse.Namespace], int]


def add_command(sub: argparse._SubParsersAction, name: str, summary: str, doc: str | None,
                arguments: Callable[[argparse.ArgumentParser], None],
                handler: Handler) -> argparse.ArgumentParser:
    """Register ``bckd <name>``: its one-line ``summary``, the module ``doc`` as description."""
    parser = sub.add_parser(name, help=summary, description=doc,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments(parser)
    parser.set_defaults(handler=handler)
    return parser


def run_handler(handler: Handler, args: argparse.Namespace) -> int:
    """Run a command; bad input is one line naming the problem and exit code 2, no traceback."""
    try:
        return handler(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"bckd: error: {err}", file=sys.stderr)
        return 2
