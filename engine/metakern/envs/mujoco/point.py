"""PEARL's 2-D point robot (no MuJoCo): the sparse-reward navigation task of PEARL, HTR, HFR and DRaT.

State = position in the plane, starting at the origin; an action is a displacement clipped to
[-0.1, 0.1]^2; the observation is the position. Goals lie on the unit half circle. The dense
reward is minus the distance to the goal; the sparse reward (PEARL's ``sparsify_rewards``) is
``1 - distance`` inside the goal radius (0.2) and 0 outside. Episodes last 20 steps.

``SparsePointRobot`` is PEARL's task exactly: only the goal varies. ``SparsePointRobotDynamics``
adds the dynamics variation DRaT-style transfer needs (the transition kernels of two tasks
differ, so the importance weight P_i(s'|s,a) / P_j(s'|s,a) is not 1): a per-task motor that
scales and rotates the clipped action, ``xy += gain * R(rotation) @ clip(a, -0.1, 0.1)``. PEARL
and the spec define no dynamics for the point robot; the ranges are metakern's choice, the gains
DOMINO's mass scales: train gain in {0.75, 0.85, 1, 1.15, 1.25} and rotation U(-pi/6, pi/6);
test (out of distribution) gain in [0.4, 0.5] or [1.5, 1.6] and |rotation| in [pi/6, pi/3].
The move stays a linear map of the clipped action, so every gain and rotation is stable.
"""

from __future__ import annotations

import numpy as np

from .robots import Kin
from .tasks import _DOMINO_OOD, _DOMINO_SCALES, Dynamics, Preset, TaskFamily, dynamics_size, fixed


class _PointSim:
    has_body_mass = False
    model_like = None

    def __init__(self, B: int):
        self.out = {"qpos": np.zeros((B, 2))}
        self.nu = 2
        self.dt = 1.0
        # the motor of each env: xy += motor[i] @ clip(a) (identity: PEARL's point robot)
        self.motor = np.tile(np.eye(2), (B, 1, 1))

    def action_bounds(self):
        return np.full(2, -0.1, np.float32), np.full(2, 0.1, np.float32)

    def initial_state(self):
        return np.zeros(2), np.zeros(0)

    def dynamics_size(self, dyn):
        return dynamics_size(dyn, None)

    def model_field(self, name):  # pragma: no cover - the point robot has no MjModel
        raise ValueError("the point robot has no model fields")

    def set_motor(self, i: int, gain: float, rotation: float) -> None:
        c, s = np.cos(rotation), np.sin(rotation)
        self.motor[i] = gain * np.array([[c, -s], [s, c]])

    def set_const(self, i: int) -> None:  # no derived constants to recompute
        pass

    def reset_state(self, i, qpos, qvel):
        self.out["qpos"][i] = qpos

    def step(self, ctrl, active):
        move = np.einsum("bij,bj->bi", self.motor, np.clip(ctrl, -0.1, 0.1))
        if active is not None:
            move = move * active[:, None]
        self.out["qpos"] += move


class PointRobot:
    name = "point"
    frame_skip = 1
    terminates = False

    def make_sim(self, B: int) -> _PointSim:
        return _PointSim(B)

    def reset_state(self, rng, qpos0, qvel0):
        return qpos0.copy(), qvel0.copy()

    def position(self, out, body_mass):
        return out["qpos"].copy()

    def observation(self, out):
        return out["qpos"].copy()

    def kinematics(self, before, after, dt, action, out):
        v = (after - before) / dt
        B = after.shape[0]
        return Kin(
            x_velocity=v[:, 0],
            xy_velocity=v,
            xy=after,
            ctrl_sq=np.sum(np.square(action), axis=1),
            healthy=np.ones(B, dtype=bool),
            contact_sq=None,
        )


def _point_goals() -> tuple[np.ndarray, np.ndarray]:
    # PEARL: 100 goals at angles linspace(0, pi, 100) on the unit circle, shuffled; 80 train, 20 test.
    # The shuffle's seed (1337) is metakern's choice.
    angles = np.linspace(0.0, np.pi, num=100)
    goals = np.stack((np.cos(angles), np.sin(angles)), axis=1)
    np.random.RandomState(1337).shuffle(goals)
    return fixed(goals[:80]), fixed(goals[80:])


def _sparse_point(k: Kin, p, opts):
    dist = np.linalg.norm(k.xy - p[:, 0:2], axis=1)
    inside = dist <= opts["goal_radius"]
    return np.where(inside, 1.0 - dist, 0.0), {"dense_reward": -dist, "success": inside.astype(np.float64)}


def _sparse_point_family(name: str, dynamics: Dynamics | None, doc: str) -> TaskFamily:
    train, test = _point_goals()
    return TaskFamily(
        name,
        PointRobot(),
        _sparse_point,
        ("goal_x", "goal_y"),
        presets={"pearl": Preset(train, test, note="100 goals on the unit half circle: 80 train, 20 test")},
        default_preset="pearl",
        dynamics=dynamics,
        reward_options={"goal_radius": 0.2},
        max_steps=20,
        terminate_when_unhealthy=False,
        doc=doc,
    )


_MOTOR = Dynamics(
    "point_motor",
    train={"gain": _DOMINO_SCALES, "rotation": [(-np.pi / 6, np.pi / 6)]},
    test={"gain": list(_DOMINO_OOD), "rotation": [(-np.pi / 3, -np.pi / 6), (np.pi / 6, np.pi / 3)]},
)
POINT_FAMILIES = {
    "SparsePointRobot": _sparse_point_family(
        "SparsePointRobot", None, "r = 1 - |xy - g| within 0.2 of the goal, else 0; dense -|xy - g| in info"
    ),
    "SparsePointRobotDynamics": _sparse_point_family(
        "SparsePointRobotDynamics",
        _MOTOR,
        "SparsePointRobot whose motor varies: xy += gain * R(rotation) @ clip(a); goal x gain x rotation",
    ),
}
