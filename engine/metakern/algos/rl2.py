"""RL2 (Duan et al. 2016): a GRU actor-critic meta-learns across trials of several episodes of one task.

The recurrent state carries what the agent learnt about the task from one episode to the next and
is reset only when a new trial (a new task) starts; the objective is the trial's total reward.
Trained with recurrent PPO (or A2C) and truncated BPTT; machinery and evaluation in ``recurrent.py``.
"""

import functools
from dataclasses import dataclass

from . import recurrent


@dataclass
class RL2Config(recurrent.RecurrentConfig):
    """RL2 settings (``metakern train rl2``): every episode's reward counts (``explore_episodes=0``)."""


CONFIG = RL2Config
ENVS = recurrent.ENVS
train = functools.partial(recurrent.train, name="rl2")
