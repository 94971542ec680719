"""Benchmark cases of the gridworld environments (``metakern.envs``): env-steps per second.

One call of every implementation advances B environments by K steps with uniformly random
actions drawn beforehand (``items`` = B * K env-steps; ``items/s`` is env-steps/s). Rows:

* ``cpp`` / ``cuda``: metakern's ``BatchedEnv`` (the functional API, autoreset on).
* ``reference``: the same ``BatchedEnv`` on its numpy reference (small B only: it is a loop).
* peers (``env_peers``; beside Krazy World, MetaMaze also beside the 20x20 mazes):
  ``gym-sync`` = the numpy reference as single gymnasium envs in
  gymnasium's ``SyncVectorEnv``, the way a Python env is vectorised today; ``minigrid`` = Farama
  MiniGrid-Empty-8x8 in ``SyncVectorEnv``; ``gymnax-metamaze`` / ``gymnax-fourrooms`` = gymnax on
  JAX (CPU or GPU as the case's device), ``jit`` of a ``lax.scan`` over ``vmap(step)``, gymnax's
  own benchmark recipe. Peers run only where installed (``pip install minigrid gymnax jax``).

Sizes: B = 8192 is the throughput headline (with the JAX peers, which scale the same way); B = 64
holds the slow Python peers (their env-steps/s hardly depend on B); B = 1, K = 1 is the per-call
overhead of stepping one environment from Python. On CUDA: B = 8192 and B = 2^20.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

import torch

from . import env_peers
from .harness import Case, Impl, register

# family key -> (module, factory, kwargs, registered gymnasium id for the single-env peer)
FAMILIES: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "krazy": ("krazy", "KrazyWorld", {}, "metakern/KrazyWorld-v0"),
    "maze10": ("maze", "Maze", {"size": 10}, "metakern/Maze-v0"),
    "maze20": ("maze", "Maze", {"size": 20}, "metakern/Maze20-v0"),
    "gridnavi": ("gridnavi", "GridNavi", {"size": 7}, "metakern/GridNavi-v0"),
    "tabular": ("tabular", "TabularMDP", {}, "metakern/TabularMDP-v0"),
    "ipd": ("ipd", "IPD", {}, "metakern/IPD-v0"),
}
# Which peers sit next to which family. The JAX peers are gridworlds: both beside Krazy World (the
# headline), MetaMaze beside the paper-size mazes. The Python peers cost ~1 ms per env-step, so
# they run beside Krazy World only (gym-sync: the numpy reference of the family in SyncVectorEnv).
FAST_PEERS = {"krazy": ("gymnax-metamaze", "gymnax-fourrooms"), "maze20": ("gymnax-metamaze",)}
SLOW_PEERS = {"krazy": ("gym-sync", "minigrid")}


def _factory(key: str) -> tuple[Callable[..., Any], dict[str, Any]] | None:
    module, name, kwargs, _ = FAMILIES[key]
    try:
        mod = importlib.import_module(f"metakern.envs.{module}")
    except ImportError:
        return None
    return getattr(mod, name), kwargs


def _family_unavailable(key: str) -> Callable[[], str | None]:
    return lambda: None if _factory(key) is not None else f"metakern.envs.{FAMILIES[key][0]} is not in this build"


def _ours(key: str, B: int, K: int, device: torch.device) -> Callable[[dict[str, Any]], Callable[[], Any]]:
    def setup(inputs):
        factory, kwargs = _factory(key)
        env = factory(B, device=device, seed=0, **kwargs)
        fam = env.family
        shape = (K, B) if fam.action_dim == 1 else (K, B, fam.action_dim)
        g = torch.Generator().manual_seed(0)
        actions = torch.randint(0, fam.num_actions, shape, generator=g, dtype=torch.int32).to(device)
        steps = list(actions.unbind(0))

        def run():
            out = None
            for a in steps:
                out = env.step(a)
            return out.obs

        return run

    return setup


def _peer(name: str, B: int, K: int, **kwargs) -> Impl:
    def setup(inputs):
        run, _ = env_peers.make_peer_stepper(name, B, K, **kwargs)
        return run

    return Impl(name, setup, kind="peer", unavailable=lambda: env_peers.peer_unavailable(name))


def _sync_reference_peer(key: str, B: int, K: int) -> Impl:
    env_id = FAMILIES[key][3]

    def env_fn():
        from metakern.envs import registration

        return registration.make_single(env_id, backend="reference")

    def setup(inputs):
        run, _ = env_peers.make_sync_stepper(env_fn, B, K)
        return run

    def unavailable():
        if key == "ipd":
            return "two-agent rewards (shape (2,)) do not fit gymnasium's SyncVectorEnv"
        return env_peers.peer_unavailable("gym-sync") or _family_unavailable(key)()

    return Impl("gym-sync", setup, kind="peer", unavailable=unavailable)


def _bytes(key: str, B: int, K: int) -> int:
    factory = _factory(key)
    if factory is None:
        return B * K * 16
    fn, kwargs = factory
    try:
        env = fn(1, backend="reference", **kwargs)  # one env on the reference: cheap, needs no build
    except Exception:  # a family that cannot be built here is reported by its rows, not by the case list
        return B * K * 16
    obs = int(torch.tensor(env.obs_shape).prod()) * torch.empty(0, dtype=env.family.obs_dtype).element_size()
    return B * K * (obs + 4 * env.family.reward_dim + 4 + 4 * env.family.action_dim)


def _case(key: str, B: int, K: int, device: torch.device, impls: list[Impl], baseline: str, note: str) -> Case:
    return Case(
        family="envs",
        name=f"{key}.step",
        shape=f"B={B},K={K}",
        device=device,
        dtype=torch.float32,
        items=B * K,
        bytes_moved=_bytes(key, B, K),
        make_inputs=dict,
        impls=impls,
        note=note,
        baseline=baseline,
    )


@register("envs")
def _cases(device: torch.device, dtype: torch.dtype) -> Iterable[Case]:
    if dtype != torch.float32:
        return  # environments have no dtype knob; run them once, with the default dtype
    compiled = "cpp" if device.type == "cpu" else "cuda"
    for key in FAMILIES:
        missing = _family_unavailable(key)

        def ours(B, K, k=key, missing=missing):
            return Impl(compiled, _ours(k, B, K, device), backend=compiled, unavailable=missing)

        big = [ours(8192, 8)]
        # collect_obs: the JAX peers return every observation, as ours do (else XLA may skip computing them)
        big += [_peer(p, 8192, 8, device=device.type, collect_obs=True) for p in FAST_PEERS.get(key, ())]
        base = "gymnax-metamaze" if key in FAST_PEERS else compiled
        yield _case(key, 8192, 8, device, big, baseline=base, note="throughput: env-steps/s")
        if device.type == "cuda":
            if key == "krazy":
                yield _case(key, 2**20, 8, device, [ours(2**20, 8)], baseline=compiled, note="GPU throughput")
            continue
        small = [ours(64, 8), Impl("reference", _ours(key, 64, 8, device), backend="reference", unavailable=missing)]
        for p in SLOW_PEERS.get(key, ()):
            small.append(_sync_reference_peer(key, 64, 8) if p == "gym-sync" else _peer(p, 64, 8))
        base = "gym-sync" if "gym-sync" in SLOW_PEERS.get(key, ()) else "reference"
        yield _case(key, 64, 8, device, small, baseline=base, note="Python peers")
        yield _case(key, 1, 1, device, [ours(1, 1)], baseline=compiled, note="per-call overhead of one env")
