"""MuJoCo meta-RL task distributions with batched, threaded stepping.

``MujocoBatchedEnv(task, num_envs, ...)`` steps B environments of one task family, each with its
own task (reward parameters and model parameters), on a thread pool (``sim.MjBatch``), and returns
torch tensors; ``MujocoVectorEnv`` is its ``gymnasium.vector.VectorEnv``. Families
(``task_families()``):

=========================  =======================================================================
plain v5 bodies            ``HalfCheetah``, ``Hopper``, ``Walker2d``, ``Ant``, ``Humanoid``
reward varies              ``HalfCheetahVel``, ``HalfCheetahDir``, ``AntDir``, ``AntGoal``,
                           ``AntVel`` (ITTS), ``HumanoidDir``
dynamics vary              ``HopperRandParams``, ``Walker2dRandParams`` (VariBAD / PEARL),
                           ``HalfCheetahMassDamping``, ``AntMassDamping``, ``HopperMassDamping``,
                           ``CrippleAnt``, ``CrippleHalfCheetah`` (DOMINO)
sparse reward              ``SparseHalfCheetahVel``, ``SparseAntGoal`` (with mass x damping),
                           ``SparsePointRobot`` (PEARL, no MuJoCo), ``SparsePointRobotDynamics``
                           (its motor's gain and rotation vary per task)
=========================  =======================================================================

Needs ``pip install 'mujoco>=3.2,<4'`` (or >= 4.0.1; 4.0.0 is refused for its solver bug).
"""

from .env import MujocoBatchedEnv
from .sim import MjBatch, load_mujoco
from .tasks import TaskFamily, get_family, task_families

__all__ = ["MjBatch", "MujocoBatchedEnv", "TaskFamily", "get_family", "load_mujoco", "task_families"]
