"""Every C++ kernel that is compiled for several instruction sets (AVX-512, AVX2+FMA, baseline
SSE2: common/cpu_features.h) gives the same numbers at each level. The rest of the suite checks
the level this machine picks against the references; here METAKERN_MAX_ISA (read once per process)
caps the level in fresh processes, so the paths a machine without AVX-512 (or without AVX2) runs are
reached too, and compared with the widest one the machine has."""

from __future__ import annotations

import pytest
import torch
from conftest import at_isa_levels
from metakern import _backend

SCRIPT = r"""
import sys, torch
import metakern
from metakern import _backend, oracle
from metakern.algos import recurrent
from metakern.estimators import ops as E
from metakern.estimators.tabular import tabular_derivatives
from metakern.policy import linear_softmax_log_prob, tabular_log_prob

torch.set_num_threads(2)
g = torch.Generator().manual_seed(11)
rn = lambda *s, dt=torch.float64: torch.randn(*s, generator=g, dtype=torch.float64).to(dt)
out = {"isa": _backend.cpp_module().simd_isa()}

def grads(y, xs, cot=None):
    cot = rn(*y.shape, dt=y.dtype) if cot is None else cot
    return list(torch.autograd.grad((y * cot).sum(), xs, allow_unused=True))

with metakern.use_backend("cpp"):
    # oracle: the AVX-512 fixed-size kernel (S=20, A=5) and the generic one (any size, every ISA)
    for B, S, A in ((11, 20, 5), (9, 7, 3)):
        mdp = oracle.random_mdps(B, S, A, gamma=0.8, seed=S)
        r = oracle.maml_meta_gradient(mdp, rn(B, S, A) * 3, 10.0, 3)
        out[f"oracle S={S}"] = [r.meta_gradient, r.objective, *r.thetas]
    for dt in (torch.float64, torch.float32):
        name = str(dt)[-7:]
        # scans: rows and columns (time_major), forward and backward; GAE
        for tm in (False, True):
            x, a = rn(5, 37, dt=dt).requires_grad_(), (rn(5, 37, dt=dt) * 0.5).requires_grad_()
            xs, as_ = (x.T.contiguous(), a.T.contiguous()) if tm else (x, a)
            y = metakern.linear_scan(xs, as_, time_major=tm)
            out[f"scan {name} tm={tm}"] = [y, *grads(y, (x, a))]
            r_, v_ = rn(5, 37, dt=dt), rn(5, 37, dt=dt)
            dones = torch.rand(5, 37, generator=g) < 0.1
            if tm:
                r_, v_, dones = r_.T.contiguous(), v_.T.contiguous(), dones.T.contiguous()
            res = metakern.gae(r_, v_, 0.97, 0.9, dones=dones, time_major=tm)
            out[f"gae {name} tm={tm}"] = list(res)
        # policy log-prob ops: value, gradient and (double backward) HVP
        w, f = rn(7, 5, dt=dt).requires_grad_(), rn(6, 23, 7, dt=dt).requires_grad_()
        acts = torch.randint(0, 5, (6, 23), generator=g)
        lp = linear_softmax_log_prob(w, f, acts)
        gw, gf = torch.autograd.grad(lp.sum(), (w, f), create_graph=True)
        hv = torch.autograd.grad((gw * rn(7, 5, dt=dt)).sum() + (gf * rn(6, 23, 7, dt=dt)).sum(), (w, f))
        out[f"linear policy {name}"] = [lp, gw, gf, *hv]
        th = rn(9, 4, dt=dt).requires_grad_()
        st, ac = torch.randint(0, 9, (6, 23), generator=g), torch.randint(0, 4, (6, 23), generator=g)
        lp = tabular_log_prob(th, st, ac)
        (gt,) = torch.autograd.grad((lp * rn(6, 23, dt=dt)).sum(), th, create_graph=True)
        out[f"tabular policy {name}"] = [lp, gt, *torch.autograd.grad((gt * rn(9, 4, dt=dt)).sum(), th)]
        # estimator ops: value, gradient and HVP of every fused kind, with done masks
        logp = -torch.rand(4, 41, generator=g, dtype=torch.float64).to(dt) * 2
        sig, val, u = rn(4, 41, dt=dt), rn(4, 41, dt=dt), rn(4, 41, dt=dt)
        beh, dones = logp + rn(4, 41, dt=dt), torch.rand(4, 41, generator=g) < 0.1
        for kind in E._KINDS:
            r = E._terms_cpp(kind, logp, sig, val, beh, dones, u, True, True, 0.9, 0.7, 4.0)
            out[f"estimator {kind} {name}"] = list(r)
        # MetODS synapse: outputs and every gradient, N with a vector tail, a reset inside
        B, T, N, S = 3, 9, 13, 2
        ins = [rn(B, T, N, dt=dt), rn(B, N, N, dt=dt) * 0.3, rn(N, N, dt=dt) * 0.3, rn(S, S + 1, dt=dt) * 0.5,
               rn(S, S + 1, dt=dt) * 0.5]
        ins = [t.requires_grad_() for t in ins]
        reset = torch.zeros(B, T, dtype=torch.bool)
        reset[1, 4] = True
        vS, W = metakern.metods_synapse(*ins, reset, checkpoint_every=3)
        out[f"synapse {name}"] = [vS, W, *grads(vS, ins, rn(B, T, N, dt=dt))]
        # GRU gate kernels, through the window function's forward and backward
        gi, h0, wh, bh = (t.requires_grad_() for t in (rn(6, 9, 33, dt=dt), rn(6, 11, dt=dt), rn(33, 11, dt=dt),
                                                       rn(33, dt=dt)))
        keep = (torch.rand(6, 9, 1, generator=g) > 0.25).to(dt)
        H = recurrent._GRUWindow.apply(gi, keep, h0, wh, bh)
        out[f"gru {name}"] = [H, *grads(H, (gi, h0, wh, bh))]
    # tabular estimator kernel (float64)
    theta, v = rn(6, 4), rn(6, 4)
    s, a = torch.randint(0, 6, (9, 37), generator=g), torch.randint(0, 4, (9, 37), generator=g)
    sig = rn(9, 37)
    for n in ("dice", "loaded_dice", "lvc"):
        d = tabular_derivatives(n, theta, s, a, v, sig, 0.9, 0.7)
        out[f"tabular estimator {n}"] = [d.value, d.grad, d.hvp]
torch.save(out, sys.argv[1])
"""


def _cpu_level() -> str:
    """The level this process runs at: the CPU's widest unless METAKERN_MAX_ISA caps it."""
    return _backend.cpp_module().simd_isa()


@pytest.mark.skipif(_backend.cpp_module() is None, reason="metakern's C++ module is not built")
def test_every_isa_variant_gives_the_same_numbers():
    levels = ["sse2", "avx2", "avx512"]
    levels = levels[: levels.index(_cpu_level()) + 1]
    if len(levels) == 1:
        pytest.skip("this CPU has only the baseline instruction set: one variant to run")
    results = {level: out for level, (_, out) in at_isa_levels(SCRIPT, tuple(levels)).items()}
    widest = results[levels[-1]]
    for level in levels:
        assert results[level]["isa"] == level  # the cap took effect
    for level in levels[:-1]:
        got = results[level]
        assert got.keys() == widest.keys()
        for name, expected in widest.items():
            if name == "isa":
                continue
            for i, (x, y) in enumerate(zip(got[name], expected, strict=True)):
                if x is None or y is None:
                    assert x is None and y is None, f"{name} output {i}"
                    continue
                scale = y.abs().max().clamp_min(1.0)
                tol = 1e-10 if y.dtype == torch.float64 else 2e-5
                torch.testing.assert_close(
                    x / scale, y / scale, rtol=0, atol=tol, msg=lambda m, n=name, k=i, lv=level: f"{lv}: {n} #{k}: {m}"
                )


@pytest.mark.skipif(_backend.cpp_module() is None, reason="metakern's C++ module is not built")
def test_isa_cap_environment_variables():
    """METAKERN_MAX_ISA caps the level (an unknown value is ignored); METAKERN_DISABLE_AVX512=1 is
    the same as METAKERN_MAX_ISA=avx2."""
    import os
    import subprocess
    import sys

    def level(**extra: str) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("METAKERN_MAX_ISA", "METAKERN_DISABLE_AVX512")}
        code = "import metakern._C as m; print(m.simd_isa())"
        run = subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True,
                             timeout=120)  # fmt: skip
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    order = ["sse2", "avx2", "avx512"]
    cpu = level()  # uncapped
    capped_to_avx2 = order[min(1, order.index(cpu))]
    assert level(METAKERN_MAX_ISA="sse2") == "sse2"
    assert level(METAKERN_MAX_ISA="avx2") == capped_to_avx2
    assert level(METAKERN_MAX_ISA="avx512") == cpu
    assert level(METAKERN_MAX_ISA="avx9000") == cpu
    assert level(METAKERN_DISABLE_AVX512="1") == capped_to_avx2
    assert level(METAKERN_DISABLE_AVX512="0") == cpu
