"""tests/soak.py (`make soak`) stays runnable: one random case of each family, all passing."""

import soak


def test_soak_runs_every_family_once(capsys):
    assert soak.main(["--rounds", "1", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert all(f"{family} 1" in out for family in soak.FAMILIES), out
