"""GridNavi rules and LDM's goal split (metakern/envs/gridnavi.py, cpp/envs/gridnavi.h)."""

import pytest
import torch
from metakern.envs import GridNavi, gridnavi_goals


def test_ldm_split_sizes_and_disjointness():
    train, test, everything = (gridnavi_goals(7, s) for s in ("train", "test", "all"))
    assert len(train) == 18 and len(test) == 27 and len(everything) == 45
    as_set = lambda g: {tuple(c) for c in g.tolist()}  # noqa: E731
    assert as_set(train).isdisjoint(as_set(test))
    assert as_set(train) | as_set(test) == as_set(everything)
    assert all(max(c) in (2, 6) for c in as_set(train))
    assert all(max(c) >= 2 for c in as_set(everything))  # never in the 2x2 corner at the start
    assert len(gridnavi_goals(5, "train")) == 21 and len(gridnavi_goals(5, "test")) == 21
    with pytest.raises(ValueError):
        gridnavi_goals(7, "valid")
    with pytest.raises(ValueError):
        gridnavi_goals(2)


@pytest.mark.parametrize("backend", ["cpp", "reference"])
def test_moves_walls_and_reward(backend):
    env = GridNavi(1, size=5, backend=backend, split="all", resample_tasks=False)
    goals = env.family.goals.tolist()
    env.set_tasks(goals.index([2, 1]))
    steps = [
        (4, [0, 0], -0.1),
        (3, [0, 0], -0.1),
        (2, [1, 0], -0.1),
        (2, [2, 0], -0.1),
        (1, [2, 1], 1.0),
        (0, [2, 1], 1.0),
        (1, [2, 2], -0.1),
        (1, [2, 3], -0.1),
        (1, [2, 4], -0.1),
        (1, [2, 4], -0.1),
    ]
    for action, pos, reward in steps:
        r = env.step(torch.tensor([action], dtype=torch.int32))
        assert r.obs[0].tolist() == pos
        assert r.reward[0].item() == pytest.approx(reward)
        assert not r.terminated[0]


def test_defaults_follow_the_papers():
    env = GridNavi(2)
    assert env.max_steps == 30 and env.episodes_per_trial == 4 and env.family.num_tasks() == 18
    assert GridNavi(2, size=5).max_steps == 15
