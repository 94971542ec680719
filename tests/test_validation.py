"""Bad inputs to every public function raise a ValueError/TypeError naming the argument; nothing a
caller can pass reaches a kernel malformed. Explicit cases first, then hypothesis."""

import math

import metakern
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

B, T = 3, 5


def _op(x, a, carry, reverse=False):
    return torch.ops.metakern.linear_scan(x, a, carry, reverse)


# name -> (callable, anchor argument (the one the others must match), {argument: kind})
# kinds: "bt" a [B, T] floating tensor, "b" a [B] floating tensor, "mask" a [B, T] mask.
FUNCTIONS = {
    "linear_scan": (metakern.linear_scan, "x", {"x": "bt", "a": "bt", "carry": "b"}),
    "op": (_op, "x", {"x": "bt", "a": "bt", "carry": "b"}),
    "discounted_returns": (
        metakern.discounted_returns,
        "rewards",
        {"rewards": "bt", "dones": "mask", "truncations": "mask", "bootstrap": "b", "final_values": "bt"},
    ),
    "gae": (
        metakern.gae,
        "rewards",
        {
            "rewards": "bt",
            "values": "bt",
            "dones": "mask",
            "truncations": "mask",
            "bootstrap": "b",
            "final_values": "bt",
        },
    ),
    "lambda_returns": (
        metakern.lambda_returns,
        "rewards",
        {
            "rewards": "bt",
            "values": "bt",
            "dones": "mask",
            "truncations": "mask",
            "bootstrap": "b",
            "final_values": "bt",
        },
    ),
    "vtrace": (
        metakern.vtrace,
        "rewards",
        {
            "behaviour_log_probs": "bt",
            "target_log_probs": "bt",
            "rewards": "bt",
            "values": "bt",
            "dones": "mask",
            "truncations": "mask",
            "bootstrap": "b",
            "final_values": "bt",
        },
    ),
}
SCALARS = {  # name -> (valid value, low, high)
    "linear_scan": {"reverse": (False, None, None)},
    "op": {"reverse": (False, None, None)},
    "discounted_returns": {"gamma": (0.9, 0.0, 1.0)},
    "gae": {"gamma": (0.9, 0.0, 1.0), "lam": (0.95, 0.0, 1.0)},
    "lambda_returns": {"gamma": (0.9, 0.0, 1.0), "lam": (0.95, 0.0, 1.0)},
    "vtrace": {
        "gamma": (0.9, 0.0, 1.0),
        "lam": (1.0, 0.0, 1.0),
        "rho_bar": (1.0, 0.0, None),
        "c_bar": (1.0, 0.0, None),
        "pg_rho_bar": (1.0, 0.0, None),
    },
}


def valid_tensor(kind, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "mask":
        return torch.rand(B, T, generator=g) < 0.3
    shape = (B, T) if kind == "bt" else (B,)
    return torch.randn(shape, generator=g).to(dtype)


def valid_kwargs(fn_name, dtype=torch.float32):
    _, _, spec = FUNCTIONS[fn_name]
    kwargs = {name: valid_tensor(kind, dtype, seed=i) for i, (name, kind) in enumerate(spec.items())}
    kwargs.update({name: value for name, (value, _, _) in SCALARS[fn_name].items()})
    return kwargs


def call(fn_name, kwargs):
    fn = FUNCTIONS[fn_name][0]
    if fn_name == "op":
        return fn(kwargs["x"], kwargs["a"], kwargs["carry"], kwargs["reverse"])
    return fn(**kwargs)


@pytest.mark.parametrize("fn_name", FUNCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_valid_inputs_are_accepted(fn_name, dtype):
    """The baseline every bad-input case below changes in one argument."""
    out = call(fn_name, valid_kwargs(fn_name, dtype))
    outs = out if isinstance(out, tuple) else (out,)
    for o in outs:
        assert o.shape == (B, T) and o.dtype == dtype


# --------------------------------------------------------------------------------------------
# One bad argument at a time
# --------------------------------------------------------------------------------------------


def _non_contiguous_transposed(t):
    return t.t().contiguous().t() if t.dim() == 2 else t.repeat_interleave(2)[::2]


def _non_contiguous_sliced(t):
    return t.repeat_interleave(2, dim=-1)[..., ::2]


def _rank_low(t):
    return t[0]


def _rank_high(t):
    return t[None]


def _wrong_shape(t):
    return torch.cat([t, t[..., :1]], dim=-1)


def _empty(t):
    return t[:0]


MUTATIONS = {
    # name: (mutation, exception, applies to kinds, applies to the anchor)
    "int": (lambda t: t.to(torch.int32), TypeError, ("bt", "b"), True),
    "bool": (lambda t: t > 0, TypeError, ("bt", "b"), True),
    "complex": (lambda t: t.to(torch.complex64), TypeError, ("bt", "b", "mask"), True),
    "other_float": (lambda t: t.to(torch.float64), TypeError, ("bt", "b"), False),
    "rank_low": (_rank_low, ValueError, ("bt", "b", "mask"), True),
    "rank_high": (_rank_high, ValueError, ("bt", "b", "mask"), True),
    "shape": (_wrong_shape, ValueError, ("bt", "b", "mask"), False),
    "meta": (lambda t: t.to("meta"), ValueError, ("bt", "b", "mask"), False),
    "transposed": (_non_contiguous_transposed, ValueError, ("bt", "b"), True),
    "sliced": (_non_contiguous_sliced, ValueError, ("bt", "b"), True),
    "empty": (_empty, ValueError, ("bt", "b", "mask"), True),
    "list": (lambda t: t.tolist(), TypeError, ("bt", "b", "mask"), True),
    "numpy": (lambda t: t.numpy(), TypeError, ("bt", "b", "mask"), True),
}


def tensor_cases():
    cases = []
    for fn_name, (_, anchor, spec) in FUNCTIONS.items():
        for arg, kind in spec.items():
            for mut_name, (_, _, kinds, on_anchor) in MUTATIONS.items():
                if kind in kinds and (on_anchor or arg != anchor):
                    cases.append(pytest.param(fn_name, arg, mut_name, id=f"{fn_name}-{arg}-{mut_name}"))
    return cases


@pytest.mark.parametrize(("fn_name", "arg", "mutation"), tensor_cases())
def test_bad_tensor_argument(fn_name, arg, mutation):
    mutate, exc, _, _ = MUTATIONS[mutation]
    kwargs = valid_kwargs(fn_name)
    kwargs[arg] = mutate(kwargs[arg])
    if fn_name == "op" and mutation in ("list", "numpy"):
        # The dispatcher parses the schema before the op's Python body runs: torch raises a
        # RuntimeError (not TypeError) naming the argument.
        with pytest.raises((TypeError, RuntimeError), match=f"argument '{arg}'"):
            call(fn_name, kwargs)
        return
    with pytest.raises(exc, match=f"^{arg}:"):
        call(fn_name, kwargs)


@pytest.mark.parametrize("fn_name", [f for f in FUNCTIONS if "dones" in FUNCTIONS[f][2]])
@pytest.mark.parametrize("layout", ["transposed", "sliced"])
@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.uint8, torch.float16, torch.float64])
def test_masks_accept_any_real_dtype_and_layout(fn_name, layout, dtype):
    kwargs = valid_kwargs(fn_name, torch.float64)
    for name in ("dones", "truncations"):
        base = kwargs[name].to(dtype)
        kwargs[name] = _non_contiguous_transposed(base) if layout == "transposed" else _non_contiguous_sliced(base)
        assert not kwargs[name].is_contiguous() and torch.equal(kwargs[name], base)
    out = call(fn_name, kwargs)
    ref_kwargs = {**kwargs, **{k: v.contiguous() for k, v in kwargs.items() if k in ("dones", "truncations")}}
    ref = call(fn_name, ref_kwargs)
    outs, refs = (out, ref) if isinstance(out, tuple) else ((out,), (ref,))
    for o, r in zip(outs, refs, strict=True):
        torch.testing.assert_close(o, r, atol=0, rtol=0)


def scalar_cases():
    cases = []
    for fn_name, scalars in SCALARS.items():
        for name, (_, low, high) in scalars.items():
            if name == "reverse" and fn_name == "op":
                # torch's schema parser coerces numbers, None and numpy bools to bool before the op's
                # body runs; what it cannot coerce it rejects with a RuntimeError naming the argument.
                bad = [("yes", (TypeError, RuntimeError)), ([True], (TypeError, RuntimeError))]
            elif name == "reverse":
                bad = [(v, TypeError) for v in (1, 0, "yes", None, np.bool_(True))]
            else:
                bad = [
                    (math.nan, ValueError),
                    ("0.9", TypeError),
                    (True, TypeError),
                    (complex(0.5, 0), TypeError),
                    (torch.tensor([0.5, 0.5]), ValueError),
                    (low - 0.1, ValueError),
                ]
                if name != "pg_rho_bar":  # None means "same as rho_bar"
                    bad.append((None, TypeError))
                if high is not None:
                    bad += [(high + 0.5, ValueError), (math.inf, ValueError)]
            for i, (value, exc) in enumerate(bad):
                cases.append(pytest.param(fn_name, name, value, exc, id=f"{fn_name}-{name}-{i}"))
    return cases


@pytest.mark.parametrize(("fn_name", "name", "value", "exc"), scalar_cases())
def test_bad_scalar_argument(fn_name, name, value, exc):
    kwargs = valid_kwargs(fn_name)
    kwargs[name] = value
    pattern = f"argument '{name}'|^{name}:" if fn_name == "op" else f"^{name}:"
    with pytest.raises(exc, match=pattern):
        call(fn_name, kwargs)


@pytest.mark.parametrize("value", [math.nan, "0.5", True, None, [0.5]])
def test_bad_scalar_a(value):
    x = torch.randn(B, T)
    with pytest.raises((TypeError, ValueError), match=r"^a:"):
        metakern.linear_scan(x, value)


@pytest.mark.parametrize("value", [0.0, 1.0, 0.5, 1, 0, torch.tensor(0.9), torch.tensor([0.25])])
def test_gamma_accepts_numbers_in_range(value):
    r = torch.randn(B, T, dtype=torch.float64)
    got = metakern.discounted_returns(r, value)
    want = metakern.discounted_returns(r, float(value))
    torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize("fn_name", ["discounted_returns", "gae", "lambda_returns", "vtrace"])
def test_final_values_needs_truncations(fn_name):
    kwargs = valid_kwargs(fn_name)
    del kwargs["truncations"]
    with pytest.raises(ValueError, match=r"^final_values:"):
        call(fn_name, kwargs)


def test_error_messages_say_what_was_expected():
    x = torch.randn(B, T)
    with pytest.raises(ValueError, match=r"expected a 2-D tensor \[B, T\], got shape \(5,\)"):
        metakern.linear_scan(x[0], 0.5)
    with pytest.raises(ValueError, match=r"contiguous.*call \.contiguous\(\) first"):
        metakern.linear_scan(x.t(), 0.5)
    with pytest.raises(ValueError, match=r"carry: expected shape \[B\] of x \[B, T\] = \(3,\), got \(4,\)"):
        metakern.linear_scan(x, 0.5, torch.zeros(4))
    with pytest.raises(TypeError, match=r"a: expected dtype torch.float32 \(x is torch.float32\), got torch.float64"):
        metakern.linear_scan(x, torch.rand(B, T, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"a: expected a tensor on cpu \(like x\), got meta"):
        metakern.linear_scan(x, torch.rand(B, T, device="meta"))


# --------------------------------------------------------------------------------------------
# Hypothesis: random shapes, dtypes, layouts, devices and scalars. Every call either succeeds
# (exactly when the input is valid) or raises ValueError/TypeError.
# --------------------------------------------------------------------------------------------

ALL_DTYPES = [
    torch.float32,
    torch.float64,
    torch.bfloat16,
    torch.float16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.bool,
    torch.complex64,
]
FLOATS = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _build(shape, dtype, layout, device, seed):
    shape = tuple(shape)
    g = torch.Generator().manual_seed(seed)

    def fill(s):
        base = torch.randn(s, generator=g, dtype=torch.float64)
        if dtype == torch.bool:
            return base > 0
        if not (dtype.is_floating_point or dtype.is_complex):
            return (base > 0).to(dtype)
        return base.to(dtype)

    if layout == "transposed" and len(shape) >= 2:
        t = fill(shape[::-1]).permute(*reversed(range(len(shape))))
    elif layout == "sliced" and len(shape) >= 1:
        t = fill((*shape[:-1], 2 * shape[-1]))[..., ::2]
    else:
        t = fill(shape)
    return t.to(device)


@st.composite
def tensor_args(draw, right_shape, base_dtype):
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from([None, 1.0, [[1.0]], "x"]))
    shape = draw(
        st.one_of(
            st.just(right_shape),
            st.just(right_shape),
            st.just(right_shape),
            st.lists(st.integers(0, 4), min_size=0, max_size=3),
        )
    )
    dtype = draw(st.sampled_from([base_dtype] * 6 + ALL_DTYPES))
    layout = draw(st.sampled_from(["contiguous"] * 4 + ["transposed", "sliced"]))
    device = draw(st.sampled_from(["cpu"] * 9 + ["meta"]))
    return _build(shape, dtype, layout, device, draw(st.integers(0, 1000)))


REAL_VALUES = st.one_of(
    st.sampled_from([0.0, 0.5, 0.9, 1.0, 1, 0]),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([None, True, False, "0.5", -1, 2, complex(1, 1)]),
)


def _is_tensor(t):
    return isinstance(t, torch.Tensor)


def _float_ok(t, anchor, shape, coefficient=False):
    # linear_scan's coefficients (a, carry) may be float32 when x is 16-bit.
    half = anchor.dtype in (torch.bfloat16, torch.float16)
    return (
        _is_tensor(t)
        and (t.dtype == anchor.dtype or (coefficient and half and t.dtype == torch.float32))
        and tuple(t.shape) == shape
        and t.device == anchor.device
        and t.numel() > 0
        and t.is_contiguous()
    )


def _mask_ok(t, anchor):
    return t is None or (
        _is_tensor(t)
        and not t.is_complex()
        and tuple(t.shape) == tuple(anchor.shape)
        and t.device == anchor.device
        and t.numel() > 0
    )


def _real_ok(v, low, high):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return not math.isnan(v) and (low is None or v >= low) and (high is None or v <= high)


def _expected_valid(fn_name, kwargs):
    _, anchor_name, spec = FUNCTIONS[fn_name]
    anchor = kwargs[anchor_name]
    if not (
        _is_tensor(anchor)
        and anchor.dtype in FLOATS
        and anchor.dim() == 2
        and anchor.numel() > 0
        and anchor.is_contiguous()
    ):
        return False
    bt, b = tuple(anchor.shape), (anchor.shape[0],)
    for name, kind in spec.items():
        value = kwargs.get(name)
        if name == anchor_name:
            continue
        if kind == "mask":
            ok = _mask_ok(value, anchor)
        elif fn_name == "linear_scan" and name == "a" and not _is_tensor(value):
            ok = _real_ok(value, None, None)
        elif value is None and (name in ("bootstrap", "final_values") or (fn_name, name) == ("linear_scan", "carry")):
            ok = True
        else:
            ok = _float_ok(value, anchor, bt if kind == "bt" else b, coefficient=fn_name == "linear_scan")
        if not ok:
            return False
    if kwargs.get("final_values") is not None and kwargs.get("truncations") is None:
        return False
    for name, (_, low, high) in SCALARS[fn_name].items():
        value = kwargs[name]
        if name == "reverse":
            ok = isinstance(value, bool) or (fn_name == "op" and (value is None or isinstance(value, int)))
        elif name == "pg_rho_bar" and value is None:
            ok = True
        else:
            ok = _real_ok(value, low, high)
        if not ok:
            return False
    return True


@st.composite
def calls(draw, fn_name):
    spec = FUNCTIONS[fn_name][2]
    Bh, Th = draw(st.integers(0, 4)), draw(st.integers(0, 5))
    base_dtype = draw(st.sampled_from([*FLOATS, torch.int64]))
    kwargs = {}
    for name, kind in spec.items():
        right = [Bh] if kind == "b" else [Bh, Th]
        optional = kind == "mask" or (name in ("bootstrap", "final_values", "carry") and fn_name != "op")
        if optional and draw(st.booleans()):
            kwargs[name] = None
            continue
        if (fn_name, name) == ("linear_scan", "a") and draw(st.booleans()):
            kwargs[name] = draw(REAL_VALUES)
            continue
        kwargs[name] = draw(tensor_args(right, base_dtype))
    for name, (valid, _, _) in SCALARS[fn_name].items():
        if name == "reverse":
            kwargs[name] = draw(st.sampled_from([False, True, False, True, 1, None, "no"]))
        else:
            kwargs[name] = draw(st.one_of(st.just(valid), st.just(valid), REAL_VALUES))
    return kwargs


@pytest.mark.parametrize("fn_name", FUNCTIONS)
@settings(
    max_examples=100, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(data=st.data())
def test_random_inputs_succeed_or_raise_clearly(fn_name, data):
    kwargs = data.draw(calls(fn_name))
    valid = _expected_valid(fn_name, kwargs)
    allowed = (ValueError, TypeError)
    if fn_name == "op":
        allowed = (ValueError, TypeError, RuntimeError)  # schema errors come from the dispatcher
    try:
        out = call(fn_name, kwargs)
    except allowed as exc:
        assert not valid, f"valid input rejected: {exc}"
        if isinstance(exc, RuntimeError):
            assert "Expected a value of type" in str(exc), exc
        return
    assert valid, "invalid input accepted"
    anchor = kwargs[FUNCTIONS[fn_name][1]]
    for o in out if isinstance(out, tuple) else (out,):
        assert o.shape == anchor.shape and o.dtype == anchor.dtype and o.device == anchor.device
