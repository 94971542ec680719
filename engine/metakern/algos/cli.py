"""``metakern train ALGO --env ENV [--flag value ...]``: one flag per field of the algorithm's
config dataclass (``--inner-lr 0.5``; booleans as ``--off-policy`` / ``--no-off-policy``), plus
``--out`` (the run folder; default ``runs/ALGO-ENV-sSEED``), ``--resume``, ``--quiet`` and
``--threads``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from . import ALGORITHMS, algorithm


def _add_config_flags(p: argparse.ArgumentParser, config_cls: type, envs: tuple[str, ...]) -> None:
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        if f.name == "env":
            p.add_argument(flag, choices=envs, default=default, help=f"environment (default {default})")
        elif isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=f"(default {default})")
        else:
            p.add_argument(flag, type=type(default), default=default, metavar=type(default).__name__.upper(),
                           help=f"(default {default!r})")  # fmt: skip


def add_parser(sub: Any) -> None:
    train = sub.add_parser("train", help=f"meta-train an algorithm ({', '.join(ALGORITHMS)})")
    algos = train.add_subparsers(dest="algo", required=True, metavar="ALGO")
    for name in ALGORITHMS:
        mod = algorithm(name)
        doc = mod.__doc__ or name
        p = algos.add_parser(name, help=doc.splitlines()[0], description=doc.split("\n\n")[0])
        _add_config_flags(p, mod.CONFIG, tuple(mod.ENVS))
        p.add_argument("--out", default=None, help="run folder (default runs/ALGO-ENV-sSEED)")
        p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument("--threads", type=int, default=0, metavar="INT",
                       help="torch intra-op threads (default: torch's; 1 is best on a busy machine)")  # fmt: skip
        p.set_defaults(func=run_cli)


def config_from_args(args: argparse.Namespace):
    mod = algorithm(args.algo)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(mod.CONFIG)}
    return mod, mod.CONFIG(**values)


def run_cli(args: argparse.Namespace) -> int:
    mod, config = config_from_args(args)
    out = Path(args.out or f"runs/{args.algo}-{config.env}-s{config.seed}")
    if args.threads < 0:
        print(f"metakern train {args.algo}: --threads must be >= 0, got {args.threads}", file=sys.stderr)
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        summary = mod.train(config, out, resume=args.resume, progress=not args.quiet)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"metakern train {args.algo}: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"run": str(out), **summary}, default=str))
    return 0
