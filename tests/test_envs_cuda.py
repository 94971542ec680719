"""CUDA kernels of every environment family against the C++ ones (bit-exact), on a GPU.

The C++ kernels are checked against the numpy references in each family's own test file; here
the CUDA twin of each runs the same tasks and actions on the device. Skipped without a GPU.
"""

import importlib

import pytest
import torch

pytestmark = pytest.mark.cuda

FACTORIES = [
    ("gridnavi", "GridNavi", {}),
    ("krazy", "KrazyWorld", {}),
    ("maze", "Maze", {"size": 10}),
    ("maze", "Maze", {"size": 20}),
    ("tabular", "TabularMDP", {}),
    ("ipd", "IPD", {}),
    ("harlow", "Harlow", {}),
    ("harlow", "Harlow", {"width": 4, "fixation_steps": 0, "presentations": 3}),
]
MODES = ["next_step", "same_step", "disabled"]


def _factory(module, name):
    return getattr(importlib.import_module(f"metakern.envs.{module}"), name)


@pytest.fixture(autouse=True)
def _need_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


def _roll(factory, kwargs, device, mode, B=300, steps=150, seed=3):
    env = factory(B, device=device, seed=seed, autoreset_mode=mode, episodes_per_trial=2, explore_episodes=1, **kwargs)
    fam = env.family
    g = torch.Generator().manual_seed(seed)
    shape = (B,) if fam.action_dim == 1 else (B, fam.action_dim)
    out = [env.observe().cpu()]
    for _ in range(steps):
        a = torch.randint(0, fam.num_actions, shape, generator=g, dtype=torch.int32).to(device)
        r = env.step(a)
        done = r.terminated | r.truncated
        out += [t.cpu() for t in (r.obs, r.reward, r.terminated, r.truncated)]
        out += [r.info[k].cpu() for k in ("episode", "explore", "trial_done", "task")]
        if "final_obs" in r.info:
            shape_d = (B,) + (1,) * (r.obs.dim() - 1)
            out.append(torch.where(done.view(shape_d), r.info["final_obs"], torch.zeros_like(r.obs)).cpu())
        if mode == "disabled" and bool(done.any()):
            out.append(env.reset(done).cpu())
    out += [v.cpu() for v in env.bk.values()] + [v.cpu() for v in env.state.values()]
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("module", "name", "kwargs"), FACTORIES, ids=lambda v: str(v))
def test_cuda_matches_cpp_exactly(module, name, kwargs, mode):
    factory = _factory(module, name)
    cpu = _roll(factory, kwargs, "cpu", mode)
    gpu = _roll(factory, kwargs, "cuda", mode)
    assert len(cpu) == len(gpu)
    for k, (x, y) in enumerate(zip(cpu, gpu, strict=True)):
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert torch.equal(x, y), f"output {k} differs"


def test_large_batch_on_grid_axis_0():
    env = _factory("gridnavi", "GridNavi")(70_000, device="cuda")
    r = env.step(torch.full((70_000,), 2, dtype=torch.int32, device="cuda"))
    assert (r.obs[:, 0] == 1).all()


def test_bad_action_is_reported_without_a_host_round_trip_and_steps_nothing():
    env = _factory("gridnavi", "GridNavi")(8, device="cuda")
    before = env.state["pos"].clone()
    a = torch.zeros(8, dtype=torch.int32, device="cuda")
    a[3] = 7
    env.step(a)  # returns at once: the verdict is read later
    with pytest.raises(ValueError, match="env 3"):
        env.check_errors()
    assert torch.equal(before, env.state["pos"])
    env.step(a)
    torch.cuda.synchronize()
    with pytest.raises(ValueError):  # the next call reports it
        env.step(torch.zeros(8, dtype=torch.int32, device="cuda"))
    big = torch.zeros(8, dtype=torch.int64, device="cuda")
    big[1] = 2**32 + 1  # must not wrap to a valid action
    env.step(big)
    with pytest.raises(ValueError, match="env 1"):
        env.check_errors()
