"""The phase timer: a phase inside another is not counted twice; what no phase claims is own work."""

import importlib

import pytest

import keiko.phases


@pytest.fixture
def clock(monkeypatch):
    """A fresh keiko.phases on a clock that moves only when told."""
    now = [100.0]
    monkeypatch.setattr("time.perf_counter", lambda: now[0])
    phases = importlib.reload(keiko.phases)
    yield phases, now
    monkeypatch.undo()
    importlib.reload(keiko.phases)


def test_nested_phases_are_exclusive_and_the_rest_is_own_work(clock):
    phases, now = clock
    now[0] += 1.0  # before any phase: imports, claimed below
    phases.claim("import keiko")
    with phases.phase("validate"):
        now[0] += 2.0
        with phases.phase("import great_expectations"):
            now[0] += 3.0
        now[0] += 0.5
    now[0] += 4.0  # the gate's own work
    with phases.phase("validate"):  # a phase entered twice adds up
        now[0] += 0.25
    figures = phases.seconds()
    assert figures.pop("start") >= 0.0
    assert figures == {"import keiko": 1.0, "validate": 2.75, "import great_expectations": 3.0, "own work": 4.0}
