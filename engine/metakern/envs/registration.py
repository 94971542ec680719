"""gymnasium ids for metakern's environment families (registered on ``import metakern.envs``).

``gymnasium.make_vec("metakern/KrazyWorld-v0", num_envs=4096)`` builds a ``MetakernVectorEnv``
(keyword arguments go to the family factory, e.g. ``autoreset_mode=``, ``device=``,
``episodes_per_trial=``); ``gymnasium.make("metakern/KrazyWorld-v0")`` builds one ``MetakernEnv``.
Without importing metakern.envs first, prefix the module: ``gymnasium.make("metakern.envs:metakern/Maze-v0")``.
"""

from __future__ import annotations

import importlib

import gymnasium

# id -> (module, factory, fixed keyword arguments)
ENV_IDS: dict[str, tuple[str, str, dict]] = {
    "metakern/KrazyWorld-v0": ("krazy", "KrazyWorld", {}),
    "metakern/Maze-v0": ("maze", "Maze", {"size": 10}),
    "metakern/Maze20-v0": ("maze", "Maze", {"size": 20}),
    "metakern/MazeTest-v0": ("maze", "Maze", {"size": 20, "split": "test"}),
    "metakern/MazeMetODS-v0": ("maze", "Maze", {"size": 10, "variant": "metods"}),
    "metakern/GridNavi-v0": ("gridnavi", "GridNavi", {"size": 7}),
    "metakern/GridNavi5x5-v0": ("gridnavi", "GridNavi", {"size": 5}),
    "metakern/TabularMDP-v0": ("tabular", "TabularMDP", {}),
    "metakern/IPD-v0": ("ipd", "IPD", {}),
    "metakern/Harlow-v0": ("harlow", "Harlow", {}),
}


# MuJoCo task families (metakern.envs.mujoco): metakern/<Task>-v0; needs the mujoco package.
MUJOCO_TASKS = (
    "HalfCheetah",
    "Hopper",
    "Walker2d",
    "Ant",
    "Humanoid",
    "HalfCheetahVel",
    "HalfCheetahDir",
    "AntDir",
    "AntGoal",
    "AntVel",
    "HumanoidDir",
    "HopperRandParams",
    "Walker2dRandParams",
    "HalfCheetahMassDamping",
    "AntMassDamping",
    "HopperMassDamping",
    "CrippleAnt",
    "CrippleHalfCheetah",
    "SparseHalfCheetahVel",
    "SparseAntGoal",
    "SparsePointRobot",
    "SparsePointRobotDynamics",
)


def _mujoco_entry(kind: str, task: str):
    def make(num_envs: int = 1, **kwargs):
        from .mujoco.env import MujocoBatchedEnv
        from .mujoco.gym import MujocoEnv, MujocoVectorEnv

        kwargs.pop("render_mode", None)
        if kind == "vector":
            return MujocoVectorEnv(MujocoBatchedEnv(task, num_envs, **kwargs))
        kwargs.setdefault("autoreset_mode", "disabled")
        return MujocoEnv(MujocoBatchedEnv(task, 1, **kwargs))

    make.__name__ = f"make_{kind}_{task}"
    return make


def _factory(env_id: str):
    module, name, fixed = ENV_IDS[env_id]
    return getattr(importlib.import_module(f"metakern.envs.{module}"), name), fixed


def make_vector(env_id: str, num_envs: int = 1, render_mode: str | None = None, **kwargs):
    """Vector entry point: a ``MetakernVectorEnv`` of ``num_envs`` envs of ``env_id``."""
    from .gym import MetakernVectorEnv

    factory, fixed = _factory(env_id)
    return MetakernVectorEnv(factory(num_envs, **{**fixed, **kwargs}), render_mode=render_mode)


def make_single(env_id: str, render_mode: str | None = None, **kwargs):
    """Single-env entry point: a ``MetakernEnv`` (autoreset disabled)."""
    from .gym import MetakernEnv

    factory, fixed = _factory(env_id)
    kwargs.setdefault("autoreset_mode", "disabled")
    return MetakernEnv(factory(1, **{**fixed, **kwargs}), render_mode=render_mode)


def _entry(kind: str, env_id: str):
    # gymnasium calls entry points with keyword arguments only; bind the id here.
    def make(**kwargs):
        if kind == "vector":
            return make_vector(env_id, **kwargs)
        return make_single(env_id, **kwargs)

    make.__name__ = f"make_{kind}_{env_id.split('/')[1].replace('-', '_')}"
    return make


def register_all() -> None:
    """Register every id that gymnasium does not know yet (idempotent)."""
    for env_id, (module, _, _) in ENV_IDS.items():
        if env_id in gymnasium.registry:
            continue
        if importlib.util.find_spec(f"metakern.envs.{module}") is None:
            continue  # family not present in this build
        gymnasium.register(id=env_id, entry_point=_entry("single", env_id), vector_entry_point=_entry("vector", env_id))
    for task in MUJOCO_TASKS:
        env_id = f"metakern/{task}-v0"
        if env_id not in gymnasium.registry:
            gymnasium.register(
                id=env_id, entry_point=_mujoco_entry("single", task), vector_entry_point=_mujoco_entry("vector", task)
            )
