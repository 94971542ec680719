"""Issue 8's learning curves: RL2 vs E-RL2, MetODS vs RL2, and the MetODS ablation on Harlow.

    python bench/experiments/recurrent_agents.py OUT EXPERIMENT [--seeds 3] [--iterations N] [--eval-every K]
        [--jobs 2]

EXPERIMENT is one of ``EXPERIMENTS`` (below): a list of (label, algorithm, config overrides); ``harlow``
holds MetODS vs RL2 and the MetODS ablation.
Every (label, seed) is trained with ``metakern.algos.<algo>.train`` into OUT/EXPERIMENT/<label>-s<seed>/
(``--jobs`` processes at a time, one torch thread each; a finished run is kept, so the command
resumes), then OUT/EXPERIMENT/table.md (each evaluation metric at the first and the last
evaluation, its best and its mean over training (the area under the curve: how fast it was learnt),
mean +- std over seeds) and OUT/EXPERIMENT/curves.png
(mean +- std over seeds against training env-steps) are written.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

EXPERIMENTS: dict[str, list[tuple[str, str, dict]]] = {
    "krazyworld": [("rl2", "rl2", {"env": "krazyworld"}), ("erl2", "erl2", {"env": "krazyworld"})],
    "krazyworld-permuted": [  # tile ids permuted per task too (the earlier runs' setting)
        ("rl2", "rl2", {"env": "krazyworld", "krazy_permute_ids": True}),
        ("erl2", "erl2", {"env": "krazyworld", "krazy_permute_ids": True}),
    ],
    "maze": [("rl2", "rl2", {"env": "maze"}), ("erl2", "erl2", {"env": "maze"})],
    "metods-maze": [
        ("metods", "metods", {"env": "maze"}),
        ("rl2", "rl2", {"env": "maze", "maze_variant": "metods"}),
    ],
    "harlow": [  # MetODS vs RL2, and the MetODS ablation (S = 1 vs 2, learned vs fixed alpha)
        ("metods-S2", "metods", {"env": "harlow", "hidden": 20}),
        ("rl2", "rl2", {"env": "harlow"}),
        ("metods-S1", "metods", {"env": "harlow", "hidden": 20, "inner_steps": 1}),
        ("metods-S2-fixed-alpha", "metods", {"env": "harlow", "hidden": 20, "learn_alpha": False}),
        ("metods-S1-fixed-alpha", "metods", {"env": "harlow", "hidden": 20, "inner_steps": 1, "learn_alpha": False}),
    ],
}


def _train(job: tuple[str, dict, str]) -> str:
    import importlib

    import torch

    algo, overrides, path = job
    torch.set_num_threads(1)
    mod = importlib.import_module(f"metakern.algos.{algo}")
    if not (Path(path) / "checkpoint.pt").exists() or _iterations(Path(path)) < overrides["iterations"]:
        resume = (Path(path) / "checkpoint.pt").exists()
        mod.train(mod.CONFIG(**overrides), path, resume=resume, progress=False)
    return path


def _iterations(run: Path) -> int:
    import torch

    return int(torch.load(run / "checkpoint.pt", weights_only=False)["iteration"])


def _evals(run: Path) -> list[dict[str, float]]:
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    cols = [k for k in rows[0] if k.startswith("eval_")]
    return [{k: float(v) for k, v in r.items()} for r in rows if r[cols[0]] not in ("nan", "")]


def _fmt(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.3f}"


def report(out: Path, runs: dict[str, list[Path]], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    some = _evals(next(iter(runs.values()))[0])
    metrics = [k for k in some[0] if k.startswith("eval_")]
    lower_better = {"eval_first_reward_step", "eval_large_first_reward_step"}
    lines = [
        "| agent | metric | seeds | first eval | last eval | best over training | mean over training |",
        "|---|---|---|---|---|---|---|",
    ]
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    axes = [[ax for row in grid for ax in row][: len(metrics)]]
    for i, (label, paths) in enumerate(runs.items()):
        evals = [_evals(p) for p in paths]
        n = min(len(e) for e in evals)
        for ax, key in zip(axes[0], metrics, strict=True):
            best = [(min if key in lower_better else max)(r[key] for r in e) for e in evals]
            area = [statistics.mean(r[key] for r in e[:n]) for e in evals]
            lines.append(
                f"| {label} | {key[5:]} | {len(paths)} | {_fmt([e[0][key] for e in evals])} | "
                f"{_fmt([e[n - 1][key] for e in evals])} | {_fmt(best)} | {_fmt(area)} |"
            )
            x = [evals[0][j]["env_steps"] / 1e6 for j in range(n)]
            ys = [statistics.mean(e[j][key] for e in evals) for j in range(n)]
            sd = [statistics.stdev(e[j][key] for e in evals) if len(evals) > 1 else 0.0 for j in range(n)]
            ax.plot(x, ys, label=label, color=f"C{i}")
            ax.fill_between(x, [a - b for a, b in zip(ys, sd, strict=True)],
                            [a + b for a, b in zip(ys, sd, strict=True)], color=f"C{i}", alpha=0.12)  # fmt: skip
            ax.set_title(key[5:], fontsize=9)
            ax.set_xlabel("training env-steps (millions)")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    return table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("experiment", choices=sorted(EXPERIMENTS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--report-only", action="store_true", help="only rewrite table.md and curves.png")
    args = ap.parse_args()
    out = args.out / args.experiment
    out.mkdir(parents=True, exist_ok=True)
    jobs, runs = [], {}
    for label, algo, overrides in EXPERIMENTS[args.experiment]:
        for seed in range(args.seeds):
            path = out / f"{label}-s{seed}"
            cfg = {**overrides, "seed": seed, "iterations": args.iterations, "eval_every": args.eval_every,
                   "checkpoint_every": 10}  # fmt: skip
            jobs.append((algo, cfg, str(path)))
            runs.setdefault(label, []).append(path)
    with ProcessPoolExecutor(1 if args.report_only else args.jobs) as pool:
        jobs = [] if args.report_only else jobs
        for done in pool.map(_train, jobs):
            print("done", done, flush=True)
    print(report(out, runs, f"{args.experiment}: held-out tasks, mean ± std over {args.seeds} seeds"))


if __name__ == "__main__":
    main()
