"""ProMP (Rothfuss et al. 2019): LVC inner step, clipped outer objective with a KL penalty.

ProMP = MAML-RL (``maml.py``) with
* the inner step on the LVC objective in its practical form J^LR (ProMP eq. 12): the likelihood
  ratio to the sampling policy times the advantage, i.e. TayPO-1 (``inner_estimator="lvc"``): exact
  first derivative, low-variance (diagonal log-prob) Hessian;
* the outer objective J^CLIP(theta') - eta * KL(pi_theta_old || pi_theta) (eq. 13), several PPO
  steps per meta-batch, the adaptation re-run from the current theta at each step on the same
  pre-update episodes (``outer="ppo"``, ``ppo_epochs``, ``clip``, ``kl_penalty`` = eta).
ProMP's defaults: 5 PPO steps, clip 0.3; eta is ours (ProMP adapts it per inner step).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from . import maml
from .rollout import ENVS


@dataclass
class ProMPConfig(maml.MAMLConfig):
    inner_estimator: str = "lvc"
    outer: str = "ppo"
    ppo_epochs: int = 5
    clip: float = 0.3
    kl_penalty: float = 0.01
    outer_lr: float = 0.005  # 5 Adam steps per meta-batch: a smaller rate than MAML's single step


train = functools.partial(maml.train, name="promp")  # maml.train with the ProMP config
CONFIG = ProMPConfig
__all__ = ["CONFIG", "ENVS", "ProMPConfig", "train"]
