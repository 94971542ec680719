"""The five locomotion bodies of the meta-RL papers, with gymnasium v5's observations, rewards,
health checks and reset noise, computed for the whole batch at once.

Each ``Robot`` names its MJCF file (gymnasium's own assets, so the physics are the v5 envs'),
``frame_skip``, the ``MjData`` fields the batch gathers after each step, and vectorised
functions of those gathered ``[B, n]`` arrays. Everything here follows the v5 source line by line
(``gymnasium/envs/mujoco/*_v5.py``), including its order of operations, so that one env of a
metakern batch matches ``gymnasium.make("<Robot>-v5")`` to the last bit (``tests/test_env_mujoco.py``).

Names used by the task rewards (``Kin``, one per step, all ``[B]`` or ``[B, k]`` float64):
``x_velocity`` / ``xy_velocity``: displacement of the robot's reference point over ``dt`` (the
root joint for the planar robots, the torso body for Ant, the centre of mass for Humanoid, all as
v5 measures them); ``xy``: that point after the step; ``ctrl_sq``: sum of squared actions;
``contact_sq``: v5's contact-force term before its weight; ``healthy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

Kin = SimpleNamespace


@dataclass(frozen=True)
class Robot:
    """One body: its model file and v5 constants. Subclasses implement the vectorised parts."""

    name: str
    xml: str
    frame_skip: int
    reset_noise_scale: float
    gym_id: str
    fields: tuple[Any, ...] = ()
    post_constraint: bool = False  # observation or reward reads cfrc_ext
    normal_qvel_noise: bool = False  # v5 HalfCheetah / Ant: qvel + scale * N(0, 1); others: uniform
    defaults: dict[str, float] = field(default_factory=dict)  # v5 reward weights

    # -- per-env reset (gymnasium's draw order, on the env's own generator) ----------------------
    def reset_state(self, rng: np.random.Generator, qpos0: np.ndarray, qvel0: np.ndarray):
        s = self.reset_noise_scale
        qpos = qpos0 + rng.uniform(low=-s, high=s, size=qpos0.size)
        if self.normal_qvel_noise:
            return qpos, qvel0 + s * rng.standard_normal(qvel0.size)
        return qpos, qvel0 + rng.uniform(low=-s, high=s, size=qvel0.size)

    # -- vectorised parts -------------------------------------------------------------------------
    def position(self, out: dict[str, np.ndarray], body_mass: np.ndarray | None) -> np.ndarray:
        """The point whose displacement is the robot's velocity ([B] or [B, 2])."""
        return out["qpos"][:, 0].copy()

    def observation(self, out: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def healthy(self, out: dict[str, np.ndarray]) -> np.ndarray:
        return np.ones(out["qpos"].shape[0], dtype=bool)

    def kinematics(self, before: np.ndarray, after: np.ndarray, dt: float, action: np.ndarray, out) -> Kin:
        v = (after - before) / dt
        k = Kin(ctrl_sq=np.sum(np.square(action), axis=1), healthy=self.healthy(out))
        if v.ndim == 1:
            k.x_velocity, k.xy_velocity, k.xy = v, None, after
        else:
            k.x_velocity, k.xy_velocity, k.xy = v[:, 0], v, after
        k.contact_sq = self.contact_sq(out)
        return k

    def contact_sq(self, out) -> np.ndarray | None:
        return None

    def standard_reward(self, k: Kin) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The v5 reward (and its ``reward_*`` terms as in v5's info)."""
        raise NotImplementedError

    @property
    def terminates(self) -> bool:
        return False


class _Planar(Robot):
    """HalfCheetah, Hopper, Walker2d: observation qpos[1:], qvel (clipped to +-10 for the hoppers)."""

    clip_qvel: bool = True

    def observation(self, out):
        qvel = np.clip(out["qvel"], -10, 10) if self.clip_qvel else out["qvel"]
        return np.concatenate((out["qpos"][:, 1:], qvel), axis=1)

    def standard_reward(self, k):
        d = self.defaults
        forward = d["forward_reward_weight"] * k.x_velocity
        ctrl = d["ctrl_cost_weight"] * k.ctrl_sq
        terms = {"reward_forward": forward, "reward_ctrl": -ctrl}
        if "healthy_reward" in d:
            survive = k.healthy * d["healthy_reward"]
            terms["reward_survive"] = survive
            return forward + survive - ctrl, terms
        return forward - ctrl, terms


class HalfCheetah(_Planar):
    clip_qvel = False


class Hopper(_Planar):
    def healthy(self, out):
        qpos, qvel = out["qpos"], out["qvel"]
        z, angle = qpos[:, 1], qpos[:, 2]
        state = np.concatenate((qpos, qvel), axis=1)[:, 2:]
        ok_state = np.all((state > -100.0) & (state < 100.0), axis=1)
        return ok_state & (z > 0.7) & (z < np.inf) & (angle > -0.2) & (angle < 0.2)

    @property
    def terminates(self):
        return True


class Walker2d(_Planar):
    def healthy(self, out):
        z, angle = out["qpos"][:, 1], out["qpos"][:, 2]
        return (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)

    @property
    def terminates(self):
        return True


class Ant(Robot):
    """Ant-v5: observation qpos[2:], qvel, clip(cfrc_ext[1:], -1, 1); velocity of the torso's xpos."""

    def position(self, out, body_mass):
        return out["xpos"][:, 0:2].copy()  # xpos rows gathered from body 1 (the torso)

    def observation(self, out):
        forces = np.clip(out["cfrc_ext"][:, 6:], -1.0, 1.0)
        return np.concatenate((out["qpos"][:, 2:], out["qvel"], forces), axis=1)

    def healthy(self, out):
        qpos, qvel = out["qpos"], out["qvel"]
        finite = np.isfinite(qpos).all(axis=1) & np.isfinite(qvel).all(axis=1)
        z = qpos[:, 2]
        return finite & (z >= 0.2) & (z <= 1.0)

    def contact_sq(self, out):
        return np.sum(np.square(np.clip(out["cfrc_ext"], -1.0, 1.0)), axis=1)

    def standard_reward(self, k):
        d = self.defaults
        forward = k.x_velocity * d["forward_reward_weight"]
        survive = k.healthy * d["healthy_reward"]
        ctrl = d["ctrl_cost_weight"] * k.ctrl_sq
        contact = d["contact_cost_weight"] * k.contact_sq
        terms = {"reward_forward": forward, "reward_ctrl": -ctrl, "reward_contact": -contact, "reward_survive": survive}
        return forward + survive - (ctrl + contact), terms

    @property
    def terminates(self):
        return True


class Humanoid(Robot):
    """Humanoid-v5: observation qpos[2:], qvel, cinert[1:], cvel[1:], qfrc_actuator[6:], cfrc_ext[1:];
    velocity of the centre of mass (``body_mass``-weighted ``xipos``, per env's own masses)."""

    def position(self, out, body_mass):
        B = out["xipos"].shape[0]
        xipos = out["xipos"].reshape(B, -1, 3)
        num = np.einsum("nb,nbj->nj", body_mass, xipos)
        return (num / body_mass.sum(axis=1, keepdims=True))[:, 0:2].copy()

    def observation(self, out):
        return np.concatenate(
            (
                out["qpos"][:, 2:],
                out["qvel"],
                out["cinert"],
                out["cvel"],
                out["qfrc_actuator"][:, 6:],
                out["cfrc_ext"][:, 6:],
            ),
            axis=1,
        )

    def healthy(self, out):
        z = out["qpos"][:, 2]
        return (z > 1.0) & (z < 2.0)

    def contact_sq(self, out):
        return np.sum(np.square(out["cfrc_ext"]), axis=1)

    def standard_reward(self, k):
        d = self.defaults
        forward = d["forward_reward_weight"] * k.x_velocity
        survive = k.healthy * d["healthy_reward"]
        ctrl = d["ctrl_cost_weight"] * k.ctrl_sq
        contact = np.clip(d["contact_cost_weight"] * k.contact_sq, -np.inf, 10.0)
        terms = {"reward_survive": survive, "reward_forward": forward, "reward_ctrl": -ctrl, "reward_contact": -contact}
        return forward + survive - (ctrl + contact), terms

    @property
    def terminates(self):
        return True


ROBOTS: dict[str, Robot] = {
    "half_cheetah": HalfCheetah(
        "half_cheetah",
        "half_cheetah.xml",
        5,
        0.1,
        "HalfCheetah-v5",
        ("qpos", "qvel"),
        normal_qvel_noise=True,
        defaults={"forward_reward_weight": 1.0, "ctrl_cost_weight": 0.1},
    ),
    "hopper": Hopper(
        "hopper",
        "hopper.xml",
        4,
        5e-3,
        "Hopper-v5",
        ("qpos", "qvel"),
        defaults={"forward_reward_weight": 1.0, "ctrl_cost_weight": 1e-3, "healthy_reward": 1.0},
    ),
    "walker2d": Walker2d(
        "walker2d",
        "walker2d_v5.xml",
        4,
        5e-3,
        "Walker2d-v5",
        ("qpos", "qvel"),
        defaults={"forward_reward_weight": 1.0, "ctrl_cost_weight": 1e-3, "healthy_reward": 1.0},
    ),
    "ant": Ant(
        "ant",
        "ant.xml",
        5,
        0.1,
        "Ant-v5",
        ("qpos", "qvel", ("xpos", slice(1, 2)), "cfrc_ext"),
        post_constraint=True,
        normal_qvel_noise=True,
        defaults={
            "forward_reward_weight": 1.0,
            "ctrl_cost_weight": 0.5,
            "contact_cost_weight": 5e-4,
            "healthy_reward": 1.0,
        },
    ),
    "humanoid": Humanoid(
        "humanoid",
        "humanoid.xml",
        5,
        1e-2,
        "Humanoid-v5",
        (
            "qpos",
            "qvel",
            "xipos",
            ("cinert", slice(1, None)),
            ("cvel", slice(1, None)),
            "qfrc_actuator",
            "cfrc_ext",
        ),
        post_constraint=True,
        defaults={
            "forward_reward_weight": 1.25,
            "ctrl_cost_weight": 0.1,
            "contact_cost_weight": 5e-7,
            "healthy_reward": 5.0,
        },
    ),
}
