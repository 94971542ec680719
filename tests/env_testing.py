"""Helpers shared by the environment tests: two BatchedEnvs stepped in lock-step must agree exactly."""

import torch


def assert_same_step(res_a, res_b):
    """Two StepResults are equal: obs, reward, flags, every info entry (final_obs where an episode
    ended; its other rows are unspecified)."""
    for x, y in zip(tuple(res_a)[:4], tuple(res_b)[:4], strict=True):
        assert x.dtype == y.dtype and torch.equal(x.cpu(), y.cpu())
    assert res_a.info.keys() == res_b.info.keys()
    done = (res_a.terminated | res_a.truncated).cpu()
    for k in res_a.info:
        a, b = res_a.info[k].cpu(), res_b.info[k].cpu()
        if k == "final_obs":
            a, b = a[done], b[done]
        assert torch.equal(a, b), k


def run_lockstep(env_a, env_b, steps: int, seed: int = 0):
    """Step both envs with the same random actions, comparing every step; with autoreset disabled,
    reset the envs whose episode ended. Finally compare every state and bookkeeping array."""
    assert torch.equal(env_a.observe().cpu(), env_b.observe().cpu())
    fam = env_a.family
    shape = (env_a.num_envs,) if fam.action_dim == 1 else (env_a.num_envs, fam.action_dim)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        a = torch.randint(0, fam.num_actions, shape, generator=g, dtype=torch.int32)
        ra, rb = env_a.step(a.to(env_a.device)), env_b.step(a.to(env_b.device))
        assert_same_step(ra, rb)
        if env_a.autoreset_mode.name == "DISABLED":
            done = ra.terminated | ra.truncated
            if done.any():
                assert torch.equal(env_a.reset(done).cpu(), env_b.reset(done.to(env_b.device)).cpu())
    for group in ("state", "bk"):
        for k, v in getattr(env_a, group).items():
            assert torch.equal(v.cpu(), getattr(env_b, group)[k].cpu()), f"{group}.{k}"
