"""The Harlow task (MetODS, Chalvidal et al. NeurIPS 2022): one-shot learning of which object pays.

Harlow (1949) showed monkeys pairs of objects, one hiding food, for a few trials per pair; after
hundreds of pairs they picked the rewarded object from the second trial of a new pair on: a
"learning set", learning to learn. Wang et al. (2018) made it a meta-RL benchmark for recurrent
agents, and MetODS (Chalvidal et al. 2022) a small one: "5 presentations of 2 values on a 1-D line,
positions randomly permuted; one value rewarded +, the other -; fixation periods between trials",
solved with N = 20 neurons. That sentence is all the paper gives; the rest below is **our reading**
of it.

Task: two objects, each a scalar value in ``[value_low, value_high]`` (default [0.1, 1.0]), at least
``min_gap`` (0.2) apart; object *a* is rewarded, object *b* punished. The pair is drawn uniformly
from ``{(x, y): value_low <= x < y <= value_high, y - x >= min_gap}`` and a fair coin picks which of
the two is *a*, so the value itself says nothing about the reward: an agent has to find out by
trying and remember.

Episode: ``presentations`` (5) presentations of the pair; each is ``fixation_steps`` (1) fixation
steps followed by one choice step, so an episode lasts ``presentations * (fixation_steps + 1)``
steps (10) and terminates (``terminated=True``) after its last choice step. Observation (float32,
``1 + width``): ``[fixation_cue, line[0], ..., line[width - 1]]``.

* Fixation step: ``[1, 0, ..., 0]``; every action is allowed and pays 0.
* Choice step: ``[0, line]`` with a's value at cell ``pa``, b's at cell ``pb`` and 0 elsewhere
  (``pa != pb``, uniform over the ``width * (width - 1)`` ordered placements, drawn afresh for every
  presentation). Actions ``0 .. width - 1`` pick a cell: ``+reward`` (1) at ``pa``, ``-reward`` at
  ``pb``, ``empty_reward`` (0) at an empty cell (``width > 2``).
* After the last choice step the terminal observation is the fixation screen ``[1, 0, ..., 0]``.

With the defaults, a policy that remembers the first outcome earns ``0 + 4 = 4`` in expectation
(its first choice is a coin flip, the four others are right); any memoryless policy earns 0 in
expectation, whatever it makes of the values (the coin makes a and b exchangeable).

Randomness. Placements use the driver's counter-based bits: reset draws the first presentation's
placement, the step that enters the choice step of a later presentation draws that one's (cell
``pa = rng_below(rng, width)`` from the top 32 bits, ``q = rng_below(rng << 32, width - 1)`` from
the low 32, ``pb = q + (q >= pa)``). The task pool (``num_tasks`` pairs: 10000 for ``split="train"``,
1000 for ``"test"``) is a pure function of ``(task_seed, split, task index)``: counter-based hashes,
vectorized in numpy, the same on every machine and whatever the pool length; train and test draw
from different hash streams. Trials: the driver draws a new pair for every trial; the default
``episodes_per_trial=1`` makes one episode one pair, as in the paper; more episodes per trial keep
the pair across episodes (positions are still permuted).

The compiled kernel is ``cpp/envs/harlow.h``; ``ref_*`` below is its readable reference.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from .core import BatchedEnv, Family, StateSpec, rng_below, split_family_kwargs

SPLITS = ("train", "test")
DEFAULT_NUM_TASKS = {"train": 10000, "test": 1000}

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
_DOMAIN = 0x6861726C6F777461  # ASCII "harlowta": keeps task hashes apart from the driver's streams
_PURPOSE_U1, _PURPOSE_U2, _PURPOSE_SWAP = 1, 2, 3


# ---------------------------------------------------------------------------------------------------
# Counter-based hashing, vectorized (the splitmix64 finaliser of core.mix64)


def _mix64_np(x: np.ndarray) -> np.ndarray:
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _mix64(x: int) -> int:
    return int(_mix64_np(np.array([x & _MASK64], dtype=_U64))[0])


def _keys(seed: int, split: str, purpose: int, index: np.ndarray) -> np.ndarray:
    base = _mix64(seed ^ _DOMAIN)
    base = _mix64(base + SPLITS.index(split) + 1)
    base = _mix64(base + purpose)
    return _mix64_np(_U64(base) + index.astype(_U64))


def _unit(bits: np.ndarray) -> np.ndarray:
    """Uniform float64 in [0, 1) from the top 53 of 64 random bits."""
    return (bits >> _U64(11)).astype(np.float64) * 2.0**-53


# ---------------------------------------------------------------------------------------------------
# Validation


def _check_int(name: str, v, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {v!r}")
    v = int(v)
    if v < lo or (hi is not None and v > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be an int {bound}, got {v}")
    return v


def _check_real(name: str, v) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {v!r}")
    v = float(v)
    with np.errstate(over="ignore"):
        f32 = np.float32(v)
    if not math.isfinite(v) or not np.isfinite(f32):
        raise ValueError(f"{name} must be finite (in float32), got {v}")
    return v


def _check_split(split) -> str:
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


# ---------------------------------------------------------------------------------------------------
# Task pool


def harlow_values(
    num_tasks: int,
    *,
    split: str = "train",
    task_seed: int = 0,
    value_low: float = 0.1,
    value_high: float = 1.0,
    min_gap: float = 0.2,
    first: int = 0,
) -> np.ndarray:
    """Tasks ``first .. first + num_tasks - 1`` of a split: float32 ``[num_tasks, 2]`` of (value of the
    rewarded object a, value of the other object b).

    With ``W = value_high - value_low - min_gap`` and two uniforms ``s, t`` in [0, W] (hashes of
    ``(task_seed, split, k)``), the pair is ``lo = value_low + min(s, t)``, ``hi = value_low + min_gap +
    max(s, t)``: uniform over the pairs at least ``min_gap`` apart. A third hash bit picks whether a is
    ``hi`` or ``lo``. Computed in float64, rounded to float32 once.
    """
    num_tasks = _check_int("num_tasks", num_tasks, 0, 2**31 - 1)
    first = _check_int("first", first, 0)
    task_seed = _check_int("task_seed", task_seed, 0, _MASK64)
    split = _check_split(split)
    value_low, value_high, min_gap = _check_values(value_low, value_high, min_gap)
    idx = np.arange(first, first + num_tasks, dtype=np.int64)
    span = value_high - value_low - min_gap
    s = _unit(_keys(task_seed, split, _PURPOSE_U1, idx)) * span
    t = _unit(_keys(task_seed, split, _PURPOSE_U2, idx)) * span
    lo = value_low + np.minimum(s, t)
    hi = value_low + min_gap + np.maximum(s, t)
    a_is_hi = (_keys(task_seed, split, _PURPOSE_SWAP, idx) >> _U64(63)).astype(bool)
    values = np.stack([np.where(a_is_hi, hi, lo), np.where(a_is_hi, lo, hi)], axis=1).astype(np.float32)
    if (values[:, 0] == values[:, 1]).any():
        raise ValueError(f"min_gap={min_gap} is too small: two values of a task are equal in float32")
    return values


def _check_values(value_low, value_high, min_gap) -> tuple[float, float, float]:
    value_low = _check_real("value_low", value_low)
    value_high = _check_real("value_high", value_high)
    min_gap = _check_real("min_gap", min_gap)
    if value_low <= 0:
        raise ValueError(f"value_low must be > 0 (0 marks an empty cell of the line), got {value_low}")
    if value_high <= value_low:
        raise ValueError(f"value_high must be > value_low={value_low}, got {value_high}")
    if min_gap <= 0:
        raise ValueError(f"min_gap must be > 0 (the two objects must differ), got {min_gap}")
    if min_gap > value_high - value_low:
        raise ValueError(
            f"min_gap={min_gap} is too large for the value range [{value_low}, {value_high}] "
            f"(at most value_high - value_low = {value_high - value_low})"
        )
    return value_low, value_high, min_gap


# ---------------------------------------------------------------------------------------------------
# The family


class HarlowFamily(Family):
    """Harlow rules (module docstring) over a pool of value pairs ``values``: float32 ``[T, 2]`` of
    (rewarded object's value, other object's value). Per-environment state: ``t`` (step within the
    episode), ``pa``, ``pb`` (cells of the two objects in the current or last presentation), int32."""

    name = "harlow"
    obs_dtype = torch.float32

    def __init__(
        self,
        width: int = 2,
        presentations: int = 5,
        fixation_steps: int = 1,
        split: str = "train",
        num_tasks: int | None = None,
        task_seed: int = 0,
        value_low: float = 0.1,
        value_high: float = 1.0,
        min_gap: float = 0.2,
        reward: float = 1.0,
        empty_reward: float = 0.0,
    ):
        self.width = _check_int("width", width, 2, 2**20 - 1)
        self.presentations = _check_int("presentations", presentations, 1)
        self.fixation_steps = _check_int("fixation_steps", fixation_steps, 0)
        if self.presentations * (self.fixation_steps + 1) >= 2**31:
            raise ValueError("presentations * (fixation_steps + 1) (the episode length) must be below 2**31")
        self.split = _check_split(split)
        if num_tasks is None:
            num_tasks = DEFAULT_NUM_TASKS[self.split]
        num_tasks = _check_int("num_tasks", num_tasks, 1, 2**31 - 1)
        self.task_seed = _check_int("task_seed", task_seed, 0, _MASK64)
        self.value_low, self.value_high, self.min_gap = _check_values(value_low, value_high, min_gap)
        reward = _check_real("reward", reward)
        if reward <= 0:
            raise ValueError(f"reward must be > 0 (paid at the rewarded object, minus it at the other), got {reward}")
        self.reward = np.float32(reward)
        self.empty_reward = np.float32(_check_real("empty_reward", empty_reward))
        self.period = self.fixation_steps + 1
        self.length = self.presentations * self.period
        self.num_actions = self.width
        self.obs_shape = (1 + self.width,)
        values = harlow_values(
            num_tasks,
            split=self.split,
            task_seed=self.task_seed,
            value_low=self.value_low,
            value_high=self.value_high,
            min_gap=self.min_gap,
        )
        self.values = torch.from_numpy(values).contiguous()

    @property
    def episode_length(self) -> int:
        """Steps per episode: presentations * (fixation_steps + 1)."""
        return self.length

    def state_spec(self):
        return {"t": StateSpec((), torch.int32), "pa": StateSpec((), torch.int32), "pb": StateSpec((), torch.int32)}

    def pool(self):
        return {"values": self.values}

    def to(self, device):
        self.values = self.values.to(device)

    def kernel_args(self, state):
        tensors = [state["t"], state["pa"], state["pb"], self.values]
        ints = [self.width, self.presentations, self.fixation_steps]
        return tensors, ints, [float(self.reward), float(self.empty_reward)]

    # -- numpy reference (cpp/envs/harlow.h) -------------------------------------------------------

    def _ref_place(self, S, i, rng):
        pa = rng_below(rng, self.width)
        q = rng_below((rng << 32) & _MASK64, self.width - 1)
        S.pa[i] = pa
        S.pb[i] = q + (q >= pa)

    def _is_choice(self, t: int) -> bool:
        return t < self.length and t % self.period == self.fixation_steps

    def ref_reset(self, S, P, i, task, rng):
        S.t[i] = 0
        self._ref_place(S, i, rng)

    def ref_step(self, S, P, i, task, action, reward, rng):
        t = int(S.t[i])
        a = int(action[0])
        if self._is_choice(t):
            if a == S.pa[i]:
                reward[0] = self.reward
            elif a == S.pb[i]:
                reward[0] = -self.reward
            else:
                reward[0] = self.empty_reward
        else:
            reward[0] = np.float32(0.0)
        t += 1
        S.t[i] = t
        if t >= self.length:
            return True
        if self._is_choice(t) and t >= self.period:  # a later presentation: a fresh placement
            self._ref_place(S, i, rng)
        return False

    def ref_observe(self, S, P, i, task, out, ctx):
        out[:] = 0
        if self._is_choice(int(S.t[i])):
            out[1 + int(S.pa[i])] = P.values[task, 0]
            out[1 + int(S.pb[i])] = P.values[task, 1]
        else:
            out[0] = 1

    # -- gymnasium, rendering -----------------------------------------------------------------------

    def single_observation_space(self):
        import gymnasium

        high = np.full(self.obs_shape, np.float32(self.value_high), dtype=np.float32)
        high[0] = 1.0
        return gymnasium.spaces.Box(np.zeros(self.obs_shape, dtype=np.float32), high, dtype=np.float32)

    def render_rgb(self, S, P, i, task, cell: int = 16):
        """A strip of ``1 + width`` cells: the fixation cue (gold when shown, dark otherwise), then the
        line with grey level = value / value_high (black = empty). During a choice step a second row
        marks the rewarded object (green) and the other one (red)."""
        obs = np.zeros(self.obs_shape, dtype=np.float32)
        self.ref_observe(S, P, i, task, obs, None)
        n = 1 + self.width
        img = np.full((2, n, 3), 235, dtype=np.uint8)
        img[0, 0] = (240, 190, 20) if obs[0] > 0 else (60, 60, 60)
        grey = np.round(255.0 * np.clip(obs[1:] / np.float32(self.value_high), 0.0, 1.0)).astype(np.uint8)
        img[0, 1:] = grey[:, None]
        if obs[0] == 0:
            img[1, 1 + int(S.pa[i])] = (70, 170, 80)
            img[1, 1 + int(S.pb[i])] = (200, 60, 50)
        return np.repeat(np.repeat(img, cell, axis=0), cell, axis=1)


def Harlow(num_envs: int, *, episodes_per_trial: int = 1, max_steps: int | None = None, **kwargs) -> BatchedEnv:
    """A batch of Harlow environments (functional API; rules in the module docstring).

    ``width`` cells on the line (= actions), ``presentations`` of the pair per episode, each after
    ``fixation_steps`` fixation steps; ``split`` / ``num_tasks`` (default 10000 train, 1000 test) /
    ``task_seed`` shape the pool of value pairs, drawn from ``[value_low, value_high]`` at least
    ``min_gap`` apart; ``reward`` is paid at the rewarded object (its negative at the other),
    ``empty_reward`` at an empty cell. The episode ends itself (``max_steps`` defaults to none);
    ``episodes_per_trial`` defaults to 1 (a new pair every episode). Keyword arguments of ``HarlowFamily`` choose
    the rules and tasks, the others go to ``BatchedEnv`` (``seed``, ``device``, ``autoreset_mode``, ...).
    """
    family_kwargs, env_kwargs = split_family_kwargs(HarlowFamily, kwargs)
    return BatchedEnv(
        HarlowFamily(**family_kwargs), num_envs, episodes_per_trial=episodes_per_trial, max_steps=max_steps,
        **env_kwargs,
    )  # fmt: skip
