"""LOLA-DiCE on the iterated prisoner's dilemma: naive learners vs LOLA-DiCE vs LOLA with off-policy DiCE.

Runs ``metakern.algos.lola.train`` for each variant and seed (Liu et al. 2022's IPD settings unless
overridden), then writes into ``OUT``:

    runs/<variant>/seed<k>/   the run folders (config, metrics.csv, checkpoint, curves.png)
    results.json              every run's summary
    table.md                  per variant: mutual cooperation count, final exact per-step reward, P(cooperate),
                              mean cosine of the estimated meta-gradient with the exact one
    paired.md                 (``--paired``) on-policy vs off-policy meta-gradient cosine at the *same* parameters
    lola_ipd.png              exact per-step reward and meta-gradient cosine against the iteration (mean over seeds)

The paired comparison removes the confound that each variant visits different parameters: along each
off-policy run, at every evaluated iteration the on-policy estimator is also computed at the same parameters
from ``batch_size`` fresh trajectories per look-ahead (the same per-update batch as the off-policy one), and
both are compared with the exact meta-gradient.

    python bench/experiments/lola_ipd.py OUT [--seeds 10] [--iterations 500] [--paired]
    python bench/experiments/lola_ipd.py OUT --report-only     # redo the tables and plot from OUT's runs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from metakern.algos import lola

VARIANTS = {
    "naive": dict(lookaheads=0),
    "lola": dict(lookaheads=1),
    "lola_off_policy": dict(lookaheads=1, off_policy=True),
}


def _mean_std(xs: list[float]) -> str:
    xs = [x for x in xs if math.isfinite(x)]
    if not xs:
        return "n/a"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.fmean(xs):.3f} ± {sd:.3f}"


def _read_metrics(run_dir: Path) -> list[dict[str, float]]:
    import csv

    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _cos_rows(rows, lo=0, hi=None):
    """Both agents' cosines at the evaluated iterations in [lo, hi)."""
    out = []
    for r in rows:
        if lo <= r["iteration"] < (hi if hi is not None else math.inf):
            out += [r[k] for k in ("cos1", "cos2") if math.isfinite(r[k])]
    return out


def paired_cosines(cfg: lola.LolaConfig, run_dir: Path, every: int) -> list[tuple[int, float, float]]:
    """Replay the off-policy run ``cfg`` (bit-for-bit, as ``train`` does) and at every ``every``-th iteration
    also estimate the on-policy meta-gradient at the same parameters: [(iteration, cos_off, cos_on)] with
    the cosines averaged over both agents."""
    off = lola._Learner(cfg)
    on_cfg = dataclasses.replace(cfg, off_policy=False)
    on = lola._Learner(on_cfg)
    off.fill_buffer(0)
    out = []
    for it in range(cfg.iterations):
        if it % every == 0:
            with torch.no_grad():
                for a, b in zip(on.theta, off.theta, strict=True):
                    a.copy_(b)
                for a, b in zip(on.values, off.values, strict=True):
                    a.copy_(b)
            th = [t.detach() for t in off.theta]
            e = lola.exact_lola_gradients(
                th[0], th[1], lr_in=cfg.lr_in, lookaheads=cfg.lookaheads, gamma=cfg.gamma, horizon=cfg.rollout_length
            )
            # a separate random stream for the on-policy estimate (iteration index offset by 10**6)
            g_on = on.meta_gradients(10**6 + it)[:2]
            cos_on = 0.5 * sum(lola.cosine(g, x) for g, x in zip(g_on, e, strict=True))
            row = off.update(it, want_exact=True)
            out.append((it, 0.5 * (row["cos1"] + row["cos2"]), cos_on))
        else:
            off.update(it, want_exact=False)
    # the replay reproduces the recorded run: check it against its metrics
    final = _read_metrics(run_dir)[-1]
    ev = lola.evaluate(cfg, off.state_dict(cfg.iterations))
    if abs(ev["value1"] - final["value1"]) > 1e-9:
        raise RuntimeError(f"paired replay of {run_dir} diverged from the recorded run")
    return out


def plot(out: Path, curves: dict, paired: dict | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 3 if paired else 2
    fig, axes = plt.subplots(1, n, figsize=(4.8 * n, 3.6))
    colors = {"naive": "tab:gray", "lola": "tab:blue", "lola_off_policy": "tab:orange"}
    for name, runs in curves.items():
        its = [r["iteration"] for r in runs[0]]
        vals = torch.tensor([[0.5 * (r["value1"] + r["value2"]) for r in rows] for rows in runs])
        m = vals.mean(0)
        lo, hi = vals.quantile(0.25, dim=0), vals.quantile(0.75, dim=0)
        axes[0].plot(its, m, color=colors[name], label=name)
        axes[0].fill_between(its, lo, hi, color=colors[name], alpha=0.2)
        cos = torch.tensor([[0.5 * (r["cos1"] + r["cos2"]) for r in rows] for rows in runs])
        mask = torch.isfinite(cos[0])
        c = cos[:, mask].mean(0)
        w = 10
        smooth = torch.nn.functional.avg_pool1d(c[None, None], w, 1)[0, 0] if len(c) >= w else c
        x = torch.tensor(its)[mask][w - 1 :] if len(c) >= w else torch.tensor(its)[mask]
        axes[1].plot(x, smooth, color=colors[name], label=name)
    axes[0].set(xlabel="update", ylabel="exact per-step reward (mean of agents)", title="IPD: (1-γ)·V, IQR over seeds")
    axes[0].axhline(-1, ls=":", c="k", lw=0.8)
    axes[0].axhline(-2, ls=":", c="k", lw=0.8)
    axes[1].set(
        xlabel="update", ylabel="cosine(estimate, exact)", title="meta-gradient cosine (mean of seeds, 10-update avg)"
    )
    if paired:
        names = list(paired)
        offs = [c for runs in paired.values() for _, c, _ in runs]
        ons = [c for runs in paired.values() for _, _, c in runs]
        axes[2].scatter(ons, offs, s=6, alpha=0.4)
        axes[2].plot([-1, 1], [-1, 1], "k:", lw=0.8)
        axes[2].set(
            xlabel="on-policy DiCE cosine", ylabel="off-policy DiCE cosine",
            title=f"same parameters ({len(names)} runs, {len(ons)} points)",
        )  # fmt: skip
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    path = out / "lola_ipd.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def report(out: Path, meta: dict, results: dict, curves: dict, paired: dict | None) -> None:
    """Write table.md, paired.md (when ``paired``) and lola_ipd.png from the runs' summaries and metrics."""
    n_it, early = meta["iterations"], min(100, meta["iterations"])
    lines = [
        f"LOLA-DiCE on the IPD: {meta['seeds']} seeds per variant, {n_it} updates, batch {meta['batch_size']} "
        f"trajectories of 100 steps per look-ahead and per outer step, γ = 0.96, lr_in 0.3, lr_out 0.1 (Adam), "
        f"lr_v 0.1, Mao baseline; off-policy buffer 1024 trajectories. Per-step rewards are (1-γ)·V from the exact "
        f"value (-1 = mutual cooperation, -2 = mutual defection), averaged over the two agents. Mutual cooperation: "
        f"both agents cooperate with probability > 0.5 at the start and after mutual cooperation (CC); mutual "
        f"defection: both agents' per-step reward < -1.9. Cosines: the estimated meta-gradient vs the exact one "
        f"(`ipd_exact_value`, 100-step value) at the same parameters, both agents, every {meta['eval_every']} "
        f"update(s).",
        "",
        "| variant | mutual cooperation | both cooperate after CC | mutual defection | final per-step reward "
        f"| final P(coop) start | final P(coop) after CC | cosine, updates 0–{early - 1} | cosine, all updates |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        rows = curves[name]
        coop = sum(r["mutual_cooperation"] for r in runs)
        after_cc = sum(r["p_coop1"][4] > 0.5 and r["p_coop2"][4] > 0.5 for r in runs)
        defect = sum(r["value1"] < -1.9 and r["value2"] < -1.9 for r in runs)
        reward = [0.5 * (r["value1"] + r["value2"]) for r in runs]
        ps0 = [0.5 * (r["p_coop1"][0] + r["p_coop2"][0]) for r in runs]
        ps4 = [0.5 * (r["p_coop1"][4] + r["p_coop2"][4]) for r in runs]
        c_early = [statistics.fmean(_cos_rows(rw, 0, early)) for rw in rows]
        c_all = [statistics.fmean(_cos_rows(rw)) for rw in rows]
        k = len(runs)
        lines.append(
            f"| {name} | {coop}/{k} | {after_cc}/{k} | {defect}/{k} | {_mean_std(reward)} | {_mean_std(ps0)} "
            f"| {_mean_std(ps4)} | {_mean_std(c_early)} | {_mean_std(c_all)} |"
        )
    lines.append("")
    lines.append("Mean ± standard deviation over seeds (each seed's cosine is its mean over the evaluated updates).")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    if paired:
        offs = [statistics.fmean(c for _, c, _ in v) for v in paired.values()]
        ons = [statistics.fmean(c for _, _, c in v) for v in paired.values()]
        wins = sum(o > n for o, n in zip(offs, ons, strict=True))
        pts = [(o, n) for v in paired.values() for _, o, n in v]
        diff = [o - n for o, n in pts]
        pl = [
            f"Same parameters: along each off-policy LOLA run, every {meta['paired_every']} updates, the on-policy "
            f"DiCE meta-gradient ({meta['batch_size']} fresh trajectories per look-ahead and outer step) and the "
            f"off-policy one (the same {meta['batch_size']} fresh trajectories per look-ahead added to the "
            "1024-trajectory buffer) vs the exact one. Cosine averaged over both agents.",
            "",
            "| estimator | mean cosine (mean ± sd over seeds) | seeds where off-policy is higher | points where "
            "off-policy is higher | mean paired difference (off - on) ± s.e. |",
            "|---|---|---|---|---|",
            f"| on-policy DiCE | {_mean_std(ons)} | | | |",
            f"| off-policy DiCE | {_mean_std(offs)} | {wins}/{len(offs)} | {sum(d > 0 for d in diff)}/{len(pts)} "
            f"| {statistics.fmean(diff):.3f} ± {statistics.stdev(diff) / math.sqrt(len(diff)):.3f} |",
        ]
        (out / "paired.md").write_text("\n".join(pl) + "\n")
    plot(out, curves, paired)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--paired", action="store_true", help="also the same-parameter on/off-policy cosine comparison")
    p.add_argument("--paired-every", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report-only", action="store_true", help="rewrite the tables and plot from OUT's finished runs")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        saved = json.loads((args.out / "results.json").read_text())
        meta, results, paired = saved["args"], saved["results"], saved["paired"]
        curves = {
            name: [_read_metrics(args.out / "runs" / name / f"seed{s}") for s in range(len(runs))]
            for name, runs in results.items()
        }
        report(args.out, meta, results, curves, paired)
        print((args.out / "table.md").read_text())
        if paired:
            print((args.out / "paired.md").read_text())
        return 0
    results, curves = {}, {}
    for name in args.variants.split(","):
        results[name], curves[name] = [], []
        for seed in range(args.seeds):
            cfg = lola.LolaConfig(
                seed=seed, iterations=args.iterations, batch_size=args.batch_size, eval_every=args.eval_every,
                checkpoint_every=0, **VARIANTS[name],
            )  # fmt: skip
            run_dir = args.out / "runs" / name / f"seed{seed}"
            t0 = time.perf_counter()
            s = lola.train(cfg, run_dir, progress=False)
            s["seconds"] = time.perf_counter() - t0
            results[name].append(s)
            curves[name].append(_read_metrics(run_dir))
            print(f"{name} seed {seed}: v=({s['value1']:.3f}, {s['value2']:.3f}) mutual={s['mutual_cooperation']} "
                  f"cos={0.5 * (s['cos1_mean'] + s['cos2_mean']):.3f} {s['seconds']:.0f}s", flush=True)  # fmt: skip
    paired = None
    if args.paired and "lola_off_policy" in results:
        paired = {}
        for seed in range(args.seeds):
            cfg = lola.LolaConfig(
                seed=seed, iterations=args.iterations, batch_size=args.batch_size, eval_every=args.eval_every,
                checkpoint_every=0, **VARIANTS["lola_off_policy"],
            )  # fmt: skip
            paired[seed] = paired_cosines(cfg, args.out / "runs" / "lola_off_policy" / f"seed{seed}", args.paired_every)
            print(f"paired seed {seed}: off {statistics.fmean(c for _, c, _ in paired[seed]):.3f} "
                  f"on {statistics.fmean(c for _, _, c in paired[seed]):.3f}", flush=True)  # fmt: skip
    meta = vars(args) | {"out": str(args.out)}
    (args.out / "results.json").write_text(
        json.dumps({"args": meta, "results": results, "paired": paired}, indent=1) + "\n"
    )
    report(args.out, meta, results, curves, paired)
    print((args.out / "table.md").read_text())
    if paired:
        print((args.out / "paired.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
