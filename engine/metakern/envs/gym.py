"""gymnasium front ends for metakern's batched environments.

* ``MetakernVectorEnv``: a ``gymnasium.vector.VectorEnv`` over a ``BatchedEnv``, with all three
  autoreset modes (``NEXT_STEP``, ``SAME_STEP`` with ``infos["final_obs"]``, ``DISABLED`` with
  ``reset(options={"reset_mask": ...})``). Observations, rewards and flags are numpy arrays (the
  torch tensors of the functional API, viewed without a copy on the CPU).
* ``MetakernEnv``: a single ``gymnasium.Env`` (one environment, no autoreset), for
  ``gymnasium.make``.

Both are registered under ``metakern/<Name>-v0`` when ``metakern.envs`` is imported (see
``registration.py``); ``gymnasium.make_vec("metakern/KrazyWorld-v0", num_envs=...)`` then builds a
``MetakernVectorEnv`` directly (``vectorization_mode="vector_entry_point"``, gymnasium's default
when an id has a vector entry point).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium.vector.utils import batch_space

from .core import AutoresetMode, BatchedEnv

_GYM_MODES = {
    AutoresetMode.NEXT_STEP: gymnasium.vector.AutoresetMode.NEXT_STEP,
    AutoresetMode.SAME_STEP: gymnasium.vector.AutoresetMode.SAME_STEP,
    AutoresetMode.DISABLED: gymnasium.vector.AutoresetMode.DISABLED,
}


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.numpy() if t.device.type == "cpu" else t.cpu().numpy()


def _action_space(env: BatchedEnv) -> gymnasium.Space:
    fam = env.family
    if fam.action_dim == 1:
        return gymnasium.spaces.Discrete(fam.num_actions)
    return gymnasium.spaces.MultiDiscrete(np.full(fam.action_dim, fam.num_actions, dtype=np.int64))


def vector_reset_options(options: dict[str, Any] | None, num_envs: int, task_key: str):
    """Parse a vector env's ``reset`` options: ``(reset_mask or None, options[task_key] or None)``."""
    options = dict(options or {})
    mask = options.pop("reset_mask", None)
    tasks = options.pop(task_key, None)
    if options:
        raise ValueError(f"unknown reset options {sorted(options)}; expected 'reset_mask' and/or {task_key!r}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.shape != (num_envs,):
            raise ValueError(f"reset_mask must be a bool array of shape ({num_envs},)")
        if not mask.any():
            raise ValueError("reset_mask must select at least one env")
    return mask, tasks


def add_final_obs(infos: dict[str, Any], done: np.ndarray, final: np.ndarray) -> None:
    """SAME_STEP mode: gymnasium's ``final_obs`` (object array, set where ``done``) and ``final_info``."""
    final_obs = np.empty(len(done), dtype=object)
    for i in np.flatnonzero(done):
        final_obs[i] = final[i]
    infos["final_obs"] = final_obs
    infos["_final_obs"] = done
    infos["final_info"] = {}
    infos["_final_info"] = done


def _render_frames(env: BatchedEnv, indices) -> list[np.ndarray]:
    S, _, P = env._numpy_views()
    tasks = _numpy(env.bk["task"])
    return [env.family.render_rgb(S, P, int(i), int(tasks[i])) for i in indices]


class MetakernVectorEnv(gymnasium.vector.VectorEnv):
    """``gymnasium.vector.VectorEnv`` over a metakern ``BatchedEnv``.

    ``reset(seed=s)`` starts a new trial everywhere with seed ``s`` (tasks drawn from the pool);
    ``reset()`` without a seed draws one from ``np_random``. ``options``:
    ``{"reset_mask": bool array}`` resets only those envs (DISABLED mode; the trial goes on);
    ``{"tasks": int array}`` assigns tasks (indices into the pool) and starts new trials.
    ``infos`` carries ``task``, ``episode``, ``explore`` and ``trial_done`` arrays (each with its
    ``_key`` mask, gymnasium's dict-of-arrays convention), plus ``final_obs`` / ``final_info`` in
    SAME_STEP mode. Two-agent families (IPD) return rewards of shape ``(num_envs, 2)``.
    """

    def __init__(self, env: BatchedEnv, render_mode: str | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.env = env
        self.num_envs = env.num_envs
        self.single_observation_space = env.family.single_observation_space()
        self.single_action_space = _action_space(env)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.render_mode = render_mode
        self.metadata = {
            "autoreset_mode": _GYM_MODES[env.autoreset_mode],
            "render_modes": ["rgb_array"],
            "render_fps": 4,
        }
        self._all = np.ones(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        mask, tasks = vector_reset_options(options, self.num_envs, "tasks")
        if tasks is not None:
            obs = self.env.set_tasks(torch.as_tensor(np.asarray(tasks), device=self.env.device), mask=mask)
        elif mask is not None:  # the trial goes on in the masked envs; a seed applies to later draws
            if seed is not None:
                self.env.seed = BatchedEnv._check_seed(seed)
            obs = self.env.reset(torch.from_numpy(mask))
        else:
            obs = self.env.reset(seed=seed if seed is not None else int(self.np_random.integers(0, 2**63 - 1)))
        return _numpy(obs), {}

    def step(self, actions):
        a = torch.as_tensor(np.asarray(actions), device=self.env.device)
        r = self.env.step(a)
        infos: dict[str, Any] = {}
        for key in ("task", "episode", "explore", "trial_done"):
            infos[key] = _numpy(r.info[key])
            infos["_" + key] = self._all
        done = _numpy(r.terminated | r.truncated)
        if "final_obs" in r.info:
            add_final_obs(infos, done, _numpy(r.info["final_obs"]))
        return _numpy(r.obs), _numpy(r.reward), _numpy(r.terminated), _numpy(r.truncated), infos

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return tuple(_render_frames(self.env, range(self.num_envs)))

    def close_extras(self, **kwargs):
        pass


class MetakernEnv(gymnasium.Env):
    """One environment of a metakern family as a plain ``gymnasium.Env`` (autoreset disabled).
    ``reset(seed=...)`` starts a new trial; ``reset(options={"task": k})`` plays task k."""

    def __init__(self, env: BatchedEnv, render_mode: str | None = None):
        if env.num_envs != 1:
            raise ValueError("MetakernEnv wraps a BatchedEnv of exactly one env")
        if env.autoreset_mode != AutoresetMode.DISABLED:
            raise ValueError("MetakernEnv needs a BatchedEnv with autoreset_mode='disabled'")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.env = env
        self.observation_space = env.family.single_observation_space()
        self.action_space = _action_space(env)
        self.render_mode = render_mode
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
        self._action = torch.zeros((1, env.family.action_dim) if env.family.action_dim > 1 else (1,), dtype=torch.int32)
        self._needs_reset = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        task = options.pop("task", None)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; expected 'task'")
        if task is not None:
            obs = self.env.set_tasks(int(task))
        elif self._needs_reset or seed is not None:
            s = seed if seed is not None else int(self.np_random.integers(0, 2**63 - 1))
            obs = self.env.reset(seed=s)
        else:  # the next episode of the current trial
            obs = self.env.reset(torch.ones(1, dtype=torch.bool))
        self._needs_reset = False
        return _numpy(obs)[0], {"task": int(self.env.tasks[0]), "episode": int(self.env.episode[0])}

    def step(self, action):
        a = np.asarray(action)
        if self.env.family.action_dim == 1:
            if a.ndim != 0 or not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"action must be an integer scalar, got {action!r}")
            self._action[0] = int(a)
        else:
            if a.shape != (self.env.family.action_dim,) or not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"action must be {self.env.family.action_dim} integers, got {action!r}")
            self._action[0] = torch.from_numpy(a.astype(np.int32))
        r = self.env.step(self._action)
        reward = r.reward[0].numpy() if self.env.family.reward_dim > 1 else float(r.reward[0])
        info = {k: _numpy(v)[0].item() for k, v in r.info.items() if k != "final_obs"}
        return _numpy(r.obs)[0], reward, bool(r.terminated[0]), bool(r.truncated[0]), info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return _render_frames(self.env, [0])[0]
