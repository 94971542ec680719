"""The thin algorithm layer: meta-RL algorithms composed from metakern ops and environments.

One module per algorithm, each with a config dataclass (``CONFIG``; defaults from the papers), a
``train(config, run_dir, resume=..., progress=...)`` that writes a run folder (``algos.run``) and
the envs it supports (``ENVS``). ``metakern train ALGO --env ENV`` runs them (``algos.cli``).

=========  =================================================================  =====================
name       algorithm                                                          envs
=========  =================================================================  =====================
maml       MAML-RL, estimator per slot (inner value / Hessian / outer),       krazyworld, maze,
           outer VPG, PPO or TRPO (``maml.py``)                               tabular
emaml      E-MAML: MAML + the exploration term (``emaml.py``)                 krazyworld, maze,
                                                                              tabular
promp      ProMP: LVC inner step, clipped outer with a KL penalty            krazyworld, maze,
           (``promp.py``)                                                     tabular
lola       LOLA-DiCE, on- and off-policy, and naive learners (``lola.py``)    ipd
rl2        RL2: GRU actor-critic over trials, recurrent PPO / A2C with         krazyworld, maze,
           truncated BPTT (``rl2.py``, machinery in ``recurrent.py``)          harlow
erl2       E-RL2: RL2 without the exploratory episodes' rewards in the         krazyworld, maze,
           objective (``erl2.py``)                                            harlow
metods     MetODS: the dynamic-synapse policy on the fused op, same            krazyworld, maze,
           training loop (``metods.py``)                                      harlow
=========  =================================================================  =====================
"""

ALGORITHMS = ("maml", "emaml", "promp", "lola", "rl2", "erl2", "metods")


def algorithm(name: str):
    """The module of algorithm ``name``."""
    import importlib

    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}: expected one of {ALGORITHMS}")
    return importlib.import_module(f"{__name__}.{name}")
