"""E-RL2 (Stadie et al. 2018): RL2 whose objective drops the rewards of the exploratory episodes.

The first ``explore_episodes`` (3) episodes of each trial are exploratory: their rewards are zeroed
in the returns and advantages, while the agent still receives them as inputs (Sec. 3.4, Eq. 8), so
it is paid only for what it collects after exploring. Machinery and evaluation in ``recurrent.py``.
"""

import functools
from dataclasses import dataclass

from . import recurrent


@dataclass
class ERL2Config(recurrent.RecurrentConfig):
    """E-RL2 settings (``metakern train erl2``): the paper's 3 exploratory episodes of 5-episode trials."""

    explore_episodes: int = 3


CONFIG = ERL2Config
ENVS = recurrent.ENVS
train = functools.partial(recurrent.train, name="erl2")
