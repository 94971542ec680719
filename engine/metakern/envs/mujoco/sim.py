"""Many MuJoCo simulations, each with its own model, stepped together.

``MjBatch`` owns B ``MjModel`` copies (so every environment can carry its own masses, damping,
friction...) and B ``MjData``. ``step(ctrl)`` writes each row of ``ctrl`` into its simulation,
calls ``mj_step`` ``frame_skip`` times and, where the observation needs contact forces,
``mj_rnePostConstraint`` (exactly what gymnasium's ``MujocoEnv.do_simulation`` does), then copies
the fields the task reads (``qpos``, ``qvel``, ``cfrc_ext``...) into contiguous ``[B, n]`` arrays.

Backends:

* ``cpp`` (default): ``metakern._C.mj_batch_step``, an OpenMP loop over the simulations with the
  GIL released. It calls the libmujoco that ``import mujoco`` loaded (see ``cpp/mujoco/mj_batch.h``:
  no MuJoCo headers or link step, so any MuJoCo version the Python package brings works).
* ``reference``: the same sequence of MuJoCo calls in a plain Python loop, one simulation at a
  time. Both run the same MuJoCo functions on the same data in the same order, so they agree
  bit for bit (the tests check this).

Model parameters: ``set_model_field(ids, name, values)`` writes per-simulation values of a real
``MjModel`` field; ``set_const(ids)`` then runs ``mj_setConst``, which recomputes the constants
MuJoCo derives from masses and inertias (``body_subtreemass``, ``body_invweight0``,
``dof_invweight0``, ``actuator_acc0``, ...). It uses the simulation's ``MjData`` as scratch, so
it is only called right before a reset.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

import numpy as np

BROKEN_MUJOCO = ("4.0.0",)  # 4.0.0's sparse Cholesky gives wrong accelerations (fixed in 4.0.1)


def load_mujoco():
    """Import ``mujoco``, refusing the releases with known solver bugs. Raises ``ImportError``
    with the install command when it is missing."""
    try:
        mujoco = importlib.import_module("mujoco")
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "metakern's MuJoCo environments need the mujoco package: pip install 'mujoco>=3.2,<4' "
            "(or >=4.0.1), e.g. pip install 'metakern[mujoco]'"
        ) from exc
    if mujoco.__version__ in BROKEN_MUJOCO:
        raise ImportError(
            f"mujoco {mujoco.__version__} has a sparse-Cholesky bug that gives wrong accelerations "
            "(fixed in 4.0.1); install mujoco>=4.0.1 or a 3.x release: "
            "pip uninstall -y mujoco mujoco-core && pip install 'mujoco>=3.2,<4'"
        )
    return mujoco


def gymnasium_asset(name: str) -> str:
    """Path of one of gymnasium's MuJoCo model files (``half_cheetah.xml``, ``ant.xml``...):
    the exact models of the v5 environments."""
    import gymnasium.envs.mujoco as gm

    path = Path(gm.__file__).parent / "assets" / name
    if not path.is_file():
        raise FileNotFoundError(f"gymnasium ships no MuJoCo asset {name!r} (looked in {path.parent})")
    return str(path)


_MODEL_CACHE: dict[str, Any] = {}


def compile_model(xml_path: str):
    """Compile an MJCF file once per process (MuJoCo prints its compiler warnings only once)."""
    mujoco = load_mujoco()
    if xml_path not in _MODEL_CACHE:
        _MODEL_CACHE[xml_path] = mujoco.MjModel.from_xml_path(xml_path)
    return _MODEL_CACHE[xml_path]


def _addresses(arrays) -> np.ndarray:
    return np.array([a.ctypes.data for a in arrays], dtype=np.int64)


class ModelFacts:
    """What an env batch reads from the compiled model, whichever engine steps it."""

    has_body_mass = True

    def __init__(self, model, robot):
        self.model_like = model
        self.nu = model.nu
        self.dt = float(model.opt.timestep) * robot.frame_skip

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        r = self.model_like.actuator_ctrlrange
        return r[:, 0].astype(np.float32), r[:, 1].astype(np.float32)

    def initial_state(self) -> tuple[np.ndarray, np.ndarray]:
        return self.model_like.qpos0.ravel().copy(), np.zeros(self.model_like.nv)

    def model_field(self, name: str) -> np.ndarray:
        """The base model's value of a real ``MjModel`` array field (a copy)."""
        value = getattr(self.model_like, name, None)
        if not isinstance(value, np.ndarray) or value.dtype != np.float64:
            raise ValueError(f"MjModel has no real-valued array field {name!r}")
        return value.copy()

    def dynamics_size(self, dyn) -> int:
        from .tasks import dynamics_size

        return dynamics_size(dyn, self.model_like)


class MjBatch:
    """B simulations of one MJCF model, each with its own ``MjModel`` copy and ``MjData``.

    Args:
        model: the compiled ``MjModel`` every simulation starts from (copied B times).
        num_envs: B.
        fields: the ``MjData`` fields to gather after every step (``name`` or ``(name, rows)``
            where ``rows`` is a slice of the field's first axis, e.g. ``("cfrc_ext", slice(1, None))``).
            Gathered arrays are ``self.out[name]``, float64 ``[B, n]``.
        frame_skip: ``mj_step`` calls per ``step``.
        post_constraint: call ``mj_rnePostConstraint`` after stepping (contact forces, ``cacc``).
        num_threads: threads of the ``cpp`` backend (0: OpenMP's default).
        backend: ``"cpp"`` or ``"reference"``.
    """

    def __init__(
        self,
        model,
        num_envs: int,
        fields: list[Any],
        *,
        frame_skip: int,
        post_constraint: bool,
        num_threads: int = 0,
        backend: str = "cpp",
    ):
        mujoco = load_mujoco()
        if backend not in ("cpp", "reference"):
            raise ValueError(f"backend must be 'cpp' or 'reference', got {backend!r}")
        if not isinstance(num_threads, int) or num_threads < 0:
            raise ValueError(f"num_threads must be a non-negative int, got {num_threads!r}")
        self.mujoco = mujoco
        self.base = model
        self.num_envs = B = num_envs
        self.frame_skip = int(frame_skip)
        self.post_constraint = bool(post_constraint)
        self.num_threads = num_threads
        self.backend = backend
        self.models = [copy.copy(model) for _ in range(B)]
        self.datas = [mujoco.MjData(m) for m in self.models]
        self.nu = model.nu
        self._model_ptr = np.array([m._address for m in self.models], dtype=np.int64)
        self._data_ptr = np.array([d._address for d in self.datas], dtype=np.int64)
        self._ctrl_ptr = _addresses(d.ctrl for d in self.datas)
        self.out: dict[str, np.ndarray] = {}
        self._views: list[tuple[str, list[np.ndarray]]] = []
        for spec in fields:
            name, rows = (spec, slice(None)) if isinstance(spec, str) else spec
            views = [getattr(d, name)[rows] for d in self.datas]
            if not views[0].flags.c_contiguous or views[0].dtype != np.float64:
                raise ValueError(f"MjData.{name}[{rows}] is not a contiguous float64 block")
            self._views.append((name, views))
            self.out[name] = np.zeros((B, views[0].size))
        self._src = np.stack([_addresses(v) for _, v in self._views]) if self._views else np.zeros((0, B), np.int64)
        self._len = np.array([v[0].size for _, v in self._views], dtype=np.int64)
        self._dst = np.array([self.out[n].ctypes.data for n, _ in self._views], dtype=np.int64)
        if backend == "cpp":
            from ... import _backend

            self._C = _backend.cpp_module()
            if self._C is None:
                raise RuntimeError(f"metakern's C++ module is not built: {_backend.load_error('metakern._C')}")
            err = self._C.mj_load_api()
            if err:
                raise RuntimeError(f"metakern's MuJoCo loop cannot run: {err}")

    # -- stepping --------------------------------------------------------------------------------

    def step(self, ctrl: np.ndarray, active: np.ndarray | None = None) -> None:
        """Advance every simulation (or those where ``active``) by ``frame_skip`` steps with
        controls ``ctrl`` (float64 ``[B, nu]``, C-contiguous) and refresh ``self.out``."""
        if self.backend == "reference":
            self._reference_step(ctrl, active)
            return
        act = 0 if active is None else active.ctypes.data
        self._C.mj_batch_step(
            self.num_envs,
            self._model_ptr.ctypes.data,
            self._data_ptr.ctypes.data,
            ctrl.ctypes.data,
            self.nu,
            self._ctrl_ptr.ctypes.data,
            self.frame_skip,
            self.post_constraint,
            act,
            len(self._views),
            self._src.ctypes.data,
            self._len.ctypes.data,
            self._dst.ctypes.data,
            self.num_threads,
        )

    def _reference_step(self, ctrl: np.ndarray, active: np.ndarray | None) -> None:
        mj = self.mujoco
        for i, (m, d) in enumerate(zip(self.models, self.datas, strict=True)):
            if active is not None and not active[i]:
                continue
            d.ctrl[:] = ctrl[i]
            mj.mj_step(m, d, nstep=self.frame_skip)
            if self.post_constraint:
                mj.mj_rnePostConstraint(m, d)
            self._gather_row(i)

    def _gather_row(self, i: int) -> None:
        for name, views in self._views:
            self.out[name][i] = views[i].reshape(-1)

    # -- state and model -------------------------------------------------------------------------

    def reset_state(self, i: int, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """gymnasium's reset of simulation i: ``mj_resetData``, then ``qpos``/``qvel``,
        ``mj_forward``, then gather its fields."""
        mj = self.mujoco
        m, d = self.models[i], self.datas[i]
        mj.mj_resetData(m, d)
        d.qpos[:] = qpos
        d.qvel[:] = qvel
        if m.na == 0:
            d.act[:] = None
        mj.mj_forward(m, d)
        self._gather_row(i)

    def set_model_field(self, i: int, name: str, value: np.ndarray) -> None:
        """Write simulation i's ``MjModel.<name>`` (same shape as the base model's)."""
        target = getattr(self.models[i], name)
        target[...] = value

    def set_const(self, i: int) -> None:
        """``mj_setConst`` for simulation i (after changing masses or inertias; clobbers its data)."""
        self.mujoco.mj_setConst(self.models[i], self.datas[i])
