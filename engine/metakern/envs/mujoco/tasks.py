"""Meta-RL task distributions on the MuJoCo robots: what varies per task, how it is sampled for
each paper's train and test split, and the task reward computed for the whole batch at once.

A task is a float64 parameter vector: the reward parameters (target velocity, direction angle,
goal) followed by the dynamics parameters (multipliers of model fields, a crippled limb).
``TaskFamily.sample(rng, n, preset, split)`` draws ``[n, P]`` parameters; a preset with a fixed
list of tasks (PEARL's 130 Cheetah-Vel tasks, LDM's 4 + 4 Ant-Dir angles) draws from that list.
``TaskFamily.eval_tasks(preset)`` gives the evaluation lists the papers' code reports on.

Sources (``../shared/spec/algorithms.md`` sections 3, 5, 6 and 7): VariBAD and LDM
(``environments/mujoco/*.py``), PEARL (``rlkit/envs``), DOMINO (``domino/envs/config.py``), ITTS
(``Parameters/*.txt``), maml_rl's ``ant_env_rand.py``. Where a paper left something open, the
choice made here is marked "metakern's choice" in the docstring of the family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .robots import Kin

Sampler = Callable[[np.random.Generator, int], np.ndarray]
TWO_PI = 2.0 * np.pi


# ---------------------------------------------------------------------------------------------------
# samplers


def uniform(lo: float, hi: float) -> Sampler:
    return lambda rng, n: rng.uniform(lo, hi, size=(n, 1))


def union_uniform(*ranges: tuple[float, float]) -> Sampler:
    """Uniform over a union of intervals, each picked in proportion to its length."""
    lengths = np.array([hi - lo for lo, hi in ranges])
    probs = lengths / lengths.sum()

    def draw(rng, n):
        which = rng.choice(len(ranges), size=n, p=probs)
        lo = np.array([r[0] for r in ranges])[which]
        hi = np.array([r[1] for r in ranges])[which]
        return (lo + (hi - lo) * rng.random(n))[:, None]

    return draw


def choice(values) -> Sampler:
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    return lambda rng, n: values[rng.integers(0, len(values), size=n)]


def disk_annulus(r_in: float, r_out: float, r_disk: float | None = None) -> Sampler:
    """Goals uniform over the area of {r <= r_disk} union {r_in <= r <= r_out} (no disk: the annulus;
    r_in = 0: the disk of radius r_out)."""
    area_disk = 0.0 if r_disk is None else r_disk**2
    area_ring = r_out**2 - r_in**2
    p_disk = area_disk / (area_disk + area_ring)

    def draw(rng, n):
        angle = rng.uniform(0.0, TWO_PI, size=n)
        in_disk = rng.random(n) < p_disk
        u = rng.random(n)
        r_ring = np.sqrt(r_in**2 + u * area_ring)
        r = np.where(in_disk, (r_disk or 0.0) * np.sqrt(u), r_ring)
        return np.stack((r * np.cos(angle), r * np.sin(angle)), axis=1)

    return draw


def fixed(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(len(values), -1)


def goals_on_circle(radii, angles) -> np.ndarray:
    return fixed([(r * np.cos(a), r * np.sin(a)) for r in radii for a in angles])


# ---------------------------------------------------------------------------------------------------
# dynamics


@dataclass(frozen=True)
class Dynamics:
    """How a task's dynamics parameters change the model.

    ``kind``:
      * ``"rand_params"``: per-element multipliers ``base ** U(-limit, limit)`` of ``body_mass``
        (1.5), ``body_inertia`` (1.5), ``dof_damping`` (1.3), ``geom_friction`` (1.5), as
        ``rand_param_envs`` (VariBAD, PEARL) draws them, ``log_scale_limit`` = 3.
      * ``"mass_damping"``: one scale of every ``body_mass`` and one of every ``dof_damping`` (DOMINO,
        CaDM).
      * ``"cripple"``: a crippled limb (its actuators' controls zeroed) and a mass scale (DOMINO).
      * ``"point_motor"``: the point robot's motor: a gain and a rotation (radians) of the clipped
        action before it moves the point, ``xy += gain * R(rotation) @ clip(a)`` (no MjModel).
    """

    kind: str
    train: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)
    limbs: tuple[tuple[int, ...], ...] = ()  # cripple: actuators of each limb


RAND_PARAM_BASES = {"body_mass": 1.5, "body_inertia": 1.5, "dof_damping": 1.3, "geom_friction": 1.5}


def dynamics_fields(dyn: Dynamics | None) -> tuple[str, ...]:
    """The ``MjModel`` fields a dynamics kind writes per task."""
    if dyn is None:
        return ()
    if dyn.kind == "rand_params":
        return tuple(RAND_PARAM_BASES)
    if dyn.kind == "mass_damping":
        return ("body_mass", "dof_damping")
    if dyn.kind == "point_motor":
        return ()
    return ("body_mass",)  # cripple


def dynamics_size(dyn: Dynamics | None, model) -> int:
    if dyn is None:
        return 0
    if dyn.kind == "rand_params":
        return sum(getattr(model, f).size for f in RAND_PARAM_BASES)
    return 2  # mass_damping: (mass, damping); cripple: (limb, mass); point_motor: (gain, rotation)


def _scale_draw(rng: np.random.Generator, n: int, spec: Any) -> np.ndarray:
    """A scale per task from a list of values (tuple of floats) or a union of ranges (list of pairs)."""
    if isinstance(spec, tuple):
        return np.asarray(spec)[rng.integers(0, len(spec), size=n)]
    return union_uniform(*spec)(rng, n)[:, 0]


def sample_dynamics(dyn: Dynamics, model, rng: np.random.Generator, n: int, split: str) -> np.ndarray:
    cfg = dyn.train if split == "train" else dyn.test
    if dyn.kind == "rand_params":
        parts = []
        for f, base in RAND_PARAM_BASES.items():
            size = getattr(model, f).size
            lo, hi = cfg["exponent"]
            mag = rng.uniform(lo, hi, size=(n, size))
            sign = np.where(rng.random((n, size)) < 0.5, -1.0, 1.0) if lo > 0 else 1.0
            parts.append(np.power(base, sign * mag))
        return np.concatenate(parts, axis=1)
    if dyn.kind == "mass_damping":
        return np.stack((_scale_draw(rng, n, cfg["mass"]), _scale_draw(rng, n, cfg["damping"])), axis=1)
    if dyn.kind == "cripple":
        limbs = np.asarray(cfg["limbs"], dtype=np.float64)
        return np.stack((limbs[rng.integers(0, len(limbs), size=n)], _scale_draw(rng, n, cfg["mass"])), axis=1)
    if dyn.kind == "point_motor":
        return np.stack((_scale_draw(rng, n, cfg["gain"]), _scale_draw(rng, n, cfg["rotation"])), axis=1)
    raise ValueError(f"unknown dynamics kind {dyn.kind!r}")


# ---------------------------------------------------------------------------------------------------
# rewards: (kinematics, reward params [B, k], action) -> reward [B], info terms


def _standard(robot):
    return lambda k, p, opts: robot.standard_reward(k)


def _cheetah_vel(k: Kin, p, opts):
    forward = -np.abs(k.x_velocity - p[:, 0])
    ctrl = opts["ctrl_cost_weight"] * k.ctrl_sq
    return forward - ctrl, {"reward_forward": forward, "reward_ctrl": -ctrl}


def _cheetah_dir(k: Kin, p, opts):
    forward = p[:, 0] * k.x_velocity
    ctrl = opts["ctrl_cost_weight"] * k.ctrl_sq
    return forward - ctrl, {"reward_forward": forward, "reward_ctrl": -ctrl}


def _direction(p):
    return np.stack((np.cos(p[:, 0]), np.sin(p[:, 0])), axis=1)


def _ant_dir(k: Kin, p, opts):
    forward = np.sum(k.xy_velocity * _direction(p), axis=1)
    ctrl = opts["ctrl_cost_weight"] * k.ctrl_sq
    contact = opts["contact_cost_weight"] * k.contact_sq
    survive = opts["healthy_reward"] * np.ones_like(forward)
    terms = {"reward_forward": forward, "reward_ctrl": -ctrl, "reward_contact": -contact, "reward_survive": survive}
    return forward - ctrl - contact + survive, terms


def _ant_goal(k: Kin, p, opts):
    goal = -np.sum(np.abs(k.xy - p[:, 0:2]), axis=1)
    ctrl = opts["ctrl_cost_weight"] * k.ctrl_sq
    contact = opts["contact_cost_weight"] * k.contact_sq
    return goal - ctrl - contact, {"reward_goal": goal, "reward_ctrl": -ctrl, "reward_contact": -contact}


def _ant_vel(k: Kin, p, opts):
    forward = -np.abs(k.x_velocity - p[:, 0]) + 1.0
    ctrl = opts["ctrl_cost_weight"] * k.ctrl_sq
    contact = opts["contact_cost_weight"] * k.contact_sq
    survive = opts["survive_reward"] * np.ones_like(forward)
    terms = {"reward_forward": forward, "reward_ctrl": -ctrl, "reward_contact": -contact, "reward_survive": survive}
    return forward - ctrl - contact + survive, terms


def _humanoid_dir(k: Kin, p, opts):
    forward = opts["forward_reward_weight"] * np.sum(k.xy_velocity * _direction(p), axis=1)
    survive = k.healthy * opts["healthy_reward"]
    ctrl = opts["ctrl_cost_weight"] * k.ctrl_sq
    contact = np.minimum(opts["contact_cost_weight"] * k.contact_sq, 10.0)
    terms = {"reward_forward": forward, "reward_survive": survive, "reward_ctrl": -ctrl, "reward_contact": -contact}
    return forward + survive - ctrl - contact, terms


def _sparse(distance: np.ndarray, radius: float):
    """PEARL's sparsification: 1 - distance inside the goal radius, 0 outside."""
    inside = distance <= radius
    return np.where(inside, 1.0 - distance, 0.0), inside


def _sparse_vel(k: Kin, p, opts):
    dist = np.abs(k.x_velocity - p[:, 0])
    reward, inside = _sparse(dist, opts["goal_radius"])
    dense, _ = _cheetah_vel(k, p, opts)
    return reward, {"dense_reward": dense, "success": inside.astype(np.float64)}


def _sparse_goal(k: Kin, p, opts):
    dist = np.linalg.norm(k.xy - p[:, 0:2], axis=1)
    reward, inside = _sparse(dist, opts["goal_radius"])
    return reward, {"dense_reward": -dist, "success": inside.astype(np.float64)}


# ---------------------------------------------------------------------------------------------------
# families


@dataclass
class Preset:
    """One paper's task distribution: a sampler per split, or fixed task lists."""

    train: Sampler | np.ndarray
    test: Sampler | np.ndarray
    eval_train: np.ndarray | None = None  # tasks the paper's code evaluates on, seen in training
    eval_test: np.ndarray | None = None  # ... and unseen (the OOD / interpolation protocol)
    note: str = ""


@dataclass
class TaskFamily:
    name: str
    robot: str
    reward: Callable[..., tuple[np.ndarray, dict[str, np.ndarray]]] | str
    reward_params: tuple[str, ...] = ()
    presets: dict[str, Preset] = field(default_factory=dict)
    default_preset: str | None = None
    dynamics: Dynamics | None = None
    reward_options: dict[str, float] = field(default_factory=dict)
    max_steps: int = 1000
    terminate_when_unhealthy: bool = True
    doc: str = ""

    def preset(self, name: str | None) -> Preset | None:
        if not self.presets:
            if name is not None:
                raise ValueError(f"{self.name} has no presets (its reward does not vary); got preset={name!r}")
            return None
        name = name or self.default_preset
        if name not in self.presets:
            raise ValueError(f"unknown preset {name!r} for {self.name}; expected one of {sorted(self.presets)}")
        return self.presets[name]

    def sample(self, rng: np.random.Generator, n: int, preset: str | None, split: str, model) -> np.ndarray:
        """``n`` task parameter vectors ``[n, P]`` of ``split`` ("train" or "test")."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        parts = []
        p = self.preset(preset)
        if p is not None:
            src = p.train if split == "train" else p.test
            parts.append(src[rng.integers(0, len(src), size=n)] if isinstance(src, np.ndarray) else src(rng, n))
        if self.dynamics is not None:
            parts.append(sample_dynamics(self.dynamics, model, rng, n, split))
        if not parts:
            return np.zeros((n, 0))
        return np.concatenate(parts, axis=1)

    def fixed_tasks(self, preset: str | None, split: str) -> np.ndarray | None:
        """The preset's fixed task list of ``split`` (reward parameters), if it has one."""
        p = self.preset(preset)
        if p is None:
            return None
        src = p.train if split == "train" else p.test
        return src if isinstance(src, np.ndarray) else None

    def eval_tasks(self, preset: str | None = None) -> dict[str, np.ndarray]:
        """Reward parameters the paper's code evaluates on: {"train": [...], "test": [...]}."""
        p = self.preset(preset)
        if p is None or p.eval_train is None:
            raise ValueError(f"{self.name} preset {preset or self.default_preset!r} defines no evaluation list")
        return {"train": p.eval_train, "test": p.eval_test}


def _pearl_cheetah_vel() -> tuple[np.ndarray, np.ndarray]:
    # PEARL (rlkit/envs/half_cheetah_vel.py): np.random.seed(1337); velocities = uniform(0, 3, 130);
    # the first 100 train, the last 30 test.
    v = np.random.RandomState(1337).uniform(0.0, 3.0, size=(130,))
    return fixed(v[:100]), fixed(v[100:])


ITTS_HC_VALIDATION = (1.28123434, 0.28224561, 0.52345625, 0.72125534, 1.91234538)
ITTS_HC_SELECTED = (
    0.68234899, 1.35711861, 1.47664015, 1.82143369, 1.40305521, 1.98446177, 1.21153606, 0.74157183,
    1.1097496, 0.99451066, 1.43099215, 1.24622993, 1.57855535, 1.82143369, 1.90577056, 0.22691475,
)  # fmt: skip
ITTS_ANT_VALIDATION = (1.13245621, 0.26123455, 2.65341287, 0.84416898, 1.91347543)
ITTS_ANT_SELECTED = (
    1.3729614, 2.26357493, 0.134973, 0.67275606, 1.78040127, 2.51789655, 2.49905683, 1.6241767, 2.16761452,
    1.9280589, 1.56873556, 1.97127488, 1.27789949, 1.15143013, 1.82986389, 2.87987985, 1.42340692, 2.3857683,
)  # fmt: skip

_CHEETAH_OPTS = {"ctrl_cost_weight": 0.05}
_ANT_OPTS = {"ctrl_cost_weight": 0.5, "contact_cost_weight": 0.5e-3, "healthy_reward": 1.0}
_QUARTERS = (0.0, np.pi / 2, np.pi, 3 * np.pi / 2)
_DIAGONALS = (np.pi / 4, 3 * np.pi / 4, 5 * np.pi / 4, 7 * np.pi / 4)
_DOMINO_SCALES = (0.75, 0.85, 1.0, 1.15, 1.25)
_DOMINO_OOD = [(0.4, 0.5), (1.5, 1.6)]
_HOPPER_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)
_HOPPER_OOD = [(0.25, 0.375), (1.75, 2.0)]


def _mass_damping(scales, ood) -> Dynamics:
    return Dynamics(
        "mass_damping", train={"mass": scales, "damping": scales}, test={"mass": list(ood), "damping": list(ood)}
    )


def _rand_params() -> Dynamics:
    # train: rand_param_envs' log_scale_limit = 3. test (metakern's choice; the papers define no
    # out-of-distribution range): exponents of magnitude in [3, 4], random sign per element.
    return Dynamics("rand_params", train={"exponent": (-3.0, 3.0)}, test={"exponent": (3.0, 4.0)})


def _families() -> dict[str, TaskFamily]:
    from .robots import ROBOTS

    pearl_train, pearl_test = _pearl_cheetah_vel()
    fams: dict[str, TaskFamily] = {}

    for name, robot in (
        ("HalfCheetah", "half_cheetah"),
        ("Hopper", "hopper"),
        ("Walker2d", "walker2d"),
        ("Ant", "ant"),
        ("Humanoid", "humanoid"),
    ):
        fams[name] = TaskFamily(name, robot, _standard(ROBOTS[robot]), doc=f"gymnasium's {ROBOTS[robot].gym_id}")

    fams["HalfCheetahVel"] = TaskFamily(
        "HalfCheetahVel",
        "half_cheetah",
        _cheetah_vel,
        ("velocity",),
        presets={
            "varibad": Preset(uniform(0.0, 3.0), uniform(0.0, 3.0)),
            "pearl": Preset(pearl_train, pearl_test, note="130 fixed tasks: 100 train, 30 test"),
            "ldm": Preset(
                union_uniform((0.0, 0.5), (3.0, 3.5)),
                uniform(0.5, 3.0),
                eval_train=fixed([0.25, 3.25]),
                eval_test=fixed([0.75, 1.25, 1.75, 2.25, 2.75]),
            ),
            "garage": Preset(uniform(0.0, 2.0), uniform(0.0, 2.0), note="garage / ITTS: U[0, 2]"),
            "itts": Preset(
                fixed(ITTS_HC_SELECTED),
                fixed(ITTS_HC_VALIDATION),
                eval_train=fixed(ITTS_HC_SELECTED),
                eval_test=fixed(ITTS_HC_VALIDATION),
                note="ITTS's selected subset (train) and validation tasks (test)",
            ),
        },
        default_preset="varibad",
        reward_options=_CHEETAH_OPTS,
        doc="r = -|v_x - v*| - 0.05 |a|^2",
    )
    fams["HalfCheetahDir"] = TaskFamily(
        "HalfCheetahDir",
        "half_cheetah",
        _cheetah_dir,
        ("direction",),
        presets={"varibad": Preset(choice([-1.0, 1.0]), choice([-1.0, 1.0]))},
        default_preset="varibad",
        reward_options=_CHEETAH_OPTS,
        doc="r = d v_x - 0.05 |a|^2, d in {-1, +1} (VariBAD, PEARL: the same two tasks in both splits)",
    )
    fams["AntDir"] = TaskFamily(
        "AntDir",
        "ant",
        _ant_dir,
        ("angle",),
        presets={
            "varibad": Preset(fixed([0.0, np.pi]), fixed([0.0, np.pi]), note="forward / backward along x"),
            "ldm": Preset(
                fixed(_QUARTERS), fixed(_DIAGONALS), eval_train=fixed(_QUARTERS), eval_test=fixed(_DIAGONALS)
            ),
            "uniform": Preset(uniform(0.0, TWO_PI), uniform(0.0, TWO_PI)),
        },
        default_preset="ldm",
        reward_options=_ANT_OPTS,
        doc="r = v_xy . (cos t, sin t) - 0.5 |a|^2 - 5e-4 |clip(cfrc_ext)|^2 + 1; ends when torso z leaves [0.2, 1]",
    )
    ldm_goal_eval = {
        "eval_train": goals_on_circle((0.5, 2.75), _QUARTERS),
        "eval_test": goals_on_circle((1.75,), _QUARTERS),
    }
    fams["AntGoal"] = TaskFamily(
        "AntGoal",
        "ant",
        _ant_goal,
        ("goal_x", "goal_y"),
        presets={
            "varibad": Preset(disk_annulus(0.0, 3.0), disk_annulus(0.0, 3.0), note="disk r <= 3"),
            "ldm": Preset(disk_annulus(2.5, 3.0, r_disk=1.0), disk_annulus(1.0, 2.5), **ldm_goal_eval),
        },
        default_preset="ldm",
        reward_options={"ctrl_cost_weight": 0.1, "contact_cost_weight": 0.5e-3},
        terminate_when_unhealthy=False,
        doc="r = -|xy - g|_1 - 0.1 |a|^2 - 5e-4 |clip(cfrc_ext)|^2; LDM trains on r <= 1 and 2.5 <= r <= 3",
    )
    fams["AntVel"] = TaskFamily(
        "AntVel",
        "ant",
        _ant_vel,
        ("velocity",),
        presets={
            "itts": Preset(
                uniform(0.0, 3.0),
                fixed(ITTS_ANT_VALIDATION),
                eval_train=fixed(ITTS_ANT_SELECTED),
                eval_test=fixed(ITTS_ANT_VALIDATION),
                note="maml_rl's ant_env_rand: v* ~ U[0, 3]; ITTS's validation tasks as the test split",
            ),
        },
        default_preset="itts",
        reward_options={"ctrl_cost_weight": 0.005, "contact_cost_weight": 0.5e-3, "survive_reward": 0.05},
        terminate_when_unhealthy=False,
        doc="r = -|v_x - v*| + 1 - 0.005 |a|^2 - 5e-4 |clip(cfrc_ext)|^2 + 0.05 (maml_rl / ITTS)",
    )
    fams["HumanoidDir"] = TaskFamily(
        "HumanoidDir",
        "humanoid",
        _humanoid_dir,
        ("angle",),
        presets={"varibad": Preset(uniform(0.0, TWO_PI), uniform(0.0, TWO_PI))},
        default_preset="varibad",
        reward_options={
            "forward_reward_weight": 1.25,
            "healthy_reward": 5.0,
            "ctrl_cost_weight": 0.1,
            "contact_cost_weight": 5e-7,
        },
        doc="r = 1.25 v_com . (cos t, sin t) + 5 healthy - 0.1 |a|^2 - min(5e-7 |cfrc_ext|^2, 10) (v5 weights)",
    )
    for name, robot in (("HopperRandParams", "hopper"), ("Walker2dRandParams", "walker2d")):
        fams[name] = TaskFamily(
            name,
            robot,
            _standard(ROBOTS[robot]),
            dynamics=_rand_params(),
            doc="v5 reward; body_mass, body_inertia, geom_friction x 1.5^U(-3,3), dof_damping x 1.3^U(-3,3)",
        )
    for name, robot, scales, ood in (
        ("HalfCheetahMassDamping", "half_cheetah", _DOMINO_SCALES, _DOMINO_OOD),
        ("AntMassDamping", "ant", _DOMINO_SCALES, _DOMINO_OOD),
        ("HopperMassDamping", "hopper", _HOPPER_SCALES, _HOPPER_OOD),
    ):
        fams[name] = TaskFamily(
            name,
            robot,
            _standard(ROBOTS[robot]),
            dynamics=_mass_damping(scales, ood),
            doc=f"v5 reward; mass and damping scales in {scales} (train), in {ood} (test)",
        )
    fams["CrippleAnt"] = TaskFamily(
        "CrippleAnt",
        "ant",
        _standard(ROBOTS["ant"]),
        dynamics=Dynamics(
            "cripple",
            train={"limbs": (0, 1, 2), "mass": _DOMINO_SCALES},
            test={"limbs": (3,), "mass": _DOMINO_OOD},
            limbs=((2, 3), (4, 5), (6, 7), (0, 1)),
        ),
        doc="v5 reward; one leg's two actuators zeroed (legs 0-2 train, 3 test) x mass scale",
    )
    fams["CrippleHalfCheetah"] = TaskFamily(
        "CrippleHalfCheetah",
        "half_cheetah",
        _standard(ROBOTS["half_cheetah"]),
        dynamics=Dynamics(
            "cripple",
            train={"limbs": (0, 1, 2, 3), "mass": (1.0,)},
            test={"limbs": (4, 5), "mass": (1.0,)},
            limbs=tuple((j,) for j in range(6)),
        ),
        doc="v5 reward; one joint's actuator zeroed (joints 0-3 train, 4-5 test)",
    )
    fams["SparseHalfCheetahVel"] = TaskFamily(
        "SparseHalfCheetahVel",
        "half_cheetah",
        _sparse_vel,
        ("velocity",),
        presets={"varibad": Preset(uniform(0.0, 3.0), uniform(0.0, 3.0))},
        default_preset="varibad",
        dynamics=_mass_damping(_DOMINO_SCALES, _DOMINO_OOD),
        reward_options={**_CHEETAH_OPTS, "goal_radius": 0.5},
        doc="r = 1 - |v_x - v*| when |v_x - v*| <= 0.5 else 0 (PEARL's sparsification); mass x damping varies",
    )
    fams["SparseAntGoal"] = TaskFamily(
        "SparseAntGoal",
        "ant",
        _sparse_goal,
        ("goal_x", "goal_y"),
        presets={"varibad": Preset(disk_annulus(0.0, 3.0), disk_annulus(0.0, 3.0))},
        default_preset="varibad",
        dynamics=_mass_damping(_DOMINO_SCALES, _DOMINO_OOD),
        reward_options={"goal_radius": 0.5},
        terminate_when_unhealthy=False,
        doc="r = 1 - |xy - g|_2 when within 0.5 of the goal else 0; mass x damping varies",
    )
    return fams


_FAMILIES: dict[str, TaskFamily] | None = None


def task_families() -> dict[str, TaskFamily]:
    """Every MuJoCo task family by name."""
    global _FAMILIES
    if _FAMILIES is None:
        _FAMILIES = _families()
    return _FAMILIES


def get_family(name: str) -> TaskFamily:
    fams = task_families()
    if name not in fams:
        from .point import POINT_FAMILIES

        if name in POINT_FAMILIES:
            return POINT_FAMILIES[name]
        known = sorted([*fams, *POINT_FAMILIES])
        raise ValueError(f"unknown MuJoCo task {name!r}; expected one of {known}")
    return fams[name]
