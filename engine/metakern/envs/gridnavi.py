"""GridNavi (VariBAD; LDM's out-of-distribution split): find a hidden goal cell on an N x N grid.

Rules (VariBAD ``environments/navigation/gridworld.py``, as the spec records them): start at
(0, 0); five actions 0 stay, 1 up (y+1), 2 right (x+1), 3 down (y-1), 4 left (x-1), moves off the
grid stay put; reward +1 on the goal cell after the move, else -0.1; no termination, episodes of
15 steps (5x5) or 30 steps (7x7); a task is held for 4 episodes (a trial). Observation: (x, y).

Goals never lie in the 2x2 corner at the start. Splits (``split=``):

* 5x5: ``"all"`` = ``"train"`` = ``"test"`` = the 21 remaining cells (VariBAD).
* 7x7 (LDM): ``"train"`` = the cells with max(x, y) = 2 (5) or 6 (13); ``"test"`` = rings 3..5
  (27 goals never seen in training); ``"all"`` = the 45 evaluation goals.

The compiled kernel is ``cpp/envs/gridnavi.h``; ``ref_*`` below is its readable reference.
"""

from __future__ import annotations

import numpy as np
import torch

from .core import BatchedEnv, Family, StateSpec

ACTIONS = ("stay", "up", "right", "down", "left")


def gridnavi_goals(size: int, split: str = "all") -> np.ndarray:
    """The goal cells of a split, as an int32 array [G, 2] of (x, y), in row-major order."""
    if not isinstance(size, int) or size < 3:
        raise ValueError(f"size must be an int >= 3, got {size!r}")
    cells = [(x, y) for y in range(size) for x in range(size) if max(x, y) >= 2]
    if split == "all":
        chosen = cells
    elif split in ("train", "test"):
        if size != 7:
            chosen = cells  # VariBAD trains and evaluates on every goal
        else:
            train = [c for c in cells if max(c) in (2, 6)]
            chosen = train if split == "train" else [c for c in cells if c not in train]
    else:
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    return np.asarray(chosen, dtype=np.int32).reshape(-1, 2)


class GridNaviFamily(Family):
    """GridNavi rules with a pool of goal cells (``goals``: int [G, 2] of (x, y))."""

    name = "gridnavi"
    num_actions = 5
    obs_dtype = torch.float32
    obs_shape = (2,)

    def __init__(self, size: int = 7, goals: np.ndarray | torch.Tensor | None = None, split: str = "train"):
        if goals is None:
            goals = gridnavi_goals(size, split)
        goals = torch.as_tensor(np.asarray(goals), dtype=torch.int32)
        if goals.dim() != 2 or goals.shape[1] != 2 or goals.shape[0] < 1:
            raise ValueError(f"goals must have shape (G, 2) with G >= 1, got {tuple(goals.shape)}")
        if int(goals.min()) < 0 or int(goals.max()) >= size:
            raise ValueError(f"goals must lie on the {size}x{size} grid")
        self.size = size
        self.goals = goals.contiguous()

    def state_spec(self):
        return {"pos": StateSpec((2,), torch.int32)}

    def pool(self):
        return {"goals": self.goals}

    def to(self, device):
        self.goals = self.goals.to(device)

    def kernel_args(self, state):
        return [state["pos"], self.goals], [self.size], []

    def ref_reset(self, S, P, i, task, rng):
        S.pos[i] = (0, 0)

    def ref_step(self, S, P, i, task, action, reward, rng):
        x, y = int(S.pos[i, 0]), int(S.pos[i, 1])
        dx, dy = {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (0, -1), 4: (-1, 0)}[int(action[0])]
        if 0 <= x + dx < self.size:
            x += dx
        if 0 <= y + dy < self.size:
            y += dy
        S.pos[i] = (x, y)
        at_goal = x == P.goals[task, 0] and y == P.goals[task, 1]
        reward[0] = np.float32(1.0) if at_goal else np.float32(-0.1)
        return False

    def ref_observe(self, S, P, i, task, out, ctx):
        out[:] = S.pos[i]

    def single_observation_space(self):
        import gymnasium

        return gymnasium.spaces.Box(0.0, float(self.size - 1), shape=(2,), dtype=np.float32)

    def render_rgb(self, S, P, i, task, cell: int = 16):
        n = self.size
        img = np.full((n, n, 3), 235, dtype=np.uint8)
        gx, gy = (int(v) for v in P.goals[task])
        img[n - 1 - gy, gx] = (240, 190, 20)  # goal: gold (row 0 of the picture is the top, y = n-1)
        x, y = (int(v) for v in S.pos[i])
        img[n - 1 - y, x] = (30, 90, 220)  # agent: blue
        return np.repeat(np.repeat(img, cell, axis=0), cell, axis=1)


def GridNavi(
    num_envs: int,
    *,
    size: int = 7,
    split: str = "train",
    max_steps: int | None = None,
    episodes_per_trial: int = 4,
    **kwargs,
) -> BatchedEnv:
    """A batch of GridNavi environments (functional API). ``max_steps`` defaults to 15 for 5x5 and
    30 otherwise (VariBAD / LDM); other keyword arguments go to ``BatchedEnv``."""
    if max_steps is None:
        max_steps = 15 if size == 5 else 30
    return BatchedEnv(
        GridNaviFamily(size, split=split),
        num_envs,
        max_steps=max_steps,
        episodes_per_trial=episodes_per_trial,
        **kwargs,
    )
