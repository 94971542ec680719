"""Randomized soak: the compiled backends against their references on random configurations, for a
time budget. The tests check fixed cases; this draws new shapes, options and data every case, so a
longer run reaches corners they miss (on 2026-11-21 it found the doubly-robust op and its reference
clamping far off-policy weights differently).

    python tests/soak.py [--minutes 5] [--seed 0] [--only estimators,envs] [--replay estimators:123]

Families run in turn until the time is up. A failing case prints its family and case number;
``--replay FAMILY:N`` (with the same ``--seed``) runs that case alone. Exit status 1 if any case
failed. Triton runs under its CPU interpreter (slow): it gets small sizes and a share of the cases.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton kernel is imported
sys.path.insert(0, str(Path(__file__).resolve().parent))

import metakern
import torch
from metakern import _backend

TOL = 1e-9  # max |got - want| / max(1, max |want|), per output


def _backends(*names: str) -> list[str]:
    return [b for b in names if _backend.unavailable_reason(b, "cpu") is None]


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max(1, max |want|)."""
    got, want = got.detach(), want.detach()
    if not want.numel():
        return 0.0
    return float((got - want).abs().max()) / max(1.0, float(want.abs().max()))


def _check(pairs, tols: dict[str, float] | None = None) -> None:
    for what, got, want in pairs:
        if not torch.isfinite(want).all():
            continue
        tol = (tols or {}).get(what, TOL)
        err = _relative_error(got, want)
        if not err < tol:
            raise AssertionError(f"{what}: relative error {err:.2e} (tolerance {tol:.1e})")


def case_envs(rng: random.Random) -> str:
    """A random Krazy World, maze, GridNavi, tabular MDP, IPD or Harlow configuration: the C++ step
    against the numpy reference in lock-step (every output, then every state array)."""
    from env_testing import run_lockstep
    from metakern.envs import GridNavi, Harlow, KrazyWorld, Maze, TabularMDP
    from metakern.envs.ipd import IPD

    common = dict(autoreset_mode=rng.choice(["next_step", "same_step", "disabled"]), seed=rng.randint(0, 10**6))
    common["max_steps"] = rng.choice([None, 3, 17, 60])
    fam = rng.choice(["krazy", "krazy", "maze", "gridnavi", "tabular", "ipd", "harlow"])
    if fam == "krazy":
        quirks = rng.random() < 0.4
        walls = not quirks and rng.random() < 0.3
        make, kw = KrazyWorld, dict(
            size=rng.randint(5 if walls else 3, 12), legacy_quirks=quirks, walls=walls,
            obs_view=rng.choice(["local", "full", "patch"]), obs_mode=rng.choice(["ids", "onehot", "image"]),
            death_square_percentage=rng.choice([0.0, 0.05, 0.1]), ice_sq_perc=rng.choice([0.0, 0.1, 0.3]),
            energy_sq_perc=rng.choice([0.0, 0.05, 0.15]), num_goals=rng.randint(1, 4),
            num_transporters=rng.randint(0, 3), sparse_rewards=rng.random() < 0.5,
            dynamics=rng.choice(["simple", "moderate", "hard"]), permute_colors=rng.random() < 0.5,
            num_steps_before_energy_needed=rng.choice([None, 5, 20]), energy_replenish=rng.randint(1, 10),
            split=rng.choice(["train", "test"]), num_tasks=rng.randint(1, 20),
            episodes_per_trial=rng.randint(1, 4), resample_tasks=rng.random() < 0.7,
        )  # fmt: skip
    elif fam == "maze":
        make, kw = Maze, dict(
            size=rng.choice([5, 10, 13, 20]), split=rng.choice(["train", "test"]), num_mazes=rng.randint(1, 50),
            tasks_per_maze=rng.randint(1, 3), maze_seed=rng.randint(0, 99), allow_start_at_goal=rng.random() < 0.3,
            variant=rng.choice(["emaml", "metods"]), episodes_per_trial=rng.randint(1, 4),
        )  # fmt: skip
    elif fam == "gridnavi":
        make, kw = GridNavi, dict(size=rng.choice([5, 7]), split=rng.choice(["train", "test"]),
                                  episodes_per_trial=rng.randint(1, 4))  # fmt: skip
    elif fam == "tabular":
        make, kw = TabularMDP, dict(
            num_states=rng.randint(2, 12), num_actions=rng.randint(2, 6), num_tasks=rng.randint(1, 30),
            start_state=rng.choice(["fixed", "uniform"]), reward_std=rng.choice([0.0, 1.0]),
            obs=rng.choice(["one_hot", "index"]), episodes_per_trial=rng.randint(1, 5),
        )  # fmt: skip
    elif fam == "ipd":
        make, kw = IPD, dict(obs=rng.choice(["one_hot", "index"]), episodes_per_trial=rng.randint(1, 3))
    else:
        make, kw = Harlow, dict(width=rng.randint(2, 5), presentations=rng.randint(1, 6),
                                fixation_steps=rng.randint(0, 3), episodes_per_trial=rng.randint(1, 3))  # fmt: skip
    B = rng.choice([1, 7, 64, 300])
    try:
        ref = make(B, backend="reference", **kw, **common)
    except ValueError:  # e.g. more special tiles than a small board holds: rejected up front, fine
        return f"{fam}: configuration rejected"
    cpp = make(B, backend="cpp", **kw, **common)
    ref.reset()
    cpp.reset()
    run_lockstep(ref, cpp, steps=rng.choice([20, 80]), seed=rng.randint(0, 10**6))
    return f"{fam} B={B} {kw} {common}"


def case_estimators(rng: random.Random) -> str:
    """A random estimator op (value, gradient, HVP) with random done masks, near and far off-policy,
    against the reference objective applied to each episode."""
    import test_estimator_ops as T

    T.GAMMA, T.LAM = rng.choice([0.0, 0.5, 0.9, 0.99, 1.0]), rng.choice([0.0, 0.3, 0.95, 1.0])
    name = rng.choice(list(T.ESTIMATORS))
    backend = rng.choice(_backends("cpp", "cpp", "reference", "triton"))
    B, Tn = rng.randint(1, 9), rng.randint(1, 70)
    seed = rng.randint(0, 10**6)
    g = torch.Generator().manual_seed(seed)
    logp0, data = T._data(B, Tn, seed=seed)
    if rng.random() < 0.3:  # far off-policy: the clamps of the exponentiated log-ratios engage
        data["mu"] = logp0 + rng.choice([0.0, -3.0]) + 3.0 * torch.randn(B, Tn, generator=g, dtype=torch.float64)
    u = torch.randn(B, Tn, generator=g, dtype=torch.float64)
    dones = torch.rand(B, Tn, generator=g) < rng.choice([0.0, 0.1, 0.4, 0.9])
    got, want = T.fused_vs_split(backend, name, logp0, data, dones, u)
    _check(zip(("value", "grad", "hvp"), got, want, strict=True))
    return f"{name} {backend} B={B} T={Tn} gamma={T.GAMMA} lam={T.LAM}"


def case_tabular(rng: random.Random) -> str:
    """The fused tabular-softmax estimator derivatives against torch.func through the reference."""
    import test_estimators_tabular as TT
    from metakern.estimators.tabular import tabular_derivatives

    B, Tn, S, A = rng.randint(1, 9), rng.choice([1, 7, 8, 9, 17, 64, 200]), rng.randint(1, 25), rng.randint(1, 8)
    name, lam = rng.choice([*TT.CASES, ("loaded_dice", 0.3)])
    gamma, backend = rng.choice([0.0, 0.5, 0.9, 0.99, 1.0]), rng.choice(_backends("cpp", "reference"))
    theta, states, actions, signal, v = TT.problem(B, Tn, S, A, seed=rng.randint(0, 10**6))
    theta = theta * rng.choice([0.1, 1.0, 8.0])
    J = TT.reference_objective(name, lam, states, actions, signal, gamma)
    with metakern.use_backend(backend):
        d = tabular_derivatives(name, theta, states, actions, v, signal, gamma, lam)
    _, hv = torch.func.jvp(torch.func.grad(J), (theta,), (v,))
    _check([("value", d.value, J(theta)), ("grad", d.grad, torch.func.grad(J)(theta)), ("hvp", d.hvp, hv)])
    return f"{name}({lam}) {backend} B={B} T={Tn} S={S} A={A} gamma={gamma}"


def case_policy(rng: random.Random) -> str:
    """The tabular and linear-softmax log-prob ops: value, gradient and HVP against autograd."""
    import test_policy_ops as TP
    from metakern.policy import (
        linear_softmax_log_prob,
        linear_softmax_log_prob_reference,
        tabular_log_prob,
        tabular_log_prob_reference,
    )

    backend = rng.choice(_backends("cpp", "cpp", "reference", "triton"))
    idx, N = rng.choice([torch.int32, torch.int64]), rng.choice([None, 1, 3])
    B, Tn = rng.randint(1, 5), rng.choice([1, 9, 40])
    scale, seed = rng.choice([0.1, 2.0, 20.0]), rng.randint(0, 10**6)
    if rng.random() < 0.5:
        S, A = rng.randint(1, 25), rng.randint(1, 9)
        theta, states, actions, v = TP.tab_inputs((N, S, A, B, Tn, idx), seed=seed)
        want = TP.value_grad_hvp(tabular_log_prob_reference, [theta * scale], [states, actions], [v])
        with metakern.use_backend(backend):
            got = TP.value_grad_hvp(tabular_log_prob, [theta * scale], [states, actions], [v])
        what = f"tabular {backend} N={N} S={S} A={A} B={B} T={Tn}"
    else:
        F, A = rng.randint(1, 40), rng.randint(1, 9)
        weight, features, actions, vw, vx = TP.lin_inputs((N, F, A, B, Tn, idx), seed=seed)
        want = TP.value_grad_hvp(linear_softmax_log_prob_reference, [weight * scale, features], [actions], [vw, vx])
        with metakern.use_backend(backend):
            got = TP.value_grad_hvp(linear_softmax_log_prob, [weight * scale, features], [actions], [vw, vx])
        what = f"linear {backend} N={N} F={F} A={A} B={B} T={Tn}"
    _check((f"output {i} (value, gradients, HVPs)", x, y) for i, (x, y) in enumerate(zip(got, want, strict=True)))
    return what


def case_synapse(rng: random.Random) -> str:
    """The MetODS synapse op (outputs and every gradient) against the naive Algorithm-1 loop."""
    import test_synapse as TS

    backend = rng.choice(_backends("cpp", "cpp", "cpp", "reference", "triton"))
    small = backend == "triton"  # the interpreter is slow
    B, S = rng.randint(1, 2 if small else 4), rng.randint(1, 5)
    Tn, N = rng.choice([1, 2, 5, 17] if small else [1, 2, 5, 17, 40, 90]), rng.choice([1, 3, 8, 13, 16, 33])
    decay, act = rng.choice([None, None, 0.05, 3.0]), rng.choice(["tanh", "relu", "identity"])
    if act == "identity" and (S >= 4 or decay == 3.0):
        act = "tanh"  # deep linear recursions overflow: nothing to compare
    inputs, reset = TS.make_inputs(B, Tn, N, S, batched=rng.random() < 0.5, reset_p=rng.choice([0.0, 0.05, 0.3, 1.0]),
                                   seed=rng.randint(0, 10**6), decay=decay)  # fmt: skip
    C = rng.choice([None, 1, 2, 3, 7, 64])
    outs_r, grads_r = TS.grads_of(TS.naive, inputs, reset, activation=act)
    outs_f, grads_f = TS.grads_of(TS.fused(backend), inputs, reset, activation=act, checkpoint_every=C)
    # Some recursions are chaotic (strong decay over long T: 1e-15 in the inputs becomes 1e-6 in
    # vS after 90 steps), and there no two float64 evaluations can agree to 1e-9. Each output's
    # tolerance is therefore at least 10x how far the reference itself moves when its inputs move
    # by 1e-15 (relative); in well-conditioned cases that is far below TOL.
    nudged = [t * (1 + 1e-15) for t in inputs]
    outs_n, grads_n = TS.grads_of(TS.naive, nudged, reset, activation=act)
    moved = [_relative_error(n, r) for n, r in zip((*outs_n, *grads_n), (*outs_r, *grads_r), strict=True)]
    tols = {name: max(TOL, 10 * m) for name, m in zip(TS.NAMES, moved, strict=True)}
    _check(zip(TS.NAMES, (*outs_f, *grads_f), (*outs_r, *grads_r), strict=True), tols)
    return f"{backend} B={B} T={Tn} N={N} S={S} act={act} decay={decay} C={C}"


def case_oracle(rng: random.Random) -> str:
    """The C++ K-step MAML meta-gradient kernel against the torch linear algebra. Kept to settings
    whose conditioning allows 1e-9 (gamma <= 0.95, alpha <= 10): beyond, the two differ by as much
    as the torch result itself moves when its input moves by 1e-15."""
    from metakern import oracle as O

    B, S, A = rng.choice([1, 3, 8, 9, 17, 40]), rng.choice([1, 2, 5, 20, 21, 33]), rng.choice([1, 2, 5, 7])
    if rng.random() < 0.4:
        S, A = 20, 5  # the fixed-size AVX-512 kernel
    gamma, alpha, steps = rng.choice([0.0, 0.3, 0.8, 0.95]), rng.choice([0.0, 0.1, 1.0, 10.0]), rng.randint(0, 4)
    seed = rng.randint(0, 10**6)
    mdp = O.random_mdps(B, S, A, gamma=gamma, concentration=rng.choice([0.001, 0.1, 1.0, 10.0]), seed=seed)
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(B, S, A, generator=g, dtype=torch.float64) * rng.choice([0.0, 1.0, 5.0])
    with metakern.use_backend("cpp"):
        got = O.maml_meta_gradient(mdp, theta, alpha, steps)
    with metakern.use_backend("reference"):
        want = O.maml_meta_gradient(mdp, theta, alpha, steps)
    _check([("meta_gradient", got.meta_gradient, want.meta_gradient), ("objective", got.objective, want.objective),
            ("thetas", torch.stack(got.thetas), torch.stack(want.thetas))])  # fmt: skip
    return f"B={B} S={S} A={A} gamma={gamma} alpha={alpha} K={steps}"


def case_scans(rng: random.Random) -> str:
    """``linear_scan`` (forward or reverse, batch- or time-major, tensor or scalar decay) and the
    fused GAE op: values and gradients against autograd through the references."""
    import test_gae_op as TG
    from metakern.ops import linear_scan, linear_scan_reference

    B, Tn, seed = rng.choice([1, 3, 65, 300]), rng.choice([1, 2, 63, 257]), rng.randint(0, 10**6)
    g = torch.Generator().manual_seed(seed)
    if rng.random() < 0.5:
        backend = rng.choice(_backends("cpp", "cpp", "reference", *(["triton"] if B * Tn <= 4096 else [])))
        reverse, time_major, scalar = rng.random() < 0.5, rng.random() < 0.5, rng.random() < 0.3
        x = torch.randn(B, Tn, generator=g, dtype=torch.float64, requires_grad=True)
        a_full = torch.empty(B, Tn, dtype=torch.float64).uniform_(-1.1, 1.1, generator=g)
        a_val = rng.uniform(-1.0, 1.0)
        a = torch.full_like(a_full, a_val) if scalar else a_full.requires_grad_()
        c = torch.randn(B, generator=g, dtype=torch.float64, requires_grad=True)
        gy = torch.randn(B, Tn, generator=g, dtype=torch.float64)
        with metakern.use_backend(backend):
            tm = (lambda t: t.T.contiguous()) if time_major else (lambda t: t)
            y = linear_scan(tm(x), a_val if scalar else tm(a), c, reverse, time_major=time_major)
            y = y.T if time_major else y
        want = linear_scan_reference(x, a, c, reverse)
        diff = [x, c] if scalar else [x, a, c]
        got_g = torch.autograd.grad(y, diff, gy)
        want_g = torch.autograd.grad(want, diff, gy)
        _check([("y", y, want), *(("grad", p, q) for p, q in zip(got_g, want_g, strict=True))])
        return f"linear_scan {backend} B={B} T={Tn} reverse={reverse} time_major={time_major} scalar={scalar}"
    options = tuple(rng.random() < 0.5 for _ in range(3))
    time_major = rng.random() < 0.5
    gamma, lam = rng.choice([0.0, 0.9, 0.99, 1.0]), rng.choice([0.0, 0.5, 0.95, 1.0])
    args = TG.gae_inputs(B, Tn, torch.float64, options, time_major=time_major, seed=seed, requires_grad=True)
    diff = [t for t in args if t is not None and t.requires_grad]
    outs = {}
    for backend in ("cpp", "reference"):
        with metakern.use_backend(backend):
            adv, ret = TG.gae_op(*args, gamma, lam, time_major)
        w = torch.randn(adv.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        outs[backend] = (adv, ret, *torch.autograd.grad((adv * w).sum() + (ret * w * w).sum(), diff))
    _check((f"output {i} (adv, ret, gradients)", p, q) for i, (p, q) in enumerate(zip(*outs.values(), strict=True)))
    return f"gae B={B} T={Tn} options={options} time_major={time_major} gamma={gamma} lam={lam}"


FAMILIES = {
    "envs": case_envs,
    "estimators": case_estimators,
    "tabular": case_tabular,
    "policy": case_policy,
    "synapse": case_synapse,
    "oracle": case_oracle,
    "scans": case_scans,
}


def _rng(seed: int, family: str, n: int) -> random.Random:
    return random.Random(f"{seed}:{family}:{n}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0, help="time budget (default 5)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    p.add_argument("--only", help=f"comma-separated families (default all: {','.join(FAMILIES)})")
    p.add_argument("--rounds", type=int, help="run exactly this many cases of each family (instead of --minutes)")
    p.add_argument("--replay", metavar="FAMILY:N", help="run case N of FAMILY alone, verbosely")
    args = p.parse_args(argv)
    if args.replay:
        family, n = args.replay.split(":")
        print(FAMILIES[family](_rng(args.seed, family, int(n))))
        print("ok")
        return 0
    families = args.only.split(",") if args.only else list(FAMILIES)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        p.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    start = time.monotonic()
    deadline = start + 60 * args.minutes
    counts, failures, n = dict.fromkeys(families, 0), [], 0
    while (n < args.rounds * len(families)) if args.rounds is not None else (time.monotonic() < deadline):
        family = families[n % len(families)]
        case = n // len(families)
        n += 1
        try:
            FAMILIES[family](_rng(args.seed, family, case))
        except Exception:
            failures.append(f"{family}:{case}")
            print(f"FAIL {family}:{case} (replay: --seed {args.seed} --replay {family}:{case})", flush=True)
            traceback.print_exc(limit=2)
        counts[family] += 1
    minutes = (time.monotonic() - start) / 60
    print(f"soak: {n} cases in {minutes:.1f} min ({', '.join(f'{k} {v}' for k, v in counts.items())}); "
          f"{len(failures)} failed{': ' + ' '.join(failures[:20]) if failures else ''}")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
