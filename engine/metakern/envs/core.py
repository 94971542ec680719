"""The batched environment engine shared by every gridworld family.

A *family* (``Family`` subclass: Krazy World, mazes, GridNavi, tabular MDPs, IPD) describes its
rules: the per-environment state arrays, the task pool (tensors with a leading task dimension),
and a readable numpy reference of ``reset`` / ``step`` / ``observe`` for one environment. Its
compiled twin is a C++ struct (``cpp/envs/<family>.h``) run by the shared driver
(``cpp/envs/env_driver.h``) on the CPU (OpenMP) and on CUDA (one thread per environment).

``BatchedEnv`` is the torch-native functional API over any family: state and tasks are tensors on
the env's device, ``reset(mask)``, ``step(actions)`` and ``set_tasks(...)`` never copy to the host
(except on the reference backend, and to raise errors on the CPU). Everything common to all
families lives in the driver and in ``_reference_step`` below, which the compiled backends must
match exactly: the time limit, trials of several episodes in one task (``episodes_per_trial``),
the explore/exploit mask of E-RL2 (``explore_episodes``), the task drawn for each new trial, the
three gymnasium autoreset modes and the ``prev_action`` / ``prev_reward`` / ``new_episode`` inputs
of recurrent agents.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch

from .. import _backend

# ---------------------------------------------------------------------------------------------------
# Counter-based random numbers (bit-identical to cpp/envs/env_driver.h)

_M64 = (1 << 64) - 1
STREAM_TASK, STREAM_STEP, STREAM_RESET = 1, 2, 3


def mix64(x: int) -> int:
    """splitmix64's finaliser on a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def rng_key(seed: int, env: int, counter: int, stream: int) -> int:
    """64 random bits for (seed, environment, counter, stream)."""
    return mix64((mix64((mix64(seed ^ ((stream * 0xD1B54A32D192ED03) & _M64)) + env) & _M64) + counter) & _M64)


def rng_below(bits: int, n: int) -> int:
    """Uniform integer in [0, n) from 64 random bits."""
    return ((bits >> 32) * n) >> 32


def rng_unit(bits: int) -> np.float32:
    """Uniform float32 in [0, 1) with 24 random bits."""
    return np.float32(bits >> 40) * np.float32(1.0 / 16777216.0)


class AutoresetMode(enum.IntEnum):
    """The gymnasium autoreset modes, as the driver numbers them."""

    NEXT_STEP = 0
    SAME_STEP = 1
    DISABLED = 2


def autoreset_mode(value: Any) -> AutoresetMode:
    """Accept an ``AutoresetMode``, gymnasium's ``AutoresetMode`` or a name such as ``"next_step"``."""
    if isinstance(value, AutoresetMode):
        return value
    name = getattr(value, "name", value)
    if isinstance(name, str):
        key = name.replace("-", "_").upper()
        aliases = {"NEXTSTEP": "NEXT_STEP", "SAMESTEP": "SAME_STEP"}
        key = aliases.get(key, key)
        if key in AutoresetMode.__members__:
            return AutoresetMode[key]
    raise ValueError(f"autoreset_mode must be one of next_step, same_step, disabled; got {value!r}")


RUNNING, PENDING_RESET, FINISHED = 0, 1, 2

# ---------------------------------------------------------------------------------------------------
# Families


@dataclass(frozen=True)
class StateSpec:
    """One per-environment state array: shape after the batch dimension, and dtype."""

    shape: tuple[int, ...]
    dtype: torch.dtype


class Family:
    """Rules of one environment family. Subclasses set the class attributes and implement the
    ``ref_*`` methods (numpy, one environment) and ``kernel_args``.

    The reference methods receive ``S`` (a namespace of the per-environment state as numpy arrays
    of shape ``[B, ...]``; write into them), ``P`` (the task pool as numpy arrays ``[P, ...]``),
    the environment index ``i`` and its task index.
    """

    name: ClassVar[str]  # prefix of the compiled functions: _C.<name>_step, _reset, _observe
    num_actions: int
    action_dim: int = 1
    reward_dim: int = 1
    obs_shape: tuple[int, ...]
    obs_dtype: torch.dtype

    def state_spec(self) -> dict[str, StateSpec]:
        raise NotImplementedError

    def pool(self) -> dict[str, torch.Tensor]:
        """The task pool: tensors with a leading task dimension (all the same length)."""
        raise NotImplementedError

    def num_tasks(self) -> int:
        return int(next(iter(self.pool().values())).shape[0])

    def to(self, device: torch.device) -> None:
        """Move the task pool to ``device``."""
        raise NotImplementedError

    def kernel_args(self, state: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], list[int], list[float]]:
        """(tensors whose data pointers the C++ ``from_args`` takes, ints, floats), in its order."""
        raise NotImplementedError

    # numpy reference of one environment
    def ref_reset(self, S: SimpleNamespace, P: SimpleNamespace, i: int, task: int, rng: int) -> None:
        raise NotImplementedError

    def ref_step(
        self,
        S: SimpleNamespace,
        P: SimpleNamespace,
        i: int,
        task: int,
        action: np.ndarray,
        reward: np.ndarray,
        rng: int,
    ) -> bool:
        """Step environment i; write the reward(s) into ``reward`` (float32); return terminated."""
        raise NotImplementedError

    def ref_observe(
        self, S: SimpleNamespace, P: SimpleNamespace, i: int, task: int, out: np.ndarray, ctx: SimpleNamespace
    ) -> None:
        """Write environment i's observation into ``out``; ``ctx`` has prev_action, prev_reward,
        new_episode, episode and t (as in the C++ ``EnvCtx``)."""
        raise NotImplementedError

    # gymnasium and rendering
    def single_observation_space(self):
        """The gymnasium space of one environment's observation."""
        raise NotImplementedError

    def render_rgb(self, S: SimpleNamespace, P: SimpleNamespace, i: int, task: int) -> np.ndarray:
        """An RGB picture (uint8 [H, W, 3]) of environment i, for ``render_mode="rgb_array"``."""
        raise NotImplementedError


def split_family_kwargs(family_cls: type, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a factory's keyword arguments into those of ``family_cls.__init__`` and the rest (which
    go to ``BatchedEnv``), so that a family's defaults are written once, in its constructor."""
    import inspect

    names = set(inspect.signature(family_cls.__init__).parameters) - {"self"}
    family = {k: v for k, v in kwargs.items() if k in names}
    return family, {k: v for k, v in kwargs.items() if k not in names}


# ---------------------------------------------------------------------------------------------------
# The functional API

_BK_FIELDS = (
    ("t", torch.int32),
    ("episode", torch.int32),
    ("task", torch.int32),
    ("trial", torch.int64),
    ("counter", torch.int64),
    ("status", torch.uint8),
    ("prev_action", torch.int32),
    ("prev_reward", torch.float32),
    ("new_episode", torch.uint8),
)


@dataclass
class StepResult:
    """What ``BatchedEnv.step`` returns; unpacks as ``obs, reward, terminated, truncated, info``.

    ``info`` holds ``episode`` (episode index of the step within its trial), ``explore`` (the step
    belonged to an exploratory episode), ``trial_done`` (the episode that ended was the last of
    its trial), ``task`` (the task index the step was played in) and, in SAME_STEP mode,
    ``final_obs`` (the last observation of the episodes that ended; other rows are unspecified).
    """

    obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    info: dict[str, torch.Tensor]

    def __iter__(self):
        return iter((self.obs, self.reward, self.terminated, self.truncated, self.info))


class BatchedEnv:
    """``num_envs`` environments of one family, stepped together as torch tensors on ``device``.

    Args:
        family: the rules and task pool (a ``Family``).
        num_envs: batch size B.
        device: where state, tasks and outputs live. CPU tensors run the C++ kernel, CUDA tensors
            the CUDA kernel (``metakern.use_backend`` or ``backend=`` can force ``reference``).
        max_steps: time limit per episode (truncation); 0 or None for none.
        episodes_per_trial: episodes played in the same task before a new trial starts.
        explore_episodes: the first ``explore_episodes`` episodes of each trial are exploratory
            (``info["explore"]``; E-RL2 drops their rewards from the objective).
        autoreset_mode: ``"next_step"`` (default, gymnasium's), ``"same_step"`` (terminal
            observation in ``info["final_obs"]``) or ``"disabled"`` (call ``reset(mask)``).
        resample_tasks: at the start of each trial, draw the task uniformly from
            ``task_range`` (default: the whole pool); if False a task stays until ``set_tasks``.
        seed: seeds the task draws and any in-step randomness (counter-based: reproducible
            regardless of device and batch layout).
        backend: force ``"reference"``, ``"cpp"`` or ``"cuda"``; default: ``metakern.use_backend``.
    """

    def __init__(
        self,
        family: Family,
        num_envs: int,
        *,
        device: torch.device | str = "cpu",
        max_steps: int | None = None,
        episodes_per_trial: int = 1,
        explore_episodes: int = 0,
        autoreset_mode: Any = "next_step",
        resample_tasks: bool = True,
        task_range: tuple[int, int] | None = None,
        seed: int = 0,
        backend: str | None = None,
    ):
        if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if num_envs >= 2**31:
            raise ValueError(f"num_envs must be below 2**31, got {num_envs}")
        if max_steps is None:
            max_steps = 0
        if not isinstance(max_steps, int) or max_steps < 0:
            raise ValueError(f"max_steps must be a non-negative int or None, got {max_steps!r}")
        if not isinstance(episodes_per_trial, int) or episodes_per_trial < 1:
            raise ValueError(f"episodes_per_trial must be a positive int, got {episodes_per_trial!r}")
        if not isinstance(explore_episodes, int) or not 0 <= explore_episodes <= episodes_per_trial:
            raise ValueError(
                f"explore_episodes must be an int in [0, episodes_per_trial={episodes_per_trial}], "
                f"got {explore_episodes!r}"
            )
        if backend is not None and backend not in ("reference", "cpp", "cuda"):
            raise ValueError(f"backend must be None, 'reference', 'cpp' or 'cuda', got {backend!r}")
        self.family = family
        self.num_envs = num_envs
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.max_steps = max_steps
        self.episodes_per_trial = episodes_per_trial
        self.explore_episodes = explore_episodes
        self.autoreset_mode = autoreset_mode_value = globals()["autoreset_mode"](autoreset_mode)
        self._autoreset = int(autoreset_mode_value)
        self.resample_tasks = bool(resample_tasks)
        self._backend = backend
        self._auto_cpu: str | None = None
        family.to(self.device)
        self._set_task_range(task_range)
        self.seed = self._check_seed(seed)
        B = num_envs
        self.state = {
            k: torch.zeros((B, *s.shape), dtype=s.dtype, device=self.device) for k, s in family.state_spec().items()
        }
        self.bk = {k: torch.zeros(B, dtype=dt, device=self.device) for k, dt in _BK_FIELDS}
        self.bk["prev_action"].fill_(-1)
        self._errors = torch.zeros(2, dtype=torch.int64, device=self.device)
        self._err_pending = False
        if self.device.type == "cuda":
            self._err_host = torch.zeros(2, dtype=torch.int64).pin_memory()
            self._err_event = torch.cuda.Event()
        self._cache_args()
        self.reset(new_trial=True)

    # -- configuration ---------------------------------------------------------------------------

    @staticmethod
    def _check_seed(seed: Any) -> int:
        if isinstance(seed, (np.integer,)):
            seed = int(seed)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        return seed & _M64

    def _set_task_range(self, task_range: tuple[int, int] | None) -> None:
        n = self.family.num_tasks()
        if n < 1:
            raise ValueError("the task pool is empty")
        if task_range is None:
            task_range = (0, n)
        lo, hi = (int(v) for v in task_range)
        if not 0 <= lo < hi <= n:
            raise ValueError(f"task_range must satisfy 0 <= lo < hi <= {n} (the pool size), got {task_range!r}")
        self.task_range = (lo, hi)

    def _cache_args(self) -> None:
        tensors, ints, floats = self.family.kernel_args(self.state)
        self._fam = ([t.data_ptr() for t in tensors], list(ints), [float(f) for f in floats])
        self._bkp = [self.bk[k].data_ptr() for k, _ in _BK_FIELDS]
        fam = self.family
        self._action_shape = torch.Size((self.num_envs,) if fam.action_dim == 1 else (self.num_envs, fam.action_dim))
        self._reward_shape = (self.num_envs,) if fam.reward_dim == 1 else (self.num_envs, fam.reward_dim)
        self._obs_np_shape = (self.num_envs, *fam.obs_shape)
        self._obs_np_dtype = torch.empty(0, dtype=fam.obs_dtype).numpy().dtype
        self._task_np = self.bk["task"].numpy() if self.device.type == "cpu" else None
        self._fns: dict[tuple[str, str], Any] = {}
        self._cfg = [
            self.num_envs,
            self.max_steps,
            self.episodes_per_trial,
            self.explore_episodes,
            self._autoreset,
            self.task_range[0],
            self.task_range[1],
            int(self.resample_tasks),
            torch.get_num_threads(),  # refreshed on every compiled call
        ]

    @property
    def num_actions(self) -> int:
        return self.family.num_actions

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return tuple(self.family.obs_shape)

    @property
    def tasks(self) -> torch.Tensor:
        """The current task index of every environment (a view; do not write)."""
        return self.bk["task"]

    @property
    def episode(self) -> torch.Tensor:
        """Episode index within the current trial, per environment."""
        return self.bk["episode"]

    @property
    def prev_action(self) -> torch.Tensor:
        """Last action (first component) per environment; -1 at the start of a trial."""
        return self.bk["prev_action"]

    @property
    def prev_reward(self) -> torch.Tensor:
        """Last reward (first component) per environment; 0 at the start of a trial."""
        return self.bk["prev_reward"]

    @property
    def new_episode(self) -> torch.Tensor:
        """1 where the current observation is the first of an episode."""
        return self.bk["new_episode"]

    def explore_mask(self) -> torch.Tensor:
        """True where the current episode is exploratory (index < explore_episodes)."""
        return self.bk["episode"] < self.explore_episodes

    # -- backend ---------------------------------------------------------------------------------

    def backend(self) -> str:
        """The backend the next call will use."""
        if self._backend is None and self.device.type == "cpu" and _backend.current_backend() == "auto":
            if self._auto_cpu is None:
                self._auto_cpu = _backend.select(f"envs.{self.family.name}", "cpu")
            return self._auto_cpu
        if self._backend is not None:
            reason = _backend.unavailable_reason(self._backend, self.device.type)
            if reason is not None:
                raise RuntimeError(f"metakern.envs: backend {self._backend!r} cannot run here: {reason}")
            return self._backend
        return _backend.select(f"envs.{self.family.name}", self.device.type)

    def _module(self, backend: str):
        module = _backend.cpp_module() if backend == "cpp" else _backend.cuda_module()
        if not hasattr(module, f"{self.family.name}_step"):
            raise RuntimeError(
                f"metakern.envs: the {backend} module has no {self.family.name} kernel (rebuild metakern)"
            )
        return module

    def _stream_args(self) -> tuple[int, int]:
        return self.device.index, torch.cuda.current_stream(self.device).cuda_stream

    # -- API -------------------------------------------------------------------------------------

    def _new_obs(self) -> torch.Tensor:
        return torch.empty((self.num_envs, *self.family.obs_shape), dtype=self.family.obs_dtype, device=self.device)

    def _check_mask(self, mask: Any) -> torch.Tensor | None:
        if mask is None:
            return None
        if isinstance(mask, np.ndarray):
            mask = torch.from_numpy(mask)
        if not isinstance(mask, torch.Tensor):
            raise TypeError(
                f"mask must be a bool tensor or array of shape ({self.num_envs},), got {type(mask).__name__}"
            )
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must have dtype bool, got {mask.dtype}")
        if mask.device.type == "meta":
            raise ValueError("mask is a meta tensor (it holds no values): pass a bool tensor with data")
        if tuple(mask.shape) != (self.num_envs,):
            raise ValueError(f"mask must have shape ({self.num_envs},), got {tuple(mask.shape)}")
        return mask.to(self.device).contiguous().view(torch.uint8)

    def reset(self, mask: Any = None, *, seed: int | None = None, new_trial: bool | None = None) -> torch.Tensor:
        """Start a new episode in the environments where ``mask`` is True (all by default) and
        return the observation of every environment.

        ``new_trial`` (default: True when resetting all environments, else False) also restarts
        the trial: episode index 0, the task drawn afresh when ``resample_tasks``, counters zeroed.
        ``seed`` replaces the env's seed first (and implies ``new_trial``).
        """
        if seed is not None:
            self.seed = self._check_seed(seed)
            new_trial = True
        m = self._check_mask(mask)
        if new_trial is None:
            new_trial = m is None
        obs = self._new_obs()
        backend = self.backend()
        if backend == "reference":
            self._reference_observe(obs)
            self._reference_reset(m, bool(new_trial), obs)
            return obs
        # unmasked rows of obs must hold the current observation: observe first, then reset
        if m is not None:
            self._call(backend, "observe", obs.data_ptr())
        self._call(backend, "reset", 0 if m is None else m.data_ptr(), bool(new_trial), obs.data_ptr())
        return obs

    def observe(self) -> torch.Tensor:
        """The current observation of every environment (no state change)."""
        obs = self._new_obs()
        backend = self.backend()
        if backend == "reference":
            self._reference_observe(obs)
        else:
            self._call(backend, "observe", obs.data_ptr())
        return obs

    def set_tasks(self, tasks: Any, mask: Any = None) -> torch.Tensor:
        """Give environments new tasks (indices into the family's task pool) and start a new trial
        in them. ``tasks``: an int, or an int tensor of shape (B,) (or (mask.sum(),) with ``mask``).
        Returns the observation of every environment."""
        m = self._check_mask(mask)
        if tasks is None or isinstance(tasks, (str, bytes)):
            raise TypeError(f"tasks must be an int or an integer tensor, got {type(tasks).__name__}")
        if isinstance(tasks, torch.Tensor) and tasks.device.type == "meta":
            raise ValueError("tasks is a meta tensor (it holds no values): pass task ids with data")
        idx = torch.as_tensor(tasks, device=self.device)
        if idx.dtype.is_floating_point or idx.dtype == torch.bool or idx.is_complex():
            raise TypeError(f"tasks must be integers, got dtype {idx.dtype}")
        n = self.family.num_tasks()
        if idx.numel() > 0:
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= n:
                bad = lo if lo < 0 else hi
                raise ValueError(f"unknown task id {bad}: the task pool holds tasks 0..{n - 1}")
        selected = self.num_envs if m is None else int(m.sum())
        if idx.dim() == 0:
            idx = idx.expand(selected)
        if tuple(idx.shape) != (selected,):
            raise ValueError(f"tasks must be a scalar or have shape ({selected},), got {tuple(idx.shape)}")
        if m is None:
            self.bk["task"].copy_(idx.to(torch.int32))
        else:
            self.bk["task"][m.bool()] = idx.to(torch.int32)
        saved = self.resample_tasks
        self._cfg[7] = 0  # the new trial keeps the task just set
        try:
            return self.reset(None if mask is None else mask, new_trial=True)
        finally:
            self._cfg[7] = int(saved)

    def step(self, actions: Any) -> StepResult:
        """Step every environment with ``actions``: an integer tensor of shape (B,) (or (B, 2) for
        two-agent families) on the env's device. Returns ``StepResult``."""
        if self._err_pending:
            self._pending_verdict()
        a = self._check_actions(actions)
        B = self.num_envs
        dev = self.device
        if dev.type == "cpu":
            # per-call cost matters at small B: numpy allocates and torch wraps it in half the time
            # torch.empty takes to parse its keyword arguments
            obs = torch.from_numpy(np.empty(self._obs_np_shape, self._obs_np_dtype))
            reward = torch.from_numpy(np.empty(self._reward_shape, np.float32))
            terminated, truncated, trial_done, explore = (torch.from_numpy(np.empty(B, np.bool_)) for _ in range(4))
            episode = torch.from_numpy(np.empty(B, np.int32))
            task = torch.from_numpy(self._task_np.copy())
        else:
            obs = self._new_obs()
            reward = torch.empty(self._reward_shape, device=dev)
            terminated, truncated, trial_done, explore = torch.empty((4, B), dtype=torch.bool, device=dev).unbind(0)
            episode = torch.empty(B, dtype=torch.int32, device=dev)
            task = self.bk["task"].clone()
        final_obs = self._new_obs() if self._autoreset == AutoresetMode.SAME_STEP else None
        outs = (obs, reward, terminated, truncated, trial_done, explore, episode, final_obs)
        backend = self.backend()
        if backend == "reference":
            self._reference_step(a, outs)
        else:
            ptrs = [t.data_ptr() for t in outs[:7]] + [0 if final_obs is None else final_obs.data_ptr()]
            self._call(backend, "step", a.data_ptr(), ptrs, self._errors.data_ptr())
            self._raise_errors(backend, a)
        info = {"episode": episode, "explore": explore, "trial_done": trial_done, "task": task}
        if final_obs is not None:
            info["final_obs"] = final_obs
        return StepResult(obs, reward, terminated, truncated, info)

    # -- validation ------------------------------------------------------------------------------

    def _check_actions(self, actions: Any) -> torch.Tensor:
        if (
            type(actions) is torch.Tensor
            and actions.dtype == torch.int32
            and actions.shape == self._action_shape
            and actions.device == self.device
            and actions.is_contiguous()
        ):
            return actions  # the common case, checked cheaply; values are checked by the kernel
        fam = self.family
        shape = (self.num_envs,) if fam.action_dim == 1 else (self.num_envs, fam.action_dim)
        if isinstance(actions, np.ndarray):
            actions = torch.from_numpy(actions)
        if not isinstance(actions, torch.Tensor):
            raise TypeError(f"actions must be an integer tensor of shape {shape}, got {type(actions).__name__}")
        if actions.dtype not in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"actions must have an integer dtype, got {actions.dtype}")
        if tuple(actions.shape) != shape:
            raise ValueError(f"actions must have shape {shape}, got {tuple(actions.shape)}")
        if actions.device != self.device:
            raise ValueError(f"actions are on {actions.device}, the env is on {self.device}")
        if actions.dtype == torch.int64:
            # values outside int32 become -1 before narrowing, so that 2**32 + 1 cannot wrap to a valid
            # action: the kernel then rejects them like any other out-of-range action
            actions = torch.where((actions < 0) | (actions > 2**31 - 1), -1, actions)
        return actions.to(torch.int32).contiguous()

    def _bad_action_message(self, actions: torch.Tensor) -> str:
        a = actions.reshape(self.num_envs, -1)
        bad = ((a < 0) | (a >= self.family.num_actions)).any(dim=1).nonzero()
        i = int(bad[0]) if bad.numel() else -1
        value = a[i].tolist() if i >= 0 else "?"
        return (
            f"action out of range for env {i}: {value} (valid actions are 0..{self.family.num_actions - 1}); "
            "no environment was stepped"
        )

    def _raise_errors(self, backend: str, actions: torch.Tensor) -> None:
        if backend == "cuda":
            # No host round trip: the kernel's verdict is copied to pinned memory behind the step,
            # and read by the next call (or by check_errors(), which waits for it). A rejected call
            # stepped no environment, so the env stays consistent until the error is raised.
            self._err_host.copy_(self._errors, non_blocking=True)
            self._err_event.record()
            self._err_pending = True
            return
        bad, fin = (int(v) - 1 for v in self._errors.tolist())  # the kernel writes index + 1, 0 for none
        self._verdict(bad, fin, actions)

    def check_errors(self) -> None:
        """On CUDA, wait for the verdict of the last step and raise if it rejected its input (the
        CPU backends raise from ``step`` itself; CUDA ones raise from the next call, or here)."""
        if self._err_pending:
            self._err_event.synchronize()
            self._pending_verdict()

    def _pending_verdict(self) -> None:
        if self._err_pending and self._err_event.query():
            self._err_pending = False
            bad, fin = (int(v) for v in self._err_host.tolist())  # -1: none, else the env index
            self._verdict(bad, fin, None)

    def _verdict(self, bad: int, finished: int, actions: torch.Tensor | None) -> None:
        """Raise for the first env with a bad action (``bad`` >= 0) or stepped after its episode ended
        with autoreset disabled (``finished`` >= 0). ``actions`` is None when the verdict is read
        after the call that was rejected (CUDA)."""
        when = "" if actions is not None else " in an earlier step"
        if bad >= 0:
            if actions is not None:
                raise ValueError(self._bad_action_message(actions))
            raise ValueError(
                f"action out of range for env {bad}{when} (valid actions are 0..{self.family.num_actions - 1}); "
                "that step stepped no environment"
            )
        if finished >= 0:
            raise RuntimeError(
                f"env {finished}'s episode ended{when} and autoreset is disabled: call reset(mask) on it before "
                "stepping it again (no environment was stepped)"
            )

    # -- compiled calls --------------------------------------------------------------------------

    def _call(self, backend: str, what: str, *args) -> None:
        fn = self._fns.get((backend, what))
        if fn is None:
            fn = self._fns[(backend, what)] = getattr(self._module(backend), f"{self.family.name}_{what}")
        fp, fi, ff = self._fam
        self._cfg[8] = torch.get_num_threads()
        extra = self._stream_args() if backend == "cuda" else ()
        fn(fp, fi, ff, self._bkp, self._cfg, self.seed, *args, *extra)

    # -- numpy reference of the driver (cpp/envs/env_driver.h) -----------------------------------

    def _numpy_views(self):
        S = SimpleNamespace(**{k: v.cpu().numpy() for k, v in self.state.items()})
        bk = SimpleNamespace(**{k: v.cpu().numpy() for k, v in self.bk.items()})
        P = SimpleNamespace(**{k: v.cpu().numpy() for k, v in self.family.pool().items()})
        return S, bk, P

    def _writeback(self, S, bk) -> None:
        if self.device.type != "cpu":
            for k, v in self.state.items():
                v.copy_(torch.from_numpy(getattr(S, k)))
            for k, v in self.bk.items():
                v.copy_(torch.from_numpy(getattr(bk, k)))

    def _ref_obs(self, S, bk, P, i: int, out: np.ndarray) -> None:
        ctx = SimpleNamespace(
            prev_action=int(bk.prev_action[i]),
            prev_reward=np.float32(bk.prev_reward[i]),
            new_episode=int(bk.new_episode[i]),
            episode=int(bk.episode[i]),
            t=int(bk.t[i]),
        )
        self.family.ref_observe(S, P, i, int(bk.task[i]), out, ctx)

    def _ref_begin_episode(self, S, bk, P, i: int) -> None:
        bk.t[i] = 0
        bk.new_episode[i] = 1
        bk.status[i] = RUNNING
        self.family.ref_reset(S, P, i, int(bk.task[i]), rng_key(self.seed, i, int(bk.counter[i]), STREAM_RESET))

    def _ref_draw_task(self, i: int, trial: int) -> int:
        lo, hi = self.task_range
        return lo + rng_below(rng_key(self.seed, i, trial, STREAM_TASK), hi - lo)

    def _reference_reset(self, mask: torch.Tensor | None, new_trial: bool, obs: torch.Tensor) -> None:
        S, bk, P = self._numpy_views()
        o = obs.cpu().numpy().copy()
        m = None if mask is None else mask.cpu().numpy()
        resample = bool(self._cfg[7])
        for i in range(self.num_envs):
            if m is not None and not m[i]:
                continue
            if new_trial:
                bk.trial[i] = 0
                bk.counter[i] = 0
                bk.episode[i] = 0
                bk.prev_action[i] = -1
                bk.prev_reward[i] = 0.0
                if resample:
                    bk.task[i] = self._ref_draw_task(i, 0)
            self._ref_begin_episode(S, bk, P, i)
            self._ref_obs(S, bk, P, i, o[i])
        self._writeback(S, bk)
        obs.copy_(torch.from_numpy(o))

    def _reference_observe(self, obs: torch.Tensor) -> None:
        S, bk, P = self._numpy_views()
        o = np.empty(obs.shape, dtype=self._obs_np_dtype)
        for i in range(self.num_envs):
            self._ref_obs(S, bk, P, i, o[i])
        obs.copy_(torch.from_numpy(o))

    def _reference_step(self, actions: torch.Tensor, outs) -> None:
        obs_t, reward_t, term_t, trunc_t, trial_t, explore_t, episode_t, final_t = outs
        fam = self.family
        a = actions.cpu().numpy().reshape(self.num_envs, fam.action_dim)
        S, bk, P = self._numpy_views()
        bad = ((a < 0) | (a >= fam.num_actions)).any(axis=1)
        finished = bk.status == FINISHED
        first = lambda flags: int(np.argmax(flags)) if flags.any() else -1  # noqa: E731
        self._verdict(first(bad), first(finished), actions.cpu())
        np_dtype = self._obs_np_dtype
        B = self.num_envs
        obs = np.zeros(obs_t.shape, dtype=np_dtype)
        final = np.zeros(obs_t.shape, dtype=np_dtype) if final_t is not None else None
        reward = np.zeros((B, fam.reward_dim), dtype=np.float32)
        term = np.zeros(B, dtype=bool)
        trunc = np.zeros(B, dtype=bool)
        trial_done = np.zeros(B, dtype=bool)
        explore = np.zeros(B, dtype=bool)
        episode = np.zeros(B, dtype=np.int32)
        mode = self._autoreset
        resample = bool(self._cfg[7])
        for i in range(B):
            episode[i] = bk.episode[i]
            explore[i] = bk.episode[i] < self.explore_episodes
            if bk.status[i] == PENDING_RESET:  # NEXT_STEP: this call resets instead of stepping
                self._ref_begin_episode(S, bk, P, i)
                self._ref_obs(S, bk, P, i, obs[i])
                continue
            key = rng_key(self.seed, i, int(bk.counter[i]), STREAM_STEP)
            term[i] = bool(fam.ref_step(S, P, i, int(bk.task[i]), a[i], reward[i], key))
            bk.counter[i] += 1
            bk.t[i] += 1
            bk.prev_action[i] = a[i, 0]
            bk.prev_reward[i] = reward[i, 0]
            bk.new_episode[i] = 0
            trunc[i] = not term[i] and self.max_steps > 0 and bk.t[i] >= self.max_steps
            if not (term[i] or trunc[i]):
                self._ref_obs(S, bk, P, i, obs[i])
                continue
            if mode != AutoresetMode.SAME_STEP:
                self._ref_obs(S, bk, P, i, obs[i])
            else:
                self._ref_obs(S, bk, P, i, final[i])
            bk.episode[i] += 1
            if bk.episode[i] >= self.episodes_per_trial:
                trial_done[i] = True
                bk.episode[i] = 0
                bk.trial[i] += 1
                bk.prev_action[i] = -1
                bk.prev_reward[i] = 0.0
                if resample:
                    bk.task[i] = self._ref_draw_task(i, int(bk.trial[i]))
            if mode == AutoresetMode.SAME_STEP:
                self._ref_begin_episode(S, bk, P, i)
                self._ref_obs(S, bk, P, i, obs[i])
            else:
                bk.status[i] = PENDING_RESET if mode == AutoresetMode.NEXT_STEP else FINISHED
        self._writeback(S, bk)
        obs_t.copy_(torch.from_numpy(obs))
        reward_t.copy_(torch.from_numpy(reward.reshape(reward_t.shape)))
        term_t.copy_(torch.from_numpy(term))
        trunc_t.copy_(torch.from_numpy(trunc))
        trial_t.copy_(torch.from_numpy(trial_done))
        explore_t.copy_(torch.from_numpy(explore))
        episode_t.copy_(torch.from_numpy(episode))
        if final_t is not None:
            final_t.copy_(torch.from_numpy(final))
