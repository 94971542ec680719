"""gymnasium front ends of ``MujocoBatchedEnv``.

* ``MujocoVectorEnv``: a ``gymnasium.vector.VectorEnv`` with the three autoreset modes
  (``NEXT_STEP``, ``SAME_STEP`` with ``infos["final_obs"]``, ``DISABLED`` with
  ``reset(options={"reset_mask": ...})``); numpy outputs.
* ``MujocoEnv``: one environment as a ``gymnasium.Env`` (autoreset disabled).

Registered as ``metakern/<Task>-v0`` (``registration.py``), e.g.
``gymnasium.make_vec("metakern/HalfCheetahVel-v0", num_envs=64, preset="ldm")``.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector.utils import batch_space

from ..core import AutoresetMode
from ..gym import add_final_obs, vector_reset_options
from .env import MujocoBatchedEnv

_GYM_MODES = {
    AutoresetMode.NEXT_STEP: gymnasium.vector.AutoresetMode.NEXT_STEP,
    AutoresetMode.SAME_STEP: gymnasium.vector.AutoresetMode.SAME_STEP,
    AutoresetMode.DISABLED: gymnasium.vector.AutoresetMode.DISABLED,
}
_INFO_KEYS = ("task", "task_params", "episode", "explore", "trial_done")


def _spaces(env: MujocoBatchedEnv, dtype):
    obs = gymnasium.spaces.Box(-np.inf, np.inf, shape=(env.obs_dim,), dtype=dtype)
    act = gymnasium.spaces.Box(env.action_low, env.action_high, dtype=np.float32)
    return obs, act


class MujocoVectorEnv(gymnasium.vector.VectorEnv):
    """``gymnasium.vector.VectorEnv`` over a ``MujocoBatchedEnv``.

    ``reset(seed=s)`` reseeds (env i's reset noise: ``s + i``, as ``SyncVectorEnv``) and starts
    new trials; ``options``: ``{"reset_mask": bool array}`` (DISABLED mode) and/or
    ``{"task_params": array}`` (play these tasks). ``infos`` holds ``task``, ``task_params``,
    ``episode``, ``explore``, ``trial_done`` and the reward terms (``x_velocity``, ``reward_*``),
    each with its ``_key`` mask; in SAME_STEP mode also ``final_obs`` / ``final_info``.
    """

    def __init__(self, env: MujocoBatchedEnv):
        self.env = env
        self.num_envs = env.num_envs
        self.single_observation_space, self.single_action_space = _spaces(env, env._np_dtype)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {"autoreset_mode": _GYM_MODES[env.autoreset_mode]}
        self._all = np.ones(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        mask, params = vector_reset_options(options, self.num_envs, "task_params")
        if params is not None:
            if seed is not None:
                self.env.reseed(seed)
            obs = self.env.set_tasks(params, mask=mask)
        elif mask is not None:
            obs = self.env.reset(mask, seed=seed)
        else:
            s = seed if seed is not None else int(self.np_random.integers(0, 2**31 - 1))
            obs = self.env.reset(seed=s)
        return obs.cpu().numpy(), {}

    def step(self, actions):
        r = self.env.step(actions)
        infos: dict[str, Any] = {}
        for key, value in r.info.items():
            if key == "final_obs":
                continue
            infos[key] = value.cpu().numpy()
            infos["_" + key] = self._all
        done = (r.terminated | r.truncated).cpu().numpy()
        if "final_obs" in r.info:
            add_final_obs(infos, done, r.info["final_obs"].cpu().numpy())
        return (
            r.obs.cpu().numpy(),
            r.reward.cpu().numpy(),
            r.terminated.cpu().numpy(),
            r.truncated.cpu().numpy(),
            infos,
        )


class MujocoEnv(gymnasium.Env):
    """One environment of a MuJoCo task family as a ``gymnasium.Env``. ``reset(seed=...)``
    reseeds; ``reset(options={"task_params": p})`` plays task ``p``; otherwise ``reset()`` starts
    the next episode of the trial (a new task after the trial's last episode)."""

    def __init__(self, env: MujocoBatchedEnv):
        if env.num_envs != 1:
            raise ValueError("MujocoEnv wraps a MujocoBatchedEnv of exactly one env")
        if env.autoreset_mode != AutoresetMode.DISABLED:
            raise ValueError("MujocoEnv needs autoreset_mode='disabled'")
        self.env = env
        self.observation_space, self.action_space = _spaces(env, env._np_dtype)
        self._started = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        params = options.pop("task_params", None)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; expected 'task_params'")
        if params is not None:
            if seed is not None or not self._started:
                self.env.reseed(seed if seed is not None else int(self.np_random.integers(0, 2**31 - 1)))
            obs = self.env.set_tasks(np.asarray(params, dtype=np.float64).reshape(1, -1))
        elif seed is not None:
            obs = self.env.reset(seed=seed)
        elif not self._started:
            obs = self.env.reset(seed=int(self.np_random.integers(0, 2**31 - 1)))
        else:
            obs = self.env.reset(np.ones(1, dtype=bool))
        self._started = True
        return obs[0].cpu().numpy(), self._info()

    def _info(self) -> dict[str, Any]:
        return {
            "task": int(self.env.task_index[0]),
            "task_params": self.env.task_params[0].copy(),
            "episode": int(self.env.episode[0]),
        }

    def step(self, action):
        a = np.asarray(action, dtype=np.float64).reshape(1, -1)
        r = self.env.step(a)
        info = {k: v[0].cpu().numpy() if v.dim() > 1 else v[0].item() for k, v in r.info.items()}
        return r.obs[0].cpu().numpy(), float(r.reward[0]), bool(r.terminated[0]), bool(r.truncated[0]), info
