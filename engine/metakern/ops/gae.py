"""``metakern::gae``: generalised advantage estimation as one op.

    delta_t = r_t + gamma * (cont_t * V_{t+1} + cut_t) - V_t,   V_T = bootstrap
    adv_t   = delta_t + gamma * lam * cont_t * adv_{t+1},       ret_t = adv_t + V_t

``cont`` (1 where the return flows from t+1 into t), ``cut`` (value bootstrapped at truncations)
and ``bootstrap`` are optional. The C++ backend does it in one pass over memory (float32/float64);
other backends and dtypes compose ``linear_scan``. The gradient w.r.t. rewards, values, cut and
bootstrap is a forward linear scan plus elementwise ops, so the op is twice differentiable;
``cont`` is a mask and is not differentiated (metakern.returns passes it detached).
"""

from __future__ import annotations

import torch

from .. import _backend, _validate
from .scan import _DTYPE_CODES, _layout, _linear_scan_op, _run, _sizes, direct_call_ok, shifted


def check_gae_args(rewards, values, cont, cut, bootstrap, time_major: bool) -> None:
    layout = _layout(time_major)
    _validate.tensor("rewards", rewards, ndim=2, layout=layout)
    shape = tuple(rewards.shape)
    for name, t in (("values", values), ("cont", cont), ("cut", cut)):
        if t is None and name != "values":
            continue
        _validate.tensor(name, t, ndim=2, layout=layout)
        _validate.same_device(name, t, "rewards", rewards)
        _validate.same_dtype(name, t, "rewards", rewards)
        _validate.shape(name, t, shape, f"{layout} of rewards")
    if bootstrap is not None:
        _validate.tensor("bootstrap", bootstrap, ndim=1, layout="[B]")
        _validate.same_device("bootstrap", bootstrap, "rewards", rewards)
        _validate.same_dtype("bootstrap", bootstrap, "rewards", rewards)
        _validate.shape("bootstrap", bootstrap, (_sizes(rewards, time_major)[0],), f"[B] of rewards {layout}")


def _gae_composite(r, v, cont, cut, bootstrap, gamma, lam, time_major):
    dim = 0 if time_major else 1
    B = _sizes(r, time_major)[0]
    last = bootstrap if bootstrap is not None else r.new_zeros(B)
    next_v = shifted(v, last, dim, later=True)
    if cont is not None:
        next_v = cont * next_v
    if cut is not None:
        next_v = next_v + cut
    delta = r + gamma * next_v - v
    coef = torch.full_like(r, gamma * lam) if cont is None else (gamma * lam) * cont
    adv = _run(delta, coef, r.new_zeros(B), True, time_major)
    return adv, adv + v


def _gae_cpp(r, v, cont, cut, bootstrap, gamma, lam, time_major):
    adv, ret = torch.empty_like(r), torch.empty_like(r)
    B, T = _sizes(r, time_major)

    def ptr(t):
        return 0 if t is None else t.data_ptr()

    _backend.cpp_module().gae(
        _DTYPE_CODES[r.dtype], r.data_ptr(), v.data_ptr(), ptr(cont), ptr(cut), ptr(bootstrap),
        adv.data_ptr(), ret.data_ptr(), B, T, gamma, lam, time_major, torch.get_num_threads(),
    )  # fmt: skip
    return adv, ret


def _run_gae(r, v, cont, cut, bootstrap, gamma, lam, time_major):
    backend = _backend.select("gae", r.device.type)
    impl = _gae_cpp if backend == "cpp" and r.dtype in (torch.float32, torch.float64) else _gae_composite
    return impl(r, v, cont, cut, bootstrap, gamma, lam, time_major)


@torch.library.custom_op("metakern::gae", mutates_args=())
def _gae_op(
    rewards: torch.Tensor,
    values: torch.Tensor,
    cont: torch.Tensor | None,
    cut: torch.Tensor | None,
    bootstrap: torch.Tensor | None,
    gamma: float,
    lam: float,
    time_major: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    check_gae_args(rewards, values, cont, cut, bootstrap, time_major)
    return _run_gae(rewards, values, cont, cut, bootstrap, gamma, lam, time_major)


@_gae_op.register_fake
def _(rewards, values, cont, cut, bootstrap, gamma, lam, time_major=False):
    check_gae_args(rewards, values, cont, cut, bootstrap, time_major)
    return torch.empty_like(rewards), torch.empty_like(rewards)


def _setup_context(ctx, inputs, output):
    rewards, _, cont, _, _, gamma, lam, time_major = inputs
    ctx.gamma, ctx.lam, ctx.time_major = gamma, lam, time_major
    ctx.has_cont = cont is not None
    ctx.save_for_backward(cont if cont is not None else rewards.new_empty(0))


def _backward(ctx, grad_adv, grad_ret):
    (cont,) = ctx.saved_tensors
    cont = cont if ctx.has_cont else None
    gamma, lam, tm = ctx.gamma, ctx.lam, ctx.time_major
    need_r, need_v, _, need_cut, need_boot = ctx.needs_input_grad[:5]
    dim = 0 if tm else 1
    total = (grad_adv + grad_ret).contiguous()
    zeros = total.new_zeros(_sizes(total, tm)[0])
    coef = torch.full_like(total, gamma * lam) if cont is None else (gamma * lam) * cont
    # adv is a reverse scan of delta with coefficient coef: its adjoint is a forward scan
    # with coefficient coef_{t-1}.
    d_delta = _linear_scan_op(total, shifted(coef, zeros, dim, later=False), zeros, False, tm)
    to_next = gamma * d_delta if cont is None else gamma * cont * d_delta  # d/dV_{t+1} through delta_t
    d_v = shifted(to_next, zeros, dim, later=False) - d_delta + grad_ret if need_v else None
    d_cut = gamma * d_delta if need_cut else None
    d_boot = to_next.select(dim, to_next.shape[dim] - 1) if need_boot else None
    return (d_delta if need_r else None), d_v, None, d_cut, d_boot, None, None, None


_gae_op.register_autograd(_backward, setup_context=_setup_context)


def gae_op(
    rewards: torch.Tensor,
    values: torch.Tensor,
    cont: torch.Tensor | None,
    cut: torch.Tensor | None,
    bootstrap: torch.Tensor | None,
    gamma: float,
    lam: float,
    time_major: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns); the arguments as in ``metakern::gae`` (validated there)."""
    check_gae_args(rewards, values, cont, cut, bootstrap, time_major)
    if direct_call_ok(rewards, values, cont, cut, bootstrap):
        return _run_gae(rewards, values, cont, cut, bootstrap, gamma, lam, time_major)
    return _gae_op(rewards, values, cont, cut, bootstrap, gamma, lam, time_major)
