"""The README's Python examples run as written (each block on its own, in a fresh namespace)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks() -> list[tuple[int, str]]:
    text = README.read_text()
    found = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        found.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return found


def _params():
    params = []
    for line, code in _blocks():
        marks = []
        if "mujoco" in code and importlib.util.find_spec("mujoco") is None:
            marks.append(pytest.mark.skip(reason="the MuJoCo example needs mujoco (pip install metakern[mujoco])"))
        params.append(pytest.param(code, id=f"line{line}", marks=marks))
    return params


def test_the_readme_has_examples():
    assert len(_blocks()) >= 6


@pytest.mark.parametrize("code", _params())
def test_readme_example_runs(code):
    exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
