"""MAML vs E-MAML on Krazy World and mazes over several seeds (issue 7's learning curves).

    python bench/experiments/maml_gridworlds.py OUT [--seeds 3] [--iterations 200] [--envs krazyworld maze]
        [--inner-lr X] [--outer-lr Y] [--policy linear|mlp] [--hidden-size H] [--krazy-permute-ids] [--jobs 2]

Runs ``metakern train maml`` and ``metakern train emaml`` (defaults otherwise) for every env and
seed into OUT/<algo>-<env>-s<seed>/ (``--jobs`` runs at a time, one thread each; finished runs are
kept), then writes OUT/table.md (E-MAML protocol on the held-out test tasks: mean return of the 3
exploratory pre-update episodes and of the 2 adapted episodes, at the first and the last
evaluation and averaged over the last 5, mean +- std over seeds; and in how many evaluations the
adapted return beat the pre-update one) and OUT/curves.png.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from metakern.algos import emaml, maml

ALGOS = {"maml": maml, "emaml": emaml}


def _train(name: str, cfg, path: Path) -> None:
    torch.set_num_threads(1)
    ALGOS[name].train(cfg, path, progress=False)
    print(f"done {path}", flush=True)


def _evals(run: Path) -> list[dict[str, float]]:
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    return [{k: float(v) for k, v in r.items()} for r in rows if r["eval_post_return"] not in ("nan", "")]


def _fmt(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--envs", nargs="+", default=["krazyworld", "maze"])
    ap.add_argument("--inner-lr", type=float, default=None, help="default: the config's")
    ap.add_argument("--outer-lr", type=float, default=None, help="default: the config's")
    ap.add_argument("--policy", default=None, choices=("linear", "mlp"), help="default: the config's")
    ap.add_argument("--hidden-size", type=int, default=None, help="default: the config's")
    ap.add_argument("--krazy-permute-ids", action="store_true", help="permute Krazy World's tile ids per task")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (one thread each)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    runs: dict[tuple[str, str], list[Path]] = {}
    todo = []
    for env in args.envs:
        for name, mod in ALGOS.items():
            for seed in range(args.seeds):
                path = args.out / f"{name}-{env}-s{seed}"
                given = (("inner_lr", args.inner_lr), ("outer_lr", args.outer_lr), ("policy", args.policy),
                         ("hidden_size", args.hidden_size))  # fmt: skip
                opts = {k: v for k, v in given if v is not None}
                cfg = mod.CONFIG(env=env, seed=seed, iterations=args.iterations, eval_every=args.eval_every,
                                 checkpoint_every=args.iterations, krazy_permute_ids=args.krazy_permute_ids,
                                 **opts)  # fmt: skip
                if not (path / "checkpoint.pt").exists():
                    todo.append((name, cfg, path))
                runs.setdefault((name, env), []).append(path)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for f in [pool.submit(_train, *job) for job in todo]:
            f.result()
    lines = [
        "| env | algo | seeds | eval pre (first) | eval adapted (first) | eval pre (last) | eval adapted (last) | "
        "adapted - pre (last) | pre (last 5) | adapted (last 5) | adapted > pre |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.envs), figsize=(5 * len(args.envs), 3.6), squeeze=False)
    for (name, env), paths in runs.items():
        evals = [_evals(p) for p in paths]
        first = [e[0] for e in evals]
        last = [e[-1] for e in evals]
        gap = [r["eval_post_return"] - r["eval_pre_return"] for r in last]
        tail = lambda key, evals=evals: [statistics.mean(r[key] for r in e[-5:]) for e in evals]  # noqa: E731
        wins = sum(r["eval_post_return"] > r["eval_pre_return"] for e in evals for r in e)
        lines.append(
            f"| {env} | {name} | {len(paths)} | {_fmt([r['eval_pre_return'] for r in first])} | "
            f"{_fmt([r['eval_post_return'] for r in first])} | {_fmt([r['eval_pre_return'] for r in last])} | "
            f"{_fmt([r['eval_post_return'] for r in last])} | {_fmt(gap)} | {_fmt(tail('eval_pre_return'))} | "
            f"{_fmt(tail('eval_post_return'))} | {wins} of {sum(len(e) for e in evals)} |"
        )
        ax = axes[0][args.envs.index(env)]
        n = min(len(e) for e in evals)
        x = [evals[0][i]["env_steps"] / 1e6 for i in range(n)]
        for key, style in (("eval_post_return", "-"), ("eval_pre_return", ":")):
            ys = [statistics.mean(e[i][key] for e in evals) for i in range(n)]
            sd = [statistics.stdev(e[i][key] for e in evals) if len(evals) > 1 else 0.0 for i in range(n)]
            label = f"{name} {'adapted' if key == 'eval_post_return' else 'pre-update'}"
            line = ax.plot(x, ys, style, label=label, color="C0" if name == "maml" else "C1")[0]
            lo = [a - b for a, b in zip(ys, sd, strict=True)]
            hi = [a + b for a, b in zip(ys, sd, strict=True)]
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.1)
        ax.set_title(f"{env}: held-out tasks (E-MAML protocol)", fontsize=9)
        ax.set_xlabel("training env-steps (millions)")
        ax.set_ylabel("mean episode return")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out / "curves.png", dpi=110)
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
