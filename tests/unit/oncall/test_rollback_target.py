"""`keiko rollback` picks its target from the registry and refuses, before any replica is touched, what the
registry would not let serve."""

from __future__ import annotations

import re

import pytest

from keiko.cli import main
from keiko.errors import KeikoError
from keiko.oncall.rollback import choose_target
from keiko.process import EXIT_USER_ERROR
from keiko.registry import Registry
from keiko.registry.sql import SqlRegistry


def register(registry: Registry, window_start: str, status: str = "registered", reason: str = "") -> int:
    registration = registry.register(
        model="ctr", ds="2026-11-21", window_start=window_start, window_end="2026-11-21",
        artifact_uri=f"file:///versions/{window_start}.npz", artifact_sha256=window_start, code_version="0.1",
        config_sha256="c", features_sha256="f", algorithm="hashed_logistic_regression", metrics={},
        status=status, reason=reason,
    )  # fmt: skip
    return registration.version.version


@pytest.fixture
def registry(tmp_path) -> SqlRegistry:
    """v1 and v2 registered, v3 rejected; production moved v1 -> v2."""
    registry = SqlRegistry(f"sqlite:///{tmp_path / 'registry.db'}")
    register(registry, "2026-11-13")
    register(registry, "2026-11-14")
    register(registry, "2026-11-15", "rejected", "logloss_regression 0.0123 not [-inf, 0.005]")
    registry.move_alias("ctr", 1)
    registry.move_alias("ctr", 2)
    return registry


def test_the_default_target_is_what_production_pointed_at_before(registry):
    current, target = choose_target(registry, "ctr", None)
    assert (current, target.version) == (2, 1)


def test_rolling_back_twice_does_not_redeploy_what_was_rolled_back(registry):
    registry.move_alias("ctr", 1, note="gate_serving failed 2026-11-21")
    with pytest.raises(
        KeikoError,
        match="ctr production went back from v2 to v1 in its last move: rolling back again would redeploy v2",
    ):
        choose_target(registry, "ctr", None)
    assert choose_target(registry, "ctr", 2)[1].version == 2  # named, it is a roll forward


def test_any_registered_version_can_be_named(registry):
    register(registry, "2026-11-16")  # v4: never production
    assert choose_target(registry, "ctr", 4)[1].version == 4


@pytest.mark.parametrize(
    ("to", "message"),
    [
        (2, "ctr v2 is production already: nothing to roll back"),
        (9, "ctr has no version 9; registered: v1, v2"),
        (3, "ctr v3 is rejected (logloss_regression 0.0123 not [-inf, 0.005]): only a registered version may serve"),
    ],
    ids=["production already", "unknown", "rejected"],
)
def test_a_target_that_cannot_serve_is_refused(registry, to, message):
    with pytest.raises(KeikoError, match="^" + re.escape(message)):
        choose_target(registry, "ctr", to)


def test_a_historical_target_is_refused(registry):
    register(registry, "2026-11-12", "historical", "a backfill run: backfills never deploy")
    with pytest.raises(KeikoError, match=re.escape("ctr v4 is historical (a backfill run: backfills never deploy)")):
        choose_target(registry, "ctr", 4)


def test_a_first_production_has_nothing_before_it(tmp_path):
    registry = SqlRegistry(f"sqlite:///{tmp_path / 'registry.db'}")
    register(registry, "2026-11-13")
    with pytest.raises(KeikoError, match=r"^ctr has no production version yet: nothing to roll back$"):
        choose_target(registry, "ctr", None)
    registry.move_alias("ctr", 1)
    with pytest.raises(KeikoError, match="production v1 is its first: no previous version; name one with --to"):
        choose_target(registry, "ctr", None)


def test_the_command_refuses_in_one_line_with_exit_2(run_home, monkeypatch, capsys):
    monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", "http://127.0.0.1:9")  # never reached: refused before
    assert main(["rollback", "ctr"]) == EXIT_USER_ERROR
    assert capsys.readouterr().err == "keiko: error: ctr has no production version yet: nothing to roll back\n"
    assert main(["rollback", "nope"]) == EXIT_USER_ERROR
    assert "unknown model 'nope'" in capsys.readouterr().err
