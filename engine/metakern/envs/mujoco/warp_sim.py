"""The optional GPU path: the same environments on MuJoCo Warp (``pip install mujoco-warp``).

``backend="warp"`` runs all B environments as the worlds of one ``mujoco_warp`` model on the
env's device (a CUDA GPU; Warp's CPU device also works, slowly, which is how the tests run it).
Per-task model parameters are batched model fields (``put_model(batch_sizes=...)``, one row per
world) and ``mujoco_warp.set_const`` propagates them, as ``mj_setConst`` does on the CPU.

Differences from the C MuJoCo backends, by construction of MuJoCo Warp: float32 physics (results
agree with C MuJoCo to float32 precision over short horizons, not bit for bit); every world
steps on every call (a world that NEXT_STEP mode resets instead is stepped, then reset); a reset
runs the forward pass of every world, so derived fields such as ``xpos`` are those of the current
state rather than of the state one substep earlier (Ant's velocity uses them). The reward pass
and the observation gather copy the gathered fields to the host (numpy), as on the CPU path.
"""

from __future__ import annotations

import numpy as np

from .sim import ModelFacts


def warp_available() -> str | None:
    """None if mujoco_warp and warp import, else why not."""
    try:
        import mujoco_warp  # noqa: F401
        import warp  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the install
        return f"mujoco_warp is not installed ({exc}); pip install mujoco-warp"
    return None


class WarpSim(ModelFacts):
    def __init__(self, model, B: int, robot, dyn_fields: tuple[str, ...], device: str):
        import mujoco_warp as mjw
        import warp as wp

        super().__init__(model, robot)
        wp.init()
        self.wp, self.mjw = wp, mjw
        self.device = device
        self.B = B
        self.robot = robot
        with wp.ScopedDevice(device):
            self.m = mjw.put_model(model, batch_sizes={f: B for f in dyn_fields})
            self.d = mjw.make_data(model, nworld=B, nconmax=max(64, 4 * model.ngeom), njmax=max(256, 16 * model.nv))
        self._dyn = {f: np.tile(getattr(model, f), (B,) + (1,) * getattr(model, f).ndim) for f in dyn_fields}
        self._dirty = False
        self._pending: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.out: dict[str, np.ndarray] = {}
        self._fields = [(f, slice(None)) if isinstance(f, str) else f for f in robot.fields]
        self._gather()

    def body_mass(self, i: int | None = None):
        if i is None or "body_mass" not in self._dyn:
            return self.model_like.body_mass.copy()
        return self._dyn["body_mass"][i].copy()

    def set_model_field(self, i, name, value):
        self._dyn[name][i] = value
        self._dirty = True

    def set_const(self, i):
        self._dirty = True  # one batched set_const at flush time

    # state
    def reset_state(self, i, qpos, qvel):
        self._pending[i] = (qpos, qvel)

    def flush(self) -> None:
        """Apply the resets and model changes queued since the last call (one batched pass)."""
        if not self._pending and not self._dirty:
            return
        wp, mjw = self.wp, self.mjw
        with wp.ScopedDevice(self.device):
            if self._dirty:
                for name, arr in self._dyn.items():
                    getattr(self.m, name).assign(arr.astype(np.float32))
                mjw.set_const(self.m, self.d)
                self._dirty = False
            if self._pending:
                mask = np.zeros(self.B, dtype=bool)
                mask[list(self._pending)] = True
                mjw.reset_data(self.m, self.d, reset=wp.array(mask, dtype=bool))
                qpos, qvel = self.d.qpos.numpy(), self.d.qvel.numpy()
                for i, (p, v) in self._pending.items():
                    qpos[i], qvel[i] = p, v
                self.d.qpos.assign(qpos)
                self.d.qvel.assign(qvel)
                self._pending.clear()
            mjw.forward(self.m, self.d)
            if self.robot.post_constraint:
                mjw.rne_postconstraint(self.m, self.d)
        self._gather()

    def step(self, ctrl, active):
        wp, mjw = self.wp, self.mjw
        with wp.ScopedDevice(self.device):
            self.d.ctrl.assign(ctrl.astype(np.float32))
            for _ in range(self.robot.frame_skip):
                mjw.step(self.m, self.d)
            if self.robot.post_constraint:
                mjw.rne_postconstraint(self.m, self.d)
        self._gather()

    def _gather(self):
        for name, rows in self._fields:
            self.out[name] = getattr(self.d, name).numpy()[:, rows].reshape(self.B, -1).astype(np.float64)
