"""The ``metakern`` command: ``info``, ``train``, ``analysis``, ``bench``, ``profile``."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metakern", description="metakern: kernels for meta-RL")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="what was built and which backend runs on each device")
    info.set_defaults(func=lambda args: _info())
    from .algos.cli import add_parser as add_train_parser

    add_train_parser(sub)
    from .analysis import add_parser as add_analysis_parser

    add_analysis_parser(sub)
    from .bench.cli import add_parsers

    add_parsers(sub)
    return parser


def _info() -> int:
    from .info import print_info

    return print_info()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
