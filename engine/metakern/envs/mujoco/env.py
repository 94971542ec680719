"""``MujocoBatchedEnv``: B MuJoCo environments, each in its own task, stepped together.

Functional API as for the gridworlds (``metakern.envs.core.BatchedEnv``): ``reset(mask)``,
``step(actions)`` returning a ``StepResult`` of torch tensors, ``set_tasks(params)``, with trials
of ``episodes_per_trial`` episodes in one task and the three gymnasium autoreset modes.

Per environment i, with ``seed`` s: the reset noise comes from ``np.random.default_rng(s + i)``,
drawn in gymnasium's order, so env i replays ``gymnasium.make("<Robot>-v5")`` reset with seed
``s + i`` (what ``SyncVectorEnv.reset(seed=s)`` does); tasks come from a second generator per env.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import core
from ..core import AutoresetMode, StepResult
from .robots import ROBOTS
from .sim import MjBatch, ModelFacts, compile_model, gymnasium_asset
from .tasks import RAND_PARAM_BASES, dynamics_fields, get_family

_TASK_STREAM = 0x7A5C


class MujocoBatchedEnv:
    """``num_envs`` MuJoCo environments of one task family.

    Args:
        task: family name (``metakern.envs.mujoco.task_families()``), e.g. ``"HalfCheetahVel"``.
        num_envs: B.
        preset: the paper whose task distribution and splits to use (per family; default shown
            by ``task_families()[task].default_preset``).
        split: ``"train"`` or ``"test"`` tasks of the preset (out-of-distribution for the
            dynamics families).
        num_tasks: draw a fixed pool of this many tasks once (from ``seed``) and sample trials
            from it (``info["task"]`` is the pool index); None: a fresh task every trial
            (``info["task"]`` is -1), or the preset's fixed list where it has one.
        seed: seeds reset noise (env i: ``seed + i``, as ``SyncVectorEnv``) and task draws.
        max_steps: time limit (truncation); default the family's (1000, v5's).
        episodes_per_trial: episodes played in one task before the next is drawn (VariBAD/LDM: 2).
        explore_episodes: the first ones of each trial are flagged ``info["explore"]`` (E-RL2).
        autoreset_mode: ``"next_step"``, ``"same_step"`` (``info["final_obs"]``) or ``"disabled"``.
        resample_tasks: draw a task at each new trial (else keep the one set by ``set_tasks``).
        num_threads: threads stepping the simulations (0: OpenMP's default, all cores).
        backend: ``"cpp"`` (threaded loop, default), ``"reference"`` (Python loop) or ``"warp"``
            (MuJoCo Warp on ``device``: the optional GPU path, float32; see ``warp_sim.py``).
        device: where the returned tensors live.
        obs_dtype: ``torch.float64`` (gymnasium's) or ``torch.float32``; rewards use it too.
        set_const: after changing masses or inertias, run ``mj_setConst`` (True, MuJoCo's
            documented requirement) or not (the legacy rand_param / DOMINO code's behaviour).
        terminate_when_unhealthy: override the family's default.
        reward_options: override reward weights (e.g. ``ctrl_cost_weight``, ``goal_radius``).
    """

    def __init__(
        self,
        task: str,
        num_envs: int,
        *,
        preset: str | None = None,
        split: str = "train",
        num_tasks: int | None = None,
        seed: int = 0,
        max_steps: int | None = None,
        episodes_per_trial: int = 1,
        explore_episodes: int = 0,
        autoreset_mode: Any = "next_step",
        resample_tasks: bool = True,
        num_threads: int = 0,
        backend: str | None = None,
        device: torch.device | str = "cpu",
        obs_dtype: torch.dtype = torch.float64,
        set_const: bool = True,
        terminate_when_unhealthy: bool | None = None,
        reward_options: dict[str, float] | None = None,
    ):
        if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if obs_dtype not in (torch.float64, torch.float32):
            raise ValueError(f"obs_dtype must be torch.float64 or torch.float32, got {obs_dtype!r}")
        if not isinstance(episodes_per_trial, int) or episodes_per_trial < 1:
            raise ValueError(f"episodes_per_trial must be a positive int, got {episodes_per_trial!r}")
        if not isinstance(explore_episodes, int) or not 0 <= explore_episodes <= episodes_per_trial:
            raise ValueError(f"explore_episodes must be an int in [0, {episodes_per_trial}], got {explore_episodes!r}")
        if backend is None:
            backend = "cpp"
        if backend not in ("cpp", "reference", "warp"):
            raise ValueError(f"backend must be None, 'cpp', 'reference' or 'warp', got {backend!r}")
        self.family = fam = get_family(task)
        self.task_name = fam.name
        self.preset_name = preset or fam.default_preset
        fam.preset(preset)  # validates the name
        self.split = split
        self.num_envs = B = num_envs
        self.device = torch.device(device)
        self.obs_dtype = obs_dtype
        self._np_dtype = np.float64 if obs_dtype == torch.float64 else np.float32
        self.episodes_per_trial = episodes_per_trial
        self.explore_episodes = explore_episodes
        self.autoreset_mode = core.autoreset_mode(autoreset_mode)
        self.resample_tasks = bool(resample_tasks)
        self.set_const = bool(set_const)
        self.terminate_when_unhealthy = (
            fam.terminate_when_unhealthy if terminate_when_unhealthy is None else bool(terminate_when_unhealthy)
        )
        self.reward_options = {**fam.reward_options, **(reward_options or {})}
        unknown = set(reward_options or {}) - set(fam.reward_options)
        if unknown:
            known = sorted(fam.reward_options)
            raise ValueError(f"unknown reward_options {sorted(unknown)} for {fam.name}; known: {known}")
        if max_steps is None:
            max_steps = fam.max_steps
        if not isinstance(max_steps, int) or max_steps < 0:
            raise ValueError(f"max_steps must be a non-negative int or None, got {max_steps!r}")
        self.max_steps = max_steps

        self.robot = robot = ROBOTS[fam.robot] if isinstance(fam.robot, str) else fam.robot
        self.sim = self._make_sim(robot, B, num_threads, backend)
        self._flush = getattr(self.sim, "flush", None)
        self.backend = backend
        self.dt = self.sim.dt
        self.act_dim = self.sim.nu
        self.action_low, self.action_high = self.sim.action_bounds()
        self._qpos0, self._qvel0 = self.sim.initial_state()
        self._base_fields = {f: self.sim.model_field(f) for f in dynamics_fields(fam.dynamics)}
        self._ctrl = np.zeros((B, self.act_dim))
        self._action_mask = np.ones((B, self.act_dim))
        self._body_mass = np.tile(self.sim.body_mass(), (B, 1)) if self.sim.has_body_mass else None

        self.task_dim = len(fam.reward_params) + (self.sim.dynamics_size(fam.dynamics))
        self.task_params = np.zeros((B, self.task_dim))
        self.task_index = np.full(B, -1, dtype=np.int64)
        self.num_tasks = num_tasks
        self._pool: np.ndarray | None = None
        self.seed = self._check_seed(seed)
        if num_tasks is not None and (not isinstance(num_tasks, int) or num_tasks < 1):
            raise ValueError(f"num_tasks must be a positive int or None, got {num_tasks!r}")
        self._elapsed = np.zeros(B, dtype=np.int64)
        self._episode = np.zeros(B, dtype=np.int32)
        self._needs_reset = np.zeros(B, dtype=bool)
        self._trial_pending = np.zeros(B, dtype=bool)
        self._position = None
        self._seed_generators()
        self._reset_all(draw=True)
        self.obs_dim = int(self._obs.shape[1])

    # -- construction helpers --------------------------------------------------------------------

    def _make_sim(self, robot, B, num_threads, backend):
        if hasattr(robot, "make_sim"):  # pure-numpy bodies (the point robot)
            if backend == "warp":
                raise ValueError(f"{self.family.name} has no MuJoCo model: backend='warp' does not apply (use 'cpp')")
            return robot.make_sim(B)
        model = compile_model(gymnasium_asset(robot.xml))
        if backend == "warp":
            from .warp_sim import WarpSim, warp_available

            why = warp_available()
            if why:
                raise RuntimeError(f"backend='warp' needs MuJoCo Warp: {why}")
            fields = dynamics_fields(self.family.dynamics)
            return WarpSim(model, B, robot, fields, "cuda" if self.device.type == "cuda" else "cpu")
        return _MjSim(model, B, robot, num_threads, backend)

    @staticmethod
    def _check_seed(seed: Any) -> int:
        if isinstance(seed, np.integer):
            seed = int(seed)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        return seed

    def reseed(self, seed: int) -> None:
        """Reseed every generator without resetting (``reset(seed=...)`` = ``reseed`` + reset)."""
        self.seed = self._check_seed(seed)
        self._seed_generators()

    def _seed_generators(self) -> None:
        B, s = self.num_envs, self.seed
        self._noise_rng = [np.random.default_rng(s + i) for i in range(B)]
        self._task_rng = [np.random.default_rng([s, i, _TASK_STREAM]) for i in range(B)]
        if self.num_tasks is not None:
            pool_rng = np.random.default_rng([s, _TASK_STREAM, 1])
            self._pool = self.family.sample(pool_rng, self.num_tasks, self.preset_name, self.split, self.sim.model_like)
        else:
            fixed = self.family.fixed_tasks(self.preset_name, self.split)
            self._pool = fixed if fixed is not None and self.family.dynamics is None else None

    # -- tasks -----------------------------------------------------------------------------------

    def _draw_task(self, i: int) -> None:
        rng = self._task_rng[i]
        if self._pool is not None:
            k = int(rng.integers(0, len(self._pool)))
            self.task_index[i], self.task_params[i] = k, self._pool[k]
        else:
            self.task_index[i] = -1
            self.task_params[i] = self.family.sample(rng, 1, self.preset_name, self.split, self.sim.model_like)[0]

    def _apply_dynamics(self, i: int) -> None:
        dyn = self.family.dynamics
        if dyn is None:
            return
        p = self.task_params[i, len(self.family.reward_params) :]
        base = self._base_fields
        if dyn.kind == "rand_params":
            off = 0
            for f in RAND_PARAM_BASES:
                n = base[f].size
                self.sim.set_model_field(i, f, base[f] * p[off : off + n].reshape(base[f].shape))
                off += n
        elif dyn.kind == "mass_damping":
            self.sim.set_model_field(i, "body_mass", base["body_mass"] * p[0])
            self.sim.set_model_field(i, "dof_damping", base["dof_damping"] * p[1])
        elif dyn.kind == "point_motor":
            self.sim.set_motor(i, p[0], p[1])
        else:  # cripple
            self.sim.set_model_field(i, "body_mass", base["body_mass"] * p[1])
            limb = int(p[0])
            if not 0 <= limb < len(dyn.limbs):
                raise ValueError(f"task {i}: limb {limb} out of range [0, {len(dyn.limbs)})")
            self._action_mask[i] = 1.0
            self._action_mask[i, list(dyn.limbs[limb])] = 0.0
        if self.set_const:
            self.sim.set_const(i)
        if self._body_mass is not None:
            self._body_mass[i] = self.sim.body_mass(i)

    def set_tasks(self, params: Any, mask: Any = None) -> torch.Tensor:
        """Play given tasks: ``params`` is ``[B, task_dim]`` (or ``[mask.sum(), task_dim]``, or one
        ``[task_dim]`` vector for all) of task parameters (see ``task_params_names``). Starts a new
        trial in those envs and returns every env's observation."""
        m = self._mask(mask)
        ids = np.arange(self.num_envs) if m is None else np.flatnonzero(m)
        p = np.asarray(params.cpu() if isinstance(params, torch.Tensor) else params, dtype=np.float64)
        if p.ndim == 1:
            p = np.broadcast_to(p, (len(ids), p.size))
        if p.shape != (len(ids), self.task_dim):
            want = f"({len(ids)}, {self.task_dim}) or ({self.task_dim},)"
            raise ValueError(f"task params must have shape {want}, got {p.shape}")
        if not np.isfinite(p).all():
            raise ValueError("task params must be finite")
        self.task_params[ids] = p
        self.task_index[ids] = -1
        for i in ids:
            self._reset_env(int(i), True, draw=False)
        return self._refresh_obs()

    @property
    def task_params_names(self) -> tuple[str, ...]:
        dyn = self.family.dynamics
        names = tuple(self.family.reward_params)
        if dyn is None:
            return names
        if dyn.kind == "mass_damping":
            return (*names, "mass_scale", "damping_scale")
        if dyn.kind == "cripple":
            return (*names, "crippled_limb", "mass_scale")
        if dyn.kind == "point_motor":
            return (*names, "motor_gain", "motor_rotation")
        sizes = {f: self._base_fields[f].size for f in self._base_fields}
        return names + tuple(f"{f}[{j}]" for f, n in sizes.items() for j in range(n))

    # -- reset / step ----------------------------------------------------------------------------

    def _mask(self, mask: Any) -> np.ndarray | None:
        if mask is None:
            return None
        m = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask)
        if m.dtype != np.bool_ or m.shape != (self.num_envs,):
            raise ValueError(f"mask must be a bool array of shape ({self.num_envs},), got {m.dtype} {m.shape}")
        return m

    def _reset_env(self, i: int, new_trial: bool, draw: bool | None = None) -> None:
        if new_trial:
            self._episode[i] = 0
            if self.resample_tasks if draw is None else draw:
                self._draw_task(i)
            self._apply_dynamics(i)
        qpos, qvel = self.robot.reset_state(self._noise_rng[i], self._qpos0, self._qvel0)
        self.sim.reset_state(i, qpos, qvel)
        self._elapsed[i] = 0
        self._needs_reset[i] = False
        self._trial_pending[i] = False

    def _reset_all(self, draw: bool) -> torch.Tensor:
        for i in range(self.num_envs):
            self._reset_env(i, True, draw)
        return self._refresh_obs()

    def _refresh_obs(self) -> torch.Tensor:
        if self._flush is not None:
            self._flush()
        self._position = self.robot.position(self.sim.out, self._body_mass)
        self._obs = self.robot.observation(self.sim.out)
        return self._tensor(self._obs)

    def reset(self, mask: Any = None, *, seed: int | None = None, new_trial: bool | None = None) -> torch.Tensor:
        """Start a new episode where ``mask`` (all by default) and return every env's observation.

        ``new_trial``: also start a new trial there (a new task when ``resample_tasks``). Default:
        True when resetting all envs; with a mask, True in the envs whose trial just ended (the
        last episode of the trial finished) and False elsewhere, so ``DISABLED`` mode keeps trial
        bookkeeping. ``seed`` reseeds every generator (env i's reset noise: ``seed + i``) and
        starts a new trial everywhere."""
        if seed is not None:
            self.reseed(seed)
            if mask is None:
                return self._reset_all(draw=self.resample_tasks)
            new_trial = True
        m = self._mask(mask)
        if m is None:
            if new_trial is False:
                for i in range(self.num_envs):
                    self._reset_env(i, False)
                return self._refresh_obs()
            return self._reset_all(draw=self.resample_tasks)
        for i in np.flatnonzero(m):
            nt = bool(self._trial_pending[i]) if new_trial is None else bool(new_trial)
            self._reset_env(int(i), nt)
        return self._refresh_obs()

    def observe(self) -> torch.Tensor:
        return self._tensor(self._obs)

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=self._np_dtype))
        return t if self.device.type == "cpu" else t.to(self.device)

    def _check_actions(self, actions: Any) -> tuple[np.ndarray, type]:
        """The actions as float64 ``[B, act_dim]``, and the dtype the control cost is summed in
        (the actions' own precision, as gymnasium does)."""
        a = actions.detach().cpu().numpy() if isinstance(actions, torch.Tensor) else np.asarray(actions)
        if a.shape != (self.num_envs, self.act_dim):
            raise ValueError(f"actions must have shape ({self.num_envs}, {self.act_dim}), got {a.shape}")
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise TypeError(f"actions must be real numbers, got dtype {a.dtype}")
        if not np.isfinite(a).all():
            raise ValueError("actions contain NaN or infinity")
        cost_dtype = np.float32 if a.dtype == np.float32 else np.float64
        return np.ascontiguousarray(a, dtype=np.float64), cost_dtype

    def step(self, actions: Any) -> StepResult:
        """Step every env with ``actions`` ``[B, act_dim]`` (torch or numpy). Out-of-range
        actions are passed on as gymnasium does (MuJoCo clamps the controls; the control cost
        sees the raw action)."""
        a, cost_dtype = self._check_actions(actions)
        B = self.num_envs
        mode = self.autoreset_mode
        pending = self._needs_reset.copy() if mode == AutoresetMode.NEXT_STEP else np.zeros(B, dtype=bool)
        if mode == AutoresetMode.DISABLED and self._needs_reset.any():
            bad = int(np.flatnonzero(self._needs_reset)[0])
            raise RuntimeError(f"env {bad} finished its episode: call reset(mask) first (autoreset_mode='disabled')")
        ctrl = a * self._action_mask if self.family.dynamics is not None else a
        active = None if not pending.any() else np.ascontiguousarray(~pending, dtype=np.uint8)
        before = self._position
        self.sim.step(ctrl, active)
        out = self.sim.out
        after = self.robot.position(out, self._body_mass)
        k = self.robot.kinematics(before, after, self.dt, ctrl.astype(cost_dtype, copy=False), out)
        reward, terms = self.family.reward(k, self.task_params, self.reward_options)
        obs = self.robot.observation(out)
        terminated = ~k.healthy if (self.robot.terminates and self.terminate_when_unhealthy) else np.zeros(B, bool)
        self._elapsed += 1
        truncated = (self._elapsed >= self.max_steps) & ~terminated if self.max_steps else np.zeros(B, bool)
        if pending.any():  # NEXT_STEP: these envs reset instead of stepping (a new trial if theirs ended)
            reward[pending] = 0.0
            terminated[pending] = False
            truncated[pending] = False
            for key in terms:
                terms[key][pending] = 0.0
            for i in np.flatnonzero(pending):
                self._reset_env(int(i), bool(self._trial_pending[i]))
        episode = self._episode.copy()
        task = self.task_index.copy()
        params = self.task_params.copy()
        done = terminated | truncated
        trial_done = done & (self._episode + 1 >= self.episodes_per_trial)
        explore = episode < self.explore_episodes
        self._episode[done & ~trial_done] += 1
        final_obs = None
        if mode == AutoresetMode.SAME_STEP and done.any():
            final_obs = obs.copy()
            for i in np.flatnonzero(done):
                self._reset_env(int(i), bool(trial_done[i]))
        trial_flags = trial_done.copy()
        self._needs_reset = done.copy() if mode != AutoresetMode.SAME_STEP else np.zeros(B, dtype=bool)
        self._trial_pending = trial_flags if mode != AutoresetMode.SAME_STEP else np.zeros(B, dtype=bool)
        if pending.any() or final_obs is not None:
            if self._flush is not None:
                self._flush()
            obs = self.robot.observation(out)
            after = self.robot.position(out, self._body_mass)
        self._position = after
        self._obs = obs
        info: dict[str, torch.Tensor] = {
            "task": torch.from_numpy(task),
            "task_params": torch.from_numpy(params),
            "episode": torch.from_numpy(episode),
            "explore": torch.from_numpy(explore),
            "trial_done": torch.from_numpy(trial_done),
            "x_velocity": torch.from_numpy(np.where(pending, 0.0, k.x_velocity)),
        }
        for key, v in terms.items():
            info[key] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64))
        if final_obs is not None:
            info["final_obs"] = self._tensor(final_obs)
        if self.device.type != "cpu":
            info = {key: v.to(self.device) for key, v in info.items()}
        return StepResult(
            self._tensor(obs),
            self._tensor(reward),
            torch.from_numpy(terminated).to(self.device),
            torch.from_numpy(truncated).to(self.device),
            info,
        )

    @property
    def episode(self) -> np.ndarray:
        """Episode index within the current trial, per env."""
        return self._episode.copy()


class _MjSim(ModelFacts):
    """The MuJoCo side of one env batch: an ``MjBatch`` plus the robot's model facts."""

    def __init__(self, model, B: int, robot, num_threads: int, backend: str):
        super().__init__(model, robot)
        self.batch = MjBatch(
            model,
            B,
            list(robot.fields),
            frame_skip=robot.frame_skip,
            post_constraint=robot.post_constraint,
            num_threads=num_threads,
            backend=backend,
        )
        self.out = self.batch.out

    def set_model_field(self, i, name, value):
        self.batch.set_model_field(i, name, value)

    def set_const(self, i):
        self.batch.set_const(i)

    def body_mass(self, i: int | None = None):
        m = self.model_like if i is None else self.batch.models[i]
        return m.body_mass.copy()

    def reset_state(self, i, qpos, qvel):
        self.batch.reset_state(i, qpos, qvel)

    def step(self, ctrl, active):
        self.batch.step(ctrl, active)
