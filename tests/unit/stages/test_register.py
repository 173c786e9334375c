"""History never deploys: a backfill, or a run on older data than production's, is registered as
`historical` and deploy skips it; the trigger param deploy=skip|force overrides."""

import datetime as dt

import pytest

from conftest import DS, run_steps
from keiko.cli import main
from keiko.config import settings
from keiko.process import EXIT_SKIPPED, EXIT_USER_ERROR
from keiko.registry import open_registry

EARLIER = (dt.date.fromisoformat(DS) - dt.timedelta(days=1)).isoformat()
UP_TO_REGISTER_EARLIER = ("extract", "features", "train", "evaluate", "gate_evaluation", "register")


@pytest.fixture
def registry(run_home):
    registry = open_registry(settings().registry_url)
    registry.move_alias("ctr", 1)  # production: v1, data up to DS
    return registry


def deploy(ds: str = DS) -> int:
    return main(["stage", "deploy", "--model", "ctr", "--ds", ds])


def test_a_run_on_older_data_than_production_is_history(registry, capsys):
    run_steps(*UP_TO_REGISTER_EARLIER, ds=EARLIER)
    entry = registry.get("ctr", 2)
    # Production v1 trained on EARLIER (its test day is DS): no comparison with it on EARLIER's test rows.
    blessing = entry.metrics["blessing"]
    assert blessing["production_version"] is None and "logloss_regression" not in blessing["metrics"]
    assert blessing["reasons"][-1].endswith("(production trained on the test day: absolute only)")
    assert "comparing with it is not out of time" in capsys.readouterr().out
    assert entry.status == "historical"
    assert entry.reason == f"its data window ends {EARLIER}, before production v1's ({DS})"
    capsys.readouterr()
    assert deploy(EARLIER) == EXIT_SKIPPED
    assert "not deployed: historical: its data window ends" in capsys.readouterr().out
    assert registry.alias("ctr") == 1


def test_a_backfill_run_is_history_even_on_newer_data(run_home, monkeypatch):
    for path in run_home.glob("registry.db*"):  # an empty registry: no production, nothing registered yet
        path.unlink()
    monkeypatch.setenv("KEIKO_RUN_TYPE", "backfill")
    run_steps("register")
    entry = open_registry(settings().registry_url).get("ctr", 1)
    assert (entry.status, entry.reason) == ("historical", "a backfill run: backfills never deploy")


def test_deploy_force_registers_history_as_deployable(registry, monkeypatch):
    monkeypatch.setenv("KEIKO_RUN_PARAMS", '{"deploy": "force"}')
    run_steps(*UP_TO_REGISTER_EARLIER, ds=EARLIER)
    assert registry.get("ctr", 2).status == "registered"


def test_deploy_skip_leaves_production_alone(registry, monkeypatch, capsys):
    monkeypatch.setenv("KEIKO_RUN_PARAMS", '{"deploy": "skip"}')
    capsys.readouterr()
    assert deploy() == EXIT_SKIPPED
    assert "the run asked deploy=skip; production stays v1" in capsys.readouterr().out


def test_an_unknown_deploy_mode_is_a_clear_error(run_home, monkeypatch, capsys):
    monkeypatch.setenv("KEIKO_RUN_PARAMS", '{"deploy": "sometimes"}')
    assert deploy() == EXIT_USER_ERROR
    assert "run parameter deploy='sometimes': 'sometimes' is not one of ['auto', 'skip', 'force']" in (
        capsys.readouterr().err
    )
