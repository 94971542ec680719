"""Benchmark cases of metakern's batched MuJoCo environments (``metakern.envs.mujoco``): env-steps/s.

Case ``mujoco/halfcheetah-vel/B=64,K=16`` (CPU only): 64 HalfCheetah-Vel tasks, one target velocity
each, advanced by K = 16 steps per call with uniform actions in [-1, 1] drawn beforehand (the same
``[K, B, 6]`` float32 array for every row). Episodes last 200 steps, as LDM's, and every row
autoresets on the next step (gymnasium's default), so resets are part of the timing: a call
continues where the previous one stopped. ``items`` = B * K env-steps, so ``items/s`` is
env-steps/s. Rows:

* ``cpp``: ``MujocoBatchedEnv("HalfCheetahVel", 64, num_threads=0)``, the thread pool over the 64
  simulations, torch tensors out.
* ``reference``: the same environment with ``backend="reference"`` (a Python loop over ``MjData``).
* ``gym-sync``: gymnasium's ``SyncVectorEnv`` of 64 ``gymnasium.make("HalfCheetah-v5",
  max_episode_steps=200)``, each wrapped in ``CheetahVelReward``, the small wrapper users write
  today to turn v5's reward into Cheetah-Vel's, ``-|x_velocity - v*| - 0.05 * sum(a^2)``, from
  ``info["x_velocity"]``. The speed-up column compares with this row (``baseline``).
* ``gym-sync-plain``: ``SyncVectorEnv`` of plain ``HalfCheetah-v5`` (no wrapper, v5's own reward):
  the strictest line, the cost of the v5 env alone.
* ``gym-async``: the wrapped envs in ``AsyncVectorEnv`` with gymnasium's defaults: one worker
  process per env (64 processes, whatever the core count; the default start method of
  ``multiprocessing``), shared-memory observations. Its startup (under a second on 2 cores with
  ``fork``, Linux's default before Python 3.14) happens at set-up, outside the timing.

Quick runs (``metakern bench --quick``) time the same case with the harness's quick settings,
as every family does; the family then takes about 8 s on 2 cores, set-up included (async too).

MuJoCo >= 3.17 prints a deprecation warning on stdout each time HalfCheetah's MJCF is compiled
(once per gymnasium env: 64 lines per vector env, and as many again in the async workers; once
per process for metakern's cached model). Every row builds its models with MuJoCo's warning
handler silenced (``quiet_mujoco``), so the bench table stays readable; timing is unaffected.

The family needs the ``mujoco`` package: without it, this module raises ImportError when the
harness imports it, and ``metakern bench`` notes the family as not loaded.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from . import env_peers
from .harness import Case, Impl, register

if importlib.util.find_spec("mujoco") is None:
    raise ImportError("the mujoco benchmark family needs the mujoco package: pip install 'mujoco>=3.2,<4'")

FAMILY = "mujoco"
TASK = "HalfCheetahVel"  # metakern task name
GYM_ID = "HalfCheetah-v5"  # the gymnasium env the peers wrap
NUM_ENVS = 64
STEPS = 16  # per call: ~10-50 ms for every row on 2 cores
MAX_STEPS = 200  # episode length (LDM's)
ACT_DIM = 6
OBS_DIM = 17
CTRL_COST_WEIGHT = 0.05  # Cheetah-Vel's 0.5 * 1e-1 (VariBAD / PEARL / LDM)
VEL_RANGE = (0.0, 3.0)  # peer target velocities when the engine gives none (VariBAD's U[0, 3])
PEERS = ("gym-sync", "gym-sync-plain", "gym-async")
BASELINE = "gym-sync"


# --------------------------------------------------------------------------------------------------
# Availability


@cache
def mujoco_unavailable() -> str | None:
    """None if ``mujoco`` imports and is not a release with a known solver bug, else why not
    (``metakern.envs.mujoco.sim.load_mujoco``'s check; it needs no compiled metakern module)."""
    from ..envs.mujoco.sim import load_mujoco

    try:
        load_mujoco()
    except Exception as exc:  # missing, broken or refused install
        return str(exc)
    return None


@cache
def engine_unavailable(backend: str) -> str | None:
    """None if ``MujocoBatchedEnv(TASK, ..., backend=backend)`` can be built here, else why not.

    Builds one environment once per process (a model compile: milliseconds)."""
    reason = mujoco_unavailable()
    if reason is not None:
        return reason
    try:
        mod = importlib.import_module("metakern.envs.mujoco")
    except Exception as exc:
        return f"metakern.envs.mujoco does not import ({type(exc).__name__}: {exc})"
    if not hasattr(mod, "MujocoBatchedEnv"):
        return "metakern.envs.mujoco has no MujocoBatchedEnv in this build"
    try:
        env = make_env(1, backend)
        env.reset(seed=0)
        env.step(torch.zeros(1, env.act_dim))
    except Exception as exc:
        return f"MujocoBatchedEnv({TASK!r}, backend={backend!r}) fails here ({type(exc).__name__}: {exc})"
    return None


def peer_unavailable(name: str) -> str | None:
    """None if the peer ``name`` can run here, else why not."""
    if name not in PEERS:
        return f"unknown peer {name!r} (known: {', '.join(PEERS)})"
    return mujoco_unavailable()


def describe_peer(name: str) -> str:
    """The packages (with versions) behind a peer, for notes."""
    vector = "AsyncVectorEnv" if name == "gym-async" else "SyncVectorEnv"
    wrapped = "" if name == "gym-sync-plain" else " + CheetahVelReward"
    version = env_peers.package_version
    return f"gymnasium {version('gymnasium')} {vector} of {GYM_ID}{wrapped}, mujoco {version('mujoco')}"


# --------------------------------------------------------------------------------------------------
# The peers: gymnasium's v5 env, vectorised the way users do it today


@contextlib.contextmanager
def quiet_mujoco() -> Iterator[None]:
    """Silence MuJoCo's warning handler (the MJCF compiler's deprecation warnings) inside the block."""
    try:
        import mujoco
    except ImportError:
        yield
        return
    old = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(lambda msg: None)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(old)


class CheetahVelReward(gym.Wrapper):
    """Cheetah-Vel's reward on gymnasium's ``HalfCheetah-v5``: ``-|x_velocity - goal_velocity| -
    ctrl_cost_weight * sum(action^2)``, read from v5's ``info["x_velocity"]`` (the wrapper users
    write today). ``info["task"]`` holds the target velocity."""

    def __init__(self, env: gym.Env, goal_velocity: float, ctrl_cost_weight: float = CTRL_COST_WEIGHT) -> None:
        super().__init__(env)
        self.goal_velocity = float(goal_velocity)
        self.ctrl_cost_weight = float(ctrl_cost_weight)

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        ctrl_cost = self.ctrl_cost_weight * np.sum(np.square(action))  # as v5 computes its own ctrl cost
        reward = -abs(info["x_velocity"] - self.goal_velocity) - ctrl_cost
        info["task"] = self.goal_velocity
        return obs, reward, terminated, truncated, info


class _GymEnvFn:
    """A picklable zero-argument factory (AsyncVectorEnv ships it to its workers): one
    ``gymnasium.make(GYM_ID, max_episode_steps=...)``, wrapped in ``CheetahVelReward`` unless
    ``goal_velocity`` is None."""

    def __init__(self, goal_velocity: float | None, max_episode_steps: int = MAX_STEPS) -> None:
        self.goal_velocity = goal_velocity
        self.max_episode_steps = max_episode_steps

    def __call__(self) -> gym.Env:
        with quiet_mujoco():
            env = gym.make(GYM_ID, max_episode_steps=self.max_episode_steps)
        if self.goal_velocity is None:
            return env
        return CheetahVelReward(env, self.goal_velocity)


def gym_env_fns(goal_velocities: Sequence[float] | None, num_envs: int, max_episode_steps: int = MAX_STEPS):
    """``num_envs`` env factories: Cheetah-Vel with one target velocity each, or plain v5 (None)."""
    if goal_velocities is None:
        return [_GymEnvFn(None, max_episode_steps) for _ in range(num_envs)]
    if len(goal_velocities) != num_envs:
        raise ValueError(f"{len(goal_velocities)} goal velocities for {num_envs} envs")
    return [_GymEnvFn(float(v), max_episode_steps) for v in goal_velocities]


def make_vector_stepper(
    name: str,
    actions: np.ndarray,
    goal_velocities: Sequence[float] | None,
    *,
    vector: str = "sync",
    seed: int = 0,
    max_episode_steps: int = MAX_STEPS,
    **vector_kwargs: Any,
) -> env_peers.PeerStepper:
    """A gymnasium vector env of ``HalfCheetah-v5`` stepping through ``actions`` (``[K, B, 6]``) on
    every call, as :class:`env_peers.PeerStepper` (``run.engine`` is the vector env).

    ``vector`` is ``"sync"`` (``SyncVectorEnv``) or ``"async"`` (``AsyncVectorEnv``, its defaults
    unless ``vector_kwargs`` says otherwise). Construction, the seeded reset and one warm-up call
    happen here. The vector env is closed by ``run.close()`` or when ``run`` is collected."""
    steps, num_envs = int(actions.shape[0]), int(actions.shape[1])
    if vector not in ("sync", "async"):
        raise ValueError(f"vector must be 'sync' or 'async', not {vector!r}")
    start = time.perf_counter()
    fns = gym_env_fns(goal_velocities, num_envs, max_episode_steps)
    cls = gym.vector.SyncVectorEnv if vector == "sync" else gym.vector.AsyncVectorEnv
    with quiet_mujoco():  # SyncVectorEnv builds here; AsyncVectorEnv builds a dummy env here
        envs = cls(fns, **vector_kwargs)
    envs.reset(seed=seed)
    per_step = [np.ascontiguousarray(a) for a in actions]

    def step() -> None:
        for a in per_step:
            envs.step(a)

    step()  # warm-up
    run = env_peers.PeerStepper(
        name,
        num_envs,
        steps,
        step,
        env=GYM_ID,
        vector=cls.__name__,
        wrapper=None if goal_velocities is None else "CheetahVelReward",
        autoreset=str(envs.metadata.get("autoreset_mode")),
        processes=num_envs if vector == "async" else 0,
        versions=describe_peer(name),
    )
    run.engine = envs
    run.close = envs.close
    weakref.finalize(run, envs.close)  # the async workers go away with the stepper
    run.setup_s = time.perf_counter() - start
    return run


# --------------------------------------------------------------------------------------------------
# metakern's engine


def make_env(num_envs: int, backend: str, seed: int = 0, **kwargs: Any) -> Any:
    """``MujocoBatchedEnv(TASK, num_envs, backend=...)`` with the bench's episode length."""
    from ..envs.mujoco import MujocoBatchedEnv

    kwargs.setdefault("max_steps", MAX_STEPS)
    kwargs.setdefault("num_threads", 0)
    with quiet_mujoco():  # the model compile's deprecation warning (see the module docstring)
        return MujocoBatchedEnv(TASK, num_envs, backend=backend, seed=seed, **kwargs)


def goal_velocities(env: Any) -> np.ndarray | None:
    """The per-env target velocities of a metakern HalfCheetahVel batch (``[B]`` float64): the
    ``velocity`` column of ``env.task_params``; None if the batch has no such parameter."""
    names = tuple(getattr(env, "task_params_names", ()))
    if "velocity" not in names:
        return None
    return np.array(env.task_params[:, names.index("velocity")], dtype=np.float64)


def _peer_goals(num_envs: int, seed: int = 0) -> np.ndarray:
    """Target velocities for the peers: the engine's own tasks where it can be built, else U[0, 3]."""
    if engine_unavailable("reference") is None:
        goals = goal_velocities(make_env(num_envs, "reference", seed=seed))
        if goals is not None:
            return goals
    return np.random.default_rng(seed).uniform(*VEL_RANGE, size=num_envs)


def make_inputs(num_envs: int = NUM_ENVS, steps: int = STEPS, seed: int = 0) -> dict[str, Any]:
    """The actions every row replays: ``[steps, num_envs, 6]`` uniform in [-1, 1], float32, as a
    torch tensor (ours) and a numpy array sharing its memory (the peers)."""
    g = torch.Generator().manual_seed(seed)
    actions = torch.rand(steps, num_envs, ACT_DIM, generator=g, dtype=torch.float32) * 2 - 1
    return {"actions": actions, "actions_np": actions.numpy(), "seed": seed}


def _ours(backend: str) -> Callable[[dict[str, Any]], Callable[[], Any]]:
    def setup(inputs: dict[str, Any]) -> Callable[[], Any]:
        actions = inputs["actions"]
        env = make_env(int(actions.shape[1]), backend, seed=inputs["seed"])
        env.reset(seed=inputs["seed"])
        per_step = list(actions.unbind(0))

        def run():
            out = None
            for a in per_step:
                out = env.step(a)
            return out.obs

        run.env = env  # for checks
        return run

    return setup


def _peer(name: str) -> Impl:
    def setup(inputs: dict[str, Any]) -> Callable[[], Any]:
        actions = inputs["actions_np"]
        goals = None if name == "gym-sync-plain" else _peer_goals(int(actions.shape[1]), inputs["seed"])
        vector = "async" if name == "gym-async" else "sync"
        return make_vector_stepper(name, actions, goals, vector=vector, seed=inputs["seed"])

    return Impl(name, setup, kind="peer", unavailable=lambda: peer_unavailable(name))


# --------------------------------------------------------------------------------------------------
# Cases


def bytes_moved(num_envs: int, steps: int) -> int:
    """Per env-step: the float64 observation, the float64 reward, two flags and a float32 action."""
    return num_envs * steps * (OBS_DIM * 8 + 8 + 2 + ACT_DIM * 4)


def halfcheetah_vel_case(num_envs: int = NUM_ENVS, steps: int = STEPS, peers: Iterable[str] = PEERS) -> Case:
    """The HalfCheetah-Vel case at ``num_envs`` tasks and ``steps`` steps per call (tests use small ones)."""
    impls = [
        Impl("cpp", _ours("cpp"), backend="cpp", unavailable=lambda: engine_unavailable("cpp")),
        Impl("reference", _ours("reference"), backend="reference", unavailable=lambda: engine_unavailable("reference")),
        *(_peer(p) for p in peers),
    ]
    return Case(
        family=FAMILY,
        name="halfcheetah-vel",
        shape=f"B={num_envs},K={steps}",
        device=torch.device("cpu"),
        dtype=torch.float32,  # the run's --dtype (environments have no dtype knob; obs are float64)
        items=num_envs * steps,
        bytes_moved=bytes_moved(num_envs, steps),
        make_inputs=lambda: make_inputs(num_envs, steps),
        impls=impls,
        note="env-steps/s; speed-up vs gym-sync (SyncVectorEnv of the wrapped v5 env)",
        baseline=BASELINE if BASELINE in peers else "reference",
    )


@register(FAMILY)
def _cases(device: torch.device, dtype: torch.dtype) -> Iterable[Case]:
    if device.type != "cpu" or dtype != torch.float32:
        return  # CPU only; environments run once, with the default dtype
    yield halfcheetah_vel_case()
