"""MetODSPolicy: step-by-step acting equals whole-sequence training, gradients reach every
meta-parameter and match an independent autograd model, state carries across chunks, bad inputs
raise clear errors."""

import math

import metakern
import pytest
import torch
from metakern.metods import MetODSOutput, MetODSPolicy
from metakern.ops.synapse_reference import metods_synapse_reference

OBS, A, ADIM, N, B, T = 5, 3, 2, 12, 3, 9


def make_policy(discrete=True, dtype=torch.float32, seed=0, **kw):
    torch.manual_seed(seed)
    if discrete:
        return MetODSPolicy(OBS, A, hidden=N, dtype=dtype, **kw)
    return MetODSPolicy(OBS, action_dim=ADIM, hidden=N, dtype=dtype, **kw)


def make_inputs(discrete=True, dtype=torch.float32, seed=1, resets=True, B=B, T=T):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(B, T, OBS, generator=g, dtype=dtype)
    if discrete:
        act = torch.randint(-1, A, (B, T), generator=g)
    else:
        act = torch.randn(B, T, ADIM, generator=g, dtype=dtype)
    rew = torch.randn(B, T, generator=g, dtype=dtype)
    reset = None
    if resets:
        reset = torch.rand(B, T, generator=g) < 0.25
        reset[0, 0] = True  # a reset at step 0 (matters only when a state is carried in)
        reset[1, 1:] = False  # a row that never resets
        reset[2, T // 2] = True
    return obs, act, rew, reset


def step_by_step(policy, obs, act, rew, reset, state=None):
    """T calls of forward; returns the MetODSOutput stacked along a T axis."""
    W = policy.initial_state(obs.shape[0]) if state is None else state
    outs = []
    for t in range(obs.shape[1]):
        out = policy(obs[:, t], act[:, t], rew[:, t], W, None if reset is None else reset[:, t])
        W = out.state
        outs.append(out)

    def stack(field):
        return None if getattr(outs[0], field) is None else torch.stack([getattr(o, field) for o in outs], 1)

    return MetODSOutput(stack("logits"), stack("mean"), stack("log_std"), stack("value"), W)


def naive_sequence(policy, obs, act, rew, reset, state=None):
    """The model written out with plain torch and the naive Algorithm-1 loop (autograd oracle)."""
    Bq, Tq = obs.shape[:2]
    if policy.discrete:
        a_in = torch.nn.functional.one_hot((act + 1).clamp(min=0), A + 1)[..., 1:].to(obs.dtype)
    else:
        a_in = act
    v0 = torch.tanh(policy.embed(torch.cat([obs, a_in, rew.unsqueeze(-1)], -1)))
    W = policy.w0.expand(Bq, N, N) if state is None else state
    hs = []
    for t in range(Tq):
        if reset is not None:
            W = torch.where(reset[:, t].reshape(Bq, 1, 1), policy.w0, W)
        h, W = metods_synapse_reference(
            v0[:, t : t + 1], W, policy.alpha, policy.kappa, policy.beta, activation=policy.activation
        )
        hs.append(h[:, 0])
    h = torch.stack(hs, 1)
    head = policy.policy_head(h)
    value = policy.value_head(h).squeeze(-1)
    if policy.discrete:
        return MetODSOutput(head, None, None, value, W)
    return MetODSOutput(None, head, policy.log_std.expand_as(head), value, W)


def assert_outputs_close(a, b, atol, rtol=None):
    rtol = atol if rtol is None else rtol
    for name in MetODSOutput._fields:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            torch.testing.assert_close(x, y, atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")


def scalar_loss(policy, out, seed=2):
    """A fixed random linear functional of every output, so each one gets a gradient."""
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for name in ("logits", "mean", "log_std", "value", "state"):
        x = getattr(out, name)
        if x is not None:
            total = total + (x * torch.randn(x.shape, generator=g, dtype=x.dtype)).sum()
    return total


# --------------------------------------------------------------------------------------------------
# Acting step by step equals one fused call over the sequence


@pytest.mark.parametrize("discrete", [True, False], ids=["discrete", "continuous"])
@pytest.mark.parametrize("resets", [False, True], ids=["no-reset", "reset"])
@pytest.mark.parametrize("carried", [False, True], ids=["from-W0", "from-state"])
def test_step_by_step_equals_sequence(discrete, resets, carried):
    policy = make_policy(discrete, w0_init="normal")
    obs, act, rew, reset = make_inputs(discrete, resets=resets)
    state = torch.randn(B, N, N) * 0.2 if carried else None
    with torch.no_grad():
        seq = policy.forward_sequence(obs, act, rew, reset, state=state)
        steps = step_by_step(policy, obs, act, rew, reset, state)
        naive = naive_sequence(policy, obs, act, rew, reset, state)
    assert seq.value.shape == (B, T) and seq.state.shape == (B, N, N) and seq.state.dtype == torch.float32
    if discrete:
        assert seq.logits.shape == (B, T, A) and seq.mean is None and seq.log_std is None
    else:
        assert seq.mean.shape == seq.log_std.shape == (B, T, ADIM) and seq.logits is None
    assert_outputs_close(seq, steps, atol=1e-5)
    assert_outputs_close(seq, naive, atol=1e-5)


def test_reset_to_w0_discards_carried_state():
    """A row that resets at step 0 ignores the carried state; one that never resets depends on it."""
    policy = make_policy(w0_init="normal")
    obs, act, rew, _ = make_inputs()
    reset = torch.zeros(B, T, dtype=torch.bool)
    reset[0, 0] = True
    with torch.no_grad():
        a = policy.forward_sequence(obs, act, rew, reset, state=torch.zeros(B, N, N))
        b = policy.forward_sequence(obs, act, rew, reset, state=torch.ones(B, N, N))
        fresh = policy.forward_sequence(obs, act, rew)
    torch.testing.assert_close(a.logits[0], b.logits[0])
    torch.testing.assert_close(a.logits[0], fresh.logits[0])
    assert not torch.allclose(a.logits[1], b.logits[1])


# --------------------------------------------------------------------------------------------------
# Gradients


def _grads(policy, fn):
    policy.zero_grad(set_to_none=True)
    scalar_loss(policy, fn()).backward()
    return {name: p.grad.clone() for name, p in policy.named_parameters()}


@pytest.mark.parametrize("discrete", [True, False], ids=["discrete", "continuous"])
@pytest.mark.parametrize("carried", [False, True], ids=["from-W0", "from-state"])
def test_gradients_reach_every_parameter_and_match_references(discrete, carried):
    policy = make_policy(discrete, dtype=torch.float64, learn_w0=True, w0_init="normal")
    obs, act, rew, reset = make_inputs(discrete, dtype=torch.float64)
    state = torch.randn(B, N, N, dtype=torch.float64) * 0.2 if carried else None

    def fused():
        return policy.forward_sequence(obs, act, rew, reset, state=state)

    names = {name for name, _ in policy.named_parameters()}
    expected = {"embed.weight", "embed.bias", "policy_head.weight", "policy_head.bias", "value_head.weight"}
    expected |= {"value_head.bias", "alpha", "kappa", "beta", "w0"} | (set() if discrete else {"log_std"})
    assert names == expected
    got = _grads(policy, fused)
    for name, g in got.items():
        assert torch.isfinite(g).all(), name
        assert g.abs().sum() > 0, f"{name} got no gradient"
    # Columns l > s of kappa and beta are unused by the model: zero gradient there.
    unused = torch.ones(policy.inner_steps, policy.inner_steps + 1, dtype=torch.bool).triu(2)
    assert (got["kappa"][unused] == 0).all() and (got["beta"][unused] == 0).all()
    with metakern.use_backend("reference"):
        ref = _grads(policy, fused)
    naive = _grads(policy, lambda: naive_sequence(policy, obs, act, rew, reset, state))
    for name in got:
        torch.testing.assert_close(got[name], ref[name], atol=1e-10, rtol=1e-9, msg=f"{name} vs reference backend")
        torch.testing.assert_close(got[name], naive[name], atol=1e-10, rtol=1e-9, msg=f"{name} vs naive autograd")


def test_gradients_float32_match_reference_backend():
    policy = make_policy(learn_w0=True)
    obs, act, rew, reset = make_inputs()

    def fused():
        return policy.forward_sequence(obs, act, rew, reset)

    got = _grads(policy, fused)
    with metakern.use_backend("reference"):
        ref = _grads(policy, fused)
    for name in got:
        torch.testing.assert_close(got[name], ref[name], atol=1e-5, rtol=1e-4, msg=name)


def test_step_by_step_gradients_match_sequence():
    """BPTT through T single-step calls gives the fused sequence's gradients."""
    policy = make_policy(dtype=torch.float64, learn_w0=True)
    obs, act, rew, reset = make_inputs(dtype=torch.float64)
    seq = _grads(policy, lambda: policy.forward_sequence(obs, act, rew, reset))
    steps = _grads(policy, lambda: step_by_step(policy, obs, act, rew, reset))
    for name in seq:
        torch.testing.assert_close(seq[name], steps[name], atol=1e-10, rtol=1e-9, msg=name)


def test_checkpoint_every_gives_the_same_gradients():
    obs, act, rew, reset = make_inputs(dtype=torch.float64)
    a = make_policy(dtype=torch.float64)
    b = make_policy(dtype=torch.float64, checkpoint_every=2)
    ga = _grads(a, lambda: a.forward_sequence(obs, act, rew, reset))
    gb = _grads(b, lambda: b.forward_sequence(obs, act, rew, reset))
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], atol=1e-10, rtol=1e-9, msg=name)


def test_fixed_alpha_and_w0_are_buffers():
    policy = make_policy(learn_alpha=False, learn_w0=False)
    params = dict(policy.named_parameters())
    buffers = dict(policy.named_buffers())
    assert "alpha" in buffers and "w0" in buffers
    assert "alpha" not in params and "w0" not in params
    assert not policy.alpha.requires_grad
    assert {"alpha", "w0", "kappa", "beta"} <= set(policy.state_dict())
    obs, act, rew, reset = make_inputs()
    scalar_loss(policy, policy.forward_sequence(obs, act, rew, reset)).backward()
    assert policy.alpha.grad is None
    assert policy.kappa.grad is not None and policy.kappa.grad.abs().sum() > 0
    # The buffer moves with the module.
    assert policy.double().alpha.dtype == torch.float64


@pytest.mark.parametrize("discrete", [True, False], ids=["discrete", "continuous"])
def test_carried_state_across_chunks_equals_one_long_chunk(discrete):
    policy = make_policy(discrete, dtype=torch.float64, learn_w0=True, w0_init="normal")
    obs, act, rew, reset = make_inputs(discrete, dtype=torch.float64, T=12)
    cut = 5

    def chunked():
        first = policy.forward_sequence(obs[:, :cut], act[:, :cut], rew[:, :cut], reset[:, :cut])
        second = policy.forward_sequence(obs[:, cut:], act[:, cut:], rew[:, cut:], reset[:, cut:], state=first.state)
        return MetODSOutput(
            *(None if x is None else torch.cat([x, y], 1) for x, y in zip(first[:4], second[:4], strict=True)),
            second.state,
        )

    def whole():
        return policy.forward_sequence(obs, act, rew, reset)

    with torch.no_grad():
        assert_outputs_close(chunked(), whole(), atol=1e-12)
    # Not detaching the carried state is full BPTT: the same gradients as one long chunk.
    gc, gw = _grads(policy, chunked), _grads(policy, whole)
    for name in gw:
        torch.testing.assert_close(gc[name], gw[name], atol=1e-10, rtol=1e-9, msg=name)
    # Truncated BPTT: a detached state still runs and gives finite gradients.
    first = policy.forward_sequence(obs[:, :cut], act[:, :cut], rew[:, :cut], reset[:, :cut])
    second = policy.forward_sequence(
        obs[:, cut:], act[:, cut:], rew[:, cut:], reset[:, cut:], state=first.state.detach()
    )
    scalar_loss(policy, second).backward()
    assert all(torch.isfinite(p.grad).all() for p in policy.parameters())


# --------------------------------------------------------------------------------------------------
# Distributions, init, training smoke test


def test_distribution_helper():
    obs, act, rew, reset = make_inputs()
    disc = make_policy()
    out = disc.forward_sequence(obs, act, rew, reset)
    d = disc.distribution(out)
    assert isinstance(d, torch.distributions.Categorical)
    assert d.log_prob(d.sample()).shape == (B, T)
    cont = make_policy(False, log_std_init=-0.5)
    obs, act, rew, reset = make_inputs(False)
    out = cont.forward_sequence(obs, act, rew, reset)
    d = cont.distribution(out)
    assert d.log_prob(d.sample()).shape == (B, T)
    torch.testing.assert_close(d.base_dist.scale, torch.full((B, T, ADIM), math.exp(-0.5)))
    step = cont(obs[:, 0], act[:, 0], rew[:, 0], cont.initial_state(B))
    assert cont.distribution(step).sample().shape == (B, ADIM)
    with pytest.raises(TypeError, match="MetODSOutput"):
        cont.distribution((out.mean, out.log_std))


def test_initial_values():
    policy = MetODSPolicy(OBS, A, hidden=N, inner_steps=3, decay=0.8)
    from metakern.ops.synapse_reference import synapse_coefficients

    gamma, coef = synapse_coefficients(policy.beta.detach())
    assert gamma[-1].item() == pytest.approx(0.8)
    # Writes are convex: decay plus the write coefficients sum to one.
    assert gamma[-1].item() + coef[-1].sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(policy.kappa.diagonal(), torch.ones(3))
    torch.testing.assert_close(policy.kappa.diagonal(1), torch.ones(3))
    assert (policy.w0 == 0).all()
    state = policy.initial_state(4)
    assert state.shape == (4, N, N) and state.dtype == torch.float32
    # With S = 1 and W0 = 0 the first step is exactly the feed-forward policy g(f(x)).
    policy = MetODSPolicy(OBS, A, hidden=N, inner_steps=1)
    obs, act, rew, _ = make_inputs(B=4)
    out = policy(obs[:, 0], act[:, 0], rew[:, 0], policy.initial_state(4))
    onehot = torch.nn.functional.one_hot(act[:, 0] + 1, A + 1)[:, 1:].float()
    x = torch.cat([obs[:, 0], onehot, rew[:, :1]], 1)
    torch.testing.assert_close(out.logits, policy.policy_head(torch.tanh(policy.embed(x))))


@pytest.mark.parametrize("discrete", [True, False], ids=["discrete", "continuous"])
def test_a2c_training_smoke(discrete):
    policy = make_policy(discrete, learn_w0=True)
    obs, act, rew, reset = make_inputs(discrete, B=4, T=16)
    g = torch.Generator().manual_seed(3)
    taken = torch.randint(0, A, (4, 16), generator=g) if discrete else torch.randn(4, 16, ADIM, generator=g)
    returns = torch.randn(4, 16, generator=g)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)

    def loss_fn():
        out = policy.forward_sequence(obs, act, rew, reset)
        dist = policy.distribution(out)
        advantage = (returns - out.value).detach()
        return (
            -(dist.log_prob(taken) * advantage).mean()
            + 0.5 * (returns - out.value).pow(2).mean()
            - 0.01 * dist.entropy().mean()
        )

    losses = []
    for _ in range(15):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert all(torch.isfinite(p).all() for p in policy.parameters())
    with torch.no_grad():
        out = policy.forward_sequence(obs, act, rew, reset)
        final_value_loss = 0.5 * (returns - out.value).pow(2).mean().item()
    with torch.no_grad():
        initial = make_policy(discrete, learn_w0=True).forward_sequence(obs, act, rew, reset)
    assert final_value_loss < 0.5 * (returns - initial.value).pow(2).mean().item()


def test_float64_module_and_no_grad_acting():
    policy = make_policy(dtype=torch.float64)
    assert policy.state_dtype == torch.float64
    obs, act, rew, _ = make_inputs(dtype=torch.float64)
    with torch.no_grad():
        out = policy(obs[:, 0], act[:, 0], rew[:, 0])  # state None: W0
    assert out.state.dtype == torch.float64 and out.logits.dtype == torch.float64
    # float32 observations are cast to the module's dtype.
    out32 = policy(obs[:, 0].float(), act[:, 0], rew[:, 0].float())
    torch.testing.assert_close(out32.value, out.value, atol=1e-6, rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# Bad inputs


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({}, ValueError, "exactly one of num_actions"),
        ({"num_actions": 3, "action_dim": 2}, ValueError, "exactly one of num_actions"),
        ({"num_actions": 0}, ValueError, "num_actions"),
        ({"num_actions": 2.0}, TypeError, "num_actions"),
        ({"action_dim": -1}, ValueError, "action_dim"),
        ({"num_actions": 3, "hidden": 0}, ValueError, "hidden"),
        ({"num_actions": 3, "inner_steps": 17}, ValueError, "inner_steps"),
        ({"num_actions": 3, "activation": "gelu"}, ValueError, "activation"),
        ({"num_actions": 3, "decay": 1.5}, ValueError, "decay"),
        ({"num_actions": 3, "decay": 0.0}, ValueError, "decay"),
        ({"num_actions": 3, "w0_init": "ones"}, ValueError, "w0_init"),
        ({"num_actions": 3, "checkpoint_every": 0}, ValueError, "checkpoint_every"),
        ({"num_actions": 3, "dtype": torch.int64}, TypeError, "dtype"),
    ],
)
def test_bad_constructor_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        MetODSPolicy(OBS, **kwargs)
    with pytest.raises(ValueError, match="obs_dim"):
        MetODSPolicy(0, 3)


def test_bad_step_inputs():
    p = make_policy()
    c = make_policy(False)
    obs, act, rew, _ = make_inputs()
    o, a, r = obs[:, 0], act[:, 0], rew[:, 0]
    W = p.initial_state(B)
    cases = [
        (lambda: p(o[:, :-1], a, r, W), ValueError, r"obs: expected shape \[B, obs_dim\]"),
        (lambda: p(obs, act, rew, W), ValueError, "use forward_sequence"),
        (lambda: p(o.long(), a, r, W), TypeError, "obs: expected a floating tensor"),
        (lambda: p(o.numpy(), a, r, W), TypeError, "obs: expected a torch.Tensor"),
        (lambda: p(o, a.float(), r, W), TypeError, "prev_action: expected an integer tensor"),
        (lambda: p(o, a[:-1], r, W), ValueError, "prev_action: expected shape"),
        (lambda: p(o, torch.full((B,), A), r, W), ValueError, r"prev_action: expected indices in \[-1, 3\)"),
        (lambda: p(o, torch.full((B,), -2), r, W), ValueError, "prev_action"),
        (lambda: p(o, a.to("meta"), r, W), ValueError, "prev_action: expected a tensor on cpu"),
        (lambda: p(o, a, r.to("meta"), W), ValueError, "prev_reward: expected a tensor on cpu"),
        (lambda: p(o, a, r[:, None], W), ValueError, "prev_reward: expected shape"),
        (lambda: p(o, a, r, W[:, :-1]), ValueError, "state: expected shape"),
        (lambda: p(o, a, r, W.double()), TypeError, "state: expected dtype torch.float32"),
        (lambda: p(o, a, r, W, reset=torch.ones(B)), TypeError, "reset: expected a bool"),
        (lambda: p(o, a, r, W, reset=torch.full((B,), 2)), ValueError, "reset: expected 0/1"),
        (lambda: p(o, a, r, W, reset=torch.ones(B + 1, dtype=torch.bool)), ValueError, "reset: expected shape"),
        (lambda: p(o[:0], a[:0], r[:0], W[:0]), ValueError, "B = 0"),
        (lambda: c(o, torch.zeros(B, ADIM + 1), r), ValueError, r"prev_action: expected shape \[B, action_dim\]"),
        (lambda: c(o, torch.zeros(B, ADIM, dtype=torch.long), r), TypeError, "prev_action: expected a floating"),
        (lambda: p.initial_state(0), ValueError, "batch_size"),
    ]
    for fn, exc, match in cases:
        with pytest.raises(exc, match=match):
            fn()


def test_bad_sequence_inputs():
    p = make_policy()
    obs, act, rew, reset = make_inputs()
    cases = [
        (lambda: p.forward_sequence(obs[:, 0], act, rew), ValueError, "use forward for one step"),
        (lambda: p.forward_sequence(obs[..., :-1], act, rew), ValueError, r"obs: expected shape \[B, T, obs_dim\]"),
        (lambda: p.forward_sequence(obs, act[:, :-1], rew), ValueError, r"prev_action: expected shape \[B, T\]"),
        (lambda: p.forward_sequence(obs, act, rew[:, :-1]), ValueError, r"prev_reward: expected shape \[B, T\]"),
        (lambda: p.forward_sequence(obs, act, rew, reset[:, :-1]), ValueError, r"reset: expected shape \[B, T\]"),
        (lambda: p.forward_sequence(obs, act, rew, reset.float()), TypeError, "reset: expected a bool"),
        (lambda: p.forward_sequence(obs, act + A, rew), ValueError, "prev_action: expected indices"),
        (lambda: p.forward_sequence(obs[:, :0], act[:, :0], rew[:, :0]), ValueError, "T >= 1"),
        (lambda: p.forward_sequence(obs, act, rew, state=torch.zeros(B, N)), ValueError, r"state: expected shape"),
        (lambda: p.forward_sequence(obs, act, rew, state="W"), TypeError, "state: expected a torch.Tensor"),
    ]
    for fn, exc, match in cases:
        with pytest.raises(exc, match=match):
            fn()


def test_validate_args_off_skips_value_checks_only():
    p = make_policy(validate_args=False)
    obs, act, rew, _ = make_inputs()
    out = p.forward_sequence(obs, act, rew)  # fine inputs still work
    assert torch.isfinite(out.value).all()
    with pytest.raises(ValueError, match="prev_action: expected shape"):
        p.forward_sequence(obs, act[:, :-1], rew)


def test_fused_call_count(monkeypatch):
    """One fused call per sequence; two only when a carried state meets a reset."""
    import metakern.metods as metods

    calls = []
    real = metods.metods_synapse

    def counting(v0, *args, **kw):
        calls.append(tuple(v0.shape[:2]))
        return real(v0, *args, **kw)

    monkeypatch.setattr(metods, "metods_synapse", counting)
    p = make_policy()
    obs, act, rew, reset = make_inputs()
    state = torch.randn(B, N, N) * 0.1
    p.forward_sequence(obs, act, rew, reset)
    p.forward_sequence(obs, act, rew, None, state=state)
    p.forward_sequence(obs, act, rew, torch.zeros(B, T, dtype=torch.bool), state=state)
    assert calls == [(B, T)] * 3
    calls.clear()
    late = torch.zeros(B, T, dtype=torch.bool)
    late[0, 6] = True
    p.forward_sequence(obs, act, rew, late, state=state)
    # Every row from the carried state (rows that never reset run to the end), then the resetting
    # row from its reset on.
    assert calls == [(B, T), (1, T - 6)]
    calls.clear()
    late[1:, 4] = True
    p.forward_sequence(obs, act, rew, late, state=state)
    assert calls == [(B, 6), (B, T - 4)]
