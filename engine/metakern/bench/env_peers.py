"""Peer environment engines for the gridworld throughput benchmarks (helpers only: no cases here).

The gridworld families time metakern's vectorised stepping next to the engines users run today.
This module builds those engines; it registers nothing. Nothing heavy is imported at module
import (the harness imports every module of this package): JAX, gymnax and minigrid are imported
inside the functions that need them.

API::

    peer_unavailable(name) -> str | None          # None if the peer can run here, else why not
    make_peer_stepper(name, num_envs, steps, **kw) -> (run, env_steps)
    make_sync_stepper(env_fn, num_envs, steps, num_actions=None, seed=0) -> (run, env_steps)
    describe_peer(name) -> str                    # the package versions behind a peer (for notes)

Each call of ``run()`` advances ``num_envs`` environments by ``steps`` steps with uniformly random
actions and returns once the work is done; ``env_steps == num_envs * steps``. Episodes end and
restart inside the run (autoreset on), and every call continues from where the previous one
stopped. Everything that is not stepping (construction, reset, JIT compilation, one warm-up call)
happens in the ``make_*`` call. ``run`` is a :class:`PeerStepper`, whose attributes say what was
built (``name``, ``num_envs``, ``steps``, ``setup_s``, ``compile_s`` for JAX peers, ``detail``).

Peers (``PEERS``):

* ``"gymnax-metamaze"`` / ``"gymnax-fourrooms"``: gymnax ``MetaMaze-misc`` / ``FourRooms-misc`` on
  JAX's CPU device, written as gymnax users write a rollout: ``jax.jit`` of a ``jax.lax.scan``
  over ``steps`` of ``jax.vmap(env.step)``, actions drawn inside the scan with ``jax.random``.
  gymnax always autoresets in the same step. The scan collects each step's reward and
  termination (``[steps, num_envs]``); ``collect_obs=True`` also collects the observations, as a
  rollout buffer would. ``device="cpu"`` by default (``"gpu"`` where a CUDA jaxlib is installed).
* ``"minigrid"``: Farama minigrid, ``env_id="MiniGrid-Empty-8x8-v0"`` by default, as
  ``gymnasium.make(env_id)`` in ``gymnasium.vector.SyncVectorEnv`` (its defaults: NEXT_STEP
  autoreset, observations copied), actions from an array drawn once at set-up.
* ``"gym-sync"``: any single-env factory, ``env_fn=`` (a zero-argument callable returning a
  ``gymnasium.Env``), in ``SyncVectorEnv`` the same way; ``make_sync_stepper`` is the same thing
  called directly. The environment teams pass their numpy reference environments here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import time
from collections.abc import Callable
from functools import cache
from typing import Any

GYMNAX_ENVS = {"gymnax-metamaze": "MetaMaze-misc", "gymnax-fourrooms": "FourRooms-misc"}
MINIGRID_DEFAULT_ENV = "MiniGrid-Empty-8x8-v0"
PEERS: tuple[str, ...] = (*GYMNAX_ENVS, "minigrid", "gym-sync")

_GYMNAX_INSTALL = 'pip install gymnax "jax[cpu]"'
_MINIGRID_INSTALL = "pip install minigrid"


class PeerStepper:
    """``run()``: one call advances ``num_envs`` environments by ``steps`` steps (blocking)."""

    def __init__(self, name: str, num_envs: int, steps: int, step: Callable[[], None], **detail: Any) -> None:
        self.name = name
        self.num_envs = num_envs
        self.steps = steps
        self._step = step
        self.setup_s: float = 0.0  # construction, reset, compilation and the warm-up call
        self.compile_s: float | None = None  # JAX peers: lowering + XLA compilation
        self.detail: dict[str, Any] = detail
        self.engine: Any = None  # the peer's live objects (for checks): see make_peer_stepper
        self.close: Callable[[], None] = lambda: None

    @property
    def env_steps(self) -> int:
        return self.num_envs * self.steps

    def __call__(self) -> None:
        self._step()

    def __repr__(self) -> str:
        return f"PeerStepper({self.name!r}, num_envs={self.num_envs}, steps={self.steps})"


# --------------------------------------------------------------------------------------------------
# Availability


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


@cache
def _import_error(module: str) -> str | None:
    """None if ``module`` imports, else the error (a package can be present yet broken)."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # any failure (a broken install too) means the peer cannot run
        return f"{type(exc).__name__}: {exc}"
    return None


def peer_unavailable(name: str) -> str | None:
    """None if the peer ``name`` can run here, else a reason a person can act on."""
    if name in GYMNAX_ENVS:
        missing = _missing("jax", "jaxlib", "flax", "gymnax")
        if missing:
            return f"needs {', '.join(missing)}: {_GYMNAX_INSTALL}"
        err = _import_error("gymnax")
        return None if err is None else f"gymnax does not import ({err}); reinstall: {_GYMNAX_INSTALL}"
    if name == "minigrid":
        if _missing("minigrid"):
            return f"needs minigrid: {_MINIGRID_INSTALL}"
        err = _import_error("minigrid")
        return None if err is None else f"minigrid does not import ({err}); reinstall: {_MINIGRID_INSTALL}"
    if name == "gym-sync":
        return None if not _missing("gymnasium") else "needs gymnasium: pip install gymnasium"
    return f"unknown peer {name!r} (known: {', '.join(PEERS)})"


def package_version(dist: str) -> str:
    """Installed version of a distribution, or 'not installed'."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def describe_peer(name: str) -> str:
    """The packages (with versions) a peer runs on, e.g. for a benchmark note."""
    v = package_version
    if name in GYMNAX_ENVS:
        return f"gymnax {v('gymnax')} {GYMNAX_ENVS[name]}, jax {v('jax')}, jaxlib {v('jaxlib')}"
    if name == "minigrid":
        return f"minigrid {v('minigrid')}, gymnasium {v('gymnasium')} SyncVectorEnv"
    if name == "gym-sync":
        return f"gymnasium {v('gymnasium')} SyncVectorEnv"
    return f"unknown peer {name!r}"


# --------------------------------------------------------------------------------------------------
# Building


def make_peer_stepper(name: str, num_envs: int, steps: int, **kwargs: Any) -> tuple[PeerStepper, int]:
    """Build the peer ``name`` for ``num_envs`` environments and ``steps`` steps per call.

    Returns ``(run, env_steps)`` (see the module docstring). Keyword arguments by peer:
    gymnax peers ``seed=0``, ``collect_obs=False``, ``device="cpu"``; ``"minigrid"`` ``env_id``,
    ``seed=0``; ``"gym-sync"`` ``env_fn`` (required), ``num_actions=None``, ``seed=0``.
    Raises ``ValueError`` for an unknown name and ``RuntimeError`` for a peer that cannot run here.
    ``run.engine`` holds the live peer, for checks: gymnax, a dict with the batched env ``"state"``
    (a pytree, leading axis ``num_envs``) and the JAX ``"key"``; SyncVectorEnv peers, the vector env.
    """
    if num_envs < 1 or steps < 1:
        raise ValueError(f"num_envs and steps must be >= 1 (got {num_envs}, {steps})")
    if name not in PEERS:
        raise ValueError(peer_unavailable(name))
    reason = peer_unavailable(name)
    if reason is not None:
        raise RuntimeError(f"peer {name!r} cannot run here: {reason}")
    if name in GYMNAX_ENVS:
        run = _gymnax_stepper(name, GYMNAX_ENVS[name], num_envs, steps, **kwargs)
    elif name == "minigrid":
        env_id = kwargs.pop("env_id", MINIGRID_DEFAULT_ENV)
        run, _ = make_minigrid_stepper(env_id, num_envs, steps, **kwargs)
    else:
        if "env_fn" not in kwargs:
            raise TypeError('make_peer_stepper("gym-sync", ...) needs env_fn=, a zero-argument env factory')
        env_fn = kwargs.pop("env_fn")
        run, _ = make_sync_stepper(env_fn, num_envs, steps, **kwargs)
    return run, run.env_steps


# --------------------------------------------------------------------------------------------------
# gymnax (JAX)


def _jax_device(jax: Any, device: str) -> Any:
    try:
        return jax.devices(device)[0]
    except RuntimeError as exc:
        raise RuntimeError(f"JAX has no {device!r} device here ({exc})") from exc


def _gymnax_stepper(
    name: str, env_name: str, num_envs: int, steps: int, *, seed: int = 0, collect_obs: bool = False, device="cpu"
) -> PeerStepper:
    start = time.perf_counter()
    # With a CUDA jaxlib, JAX would otherwise grab 75% of the GPU when it starts, starving torch in
    # this process; this changes nothing on CPU. (Only effective if JAX is not imported yet.)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import gymnax
    import jax

    dev = _jax_device(jax, device)
    env, params = gymnax.make(env_name)
    num_actions = int(env.action_space(params).n)
    vreset = jax.vmap(env.reset, in_axes=(0, None))
    vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def one_step(carry, _):
        state, key = carry
        key, key_act, key_step = jax.random.split(key, 3)
        actions = jax.random.randint(key_act, (num_envs,), 0, num_actions)
        out = vstep(jax.random.split(key_step, num_envs), state, actions, params)
        # gymnax >= 1.0: (obs, state, reward, terminated, truncated, info); 0.0.x: (obs, state, reward, done, info)
        obs, state, reward, terminated = out[:4]
        ys = (obs, reward, terminated) if collect_obs else (reward, terminated)
        return (state, key), ys

    def rollout(state, key):
        return jax.lax.scan(one_step, (state, key), None, length=steps)

    key = jax.device_put(jax.random.PRNGKey(seed), dev)
    key, key_reset = jax.random.split(key)
    _, state = jax.jit(vreset)(jax.random.split(key_reset, num_envs), params)
    state, key = jax.device_put((state, key), dev)

    compile_start = time.perf_counter()
    compiled = jax.jit(rollout).lower(state, key).compile()
    compile_s = time.perf_counter() - compile_start

    carry = {"state": state, "key": key}

    def step() -> None:
        (carry["state"], carry["key"]), ys = compiled(carry["state"], carry["key"])
        jax.block_until_ready((carry["state"], ys))

    step()  # warm-up
    run = PeerStepper(
        name,
        num_envs,
        steps,
        step,
        env=env_name,
        num_actions=num_actions,
        device=str(dev),
        autoreset="same-step (gymnax)",
        collect_obs=collect_obs,
        versions=describe_peer(name),
    )
    run.engine = carry
    run.compile_s = compile_s
    run.setup_s = time.perf_counter() - start
    return run


# --------------------------------------------------------------------------------------------------
# gymnasium SyncVectorEnv (numpy): minigrid and any single-env factory


def make_sync_stepper(
    env_fn: Callable[[], Any], num_envs: int, steps: int, num_actions: int | None = None, seed: int = 0
) -> tuple[PeerStepper, int]:
    """``num_envs`` copies of ``env_fn()`` in ``gymnasium.vector.SyncVectorEnv``, stepped at random.

    SyncVectorEnv runs with its defaults (NEXT_STEP autoreset, observations copied). The actions
    of one call, ``[steps, num_envs]``, are drawn once here and replayed on every call (the
    environments' states move on, so the transitions differ): uniform over ``range(num_actions)``
    when given, else over a ``Discrete`` single action space, else ``steps`` samples of the
    batched action space. ``run.close()`` closes the environments.
    """
    if num_envs < 1 or steps < 1:
        raise ValueError(f"num_envs and steps must be >= 1 (got {num_envs}, {steps})")
    start = time.perf_counter()
    import gymnasium as gym
    import numpy as np

    envs = gym.vector.SyncVectorEnv([env_fn for _ in range(num_envs)])
    rng = np.random.default_rng(seed)
    space = envs.single_action_space
    if num_actions is not None:
        actions = list(rng.integers(0, num_actions, size=(steps, num_envs)))
    elif isinstance(space, gym.spaces.Discrete):
        low = int(space.start)
        actions = list(rng.integers(low, low + int(space.n), size=(steps, num_envs), dtype=space.dtype))
    else:
        envs.action_space.seed(seed)
        actions = [envs.action_space.sample() for _ in range(steps)]
    envs.reset(seed=seed)

    def step() -> None:
        for a in actions:
            envs.step(a)

    step()  # warm-up
    spec = getattr(envs.envs[0], "spec", None)
    run = PeerStepper(
        "gym-sync",
        num_envs,
        steps,
        step,
        env=spec.id if spec is not None else type(envs.envs[0]).__name__,
        autoreset=str(envs.metadata.get("autoreset_mode")),
        versions=describe_peer("gym-sync"),
    )
    run.engine = envs
    run.close = envs.close
    run.setup_s = time.perf_counter() - start
    return run, run.env_steps


def make_minigrid_stepper(
    env_id: str = MINIGRID_DEFAULT_ENV, num_envs: int = 16, steps: int = 100, seed: int = 0
) -> tuple[PeerStepper, int]:
    """Farama minigrid ``env_id`` (``gymnasium.make``) in SyncVectorEnv, stepped at random."""
    import gymnasium as gym
    import minigrid  # noqa: F401 - registers the MiniGrid-* ids

    run, env_steps = make_sync_stepper(lambda: gym.make(env_id), num_envs, steps, seed=seed)
    run.name = "minigrid"
    run.detail["versions"] = describe_peer("minigrid")
    return run, env_steps
