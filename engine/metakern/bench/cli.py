"""Placeholder: `metakern bench` and `metakern profile` are added by the benchmark harness."""


def add_parsers(sub) -> None:
    return None
