"""The ``lrfree`` command line: ``lrfree bench`` (see ``lrfree bench --help``).

This module only dispatches: each command adds its parser and runs in its own package
(``lrfree.bench.cli`` for ``bench``).
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``lrfree`` parser with its commands."""
    from . import __version__
    from .bench import cli as bench_cli

    parser = argparse.ArgumentParser(
        prog="lrfree", description="lrfree: optimizers that choose their own learning rate."
    )
    parser.add_argument("--version", action="version", version=f"lrfree {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    bench_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the command; its exit status."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
