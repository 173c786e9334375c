"""History never deploys: a backfill, or a run on older data than production's, is registered as
`historical` and deploy skips it; the trigger param deploy=skip|force overrides. Re-registering a
version whose content-addressed copy was changed since repairs it from the run's model, or refuses."""

import datetime as dt
import hashlib
import uuid
from pathlib import Path

import pytest

from conftest import DS, run_step, run_steps
from keiko.cli import main
from keiko.config import settings
from keiko.contract import ModelLayout, RunLayout, TrainResult
from keiko.process import EXIT_SKIPPED, EXIT_USER_ERROR
from keiko.registry import open_registry
from keiko.storage import open_store

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


# -- the content-addressed copy (versions/<sha256>/model.npz) on re-registration ------------------------


@pytest.fixture(params=["sql", pytest.param("dynamodb", marks=pytest.mark.aws)])
def registered(request, run_home, monkeypatch):
    """v1 registered on the registry backend, its copy at versions/<sha256>/; (run's model path, copy path)."""
    if request.param == "dynamodb":
        request.getfixturevalue("aws")
        monkeypatch.setenv("KEIKO_REGISTRY_URL", f"dynamodb://keiko-register-{uuid.uuid4().hex[:12]}")
        assert run_step("register") == 0  # v1 on this backend
    store = open_store(settings())
    trained = RunLayout(store, "ctr", DS).read_result(TrainResult)
    entry = open_registry(settings().registry_url).get("ctr", 1)
    assert entry.artifact_sha256 == trained.model_sha256
    assert entry.artifact_uri == ModelLayout(store, "ctr").published(trained.model_sha256, "model.npz")
    return run_home / "artifacts" / "ctr" / DS / "model.npz", path_of(entry.artifact_uri)


def path_of(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reregistering_repairs_a_changed_copy_from_the_runs_model(registered, capsys):
    model, copy = registered
    copy.write_bytes(copy.read_bytes()[:100])  # truncated by someone
    truncated = sha256_of(copy)
    capsys.readouterr()
    assert run_step("register") == 0
    assert copy.read_bytes() == model.read_bytes()
    out = capsys.readouterr().out
    assert f"repaired {copy.as_uri()}: it had sha256 {truncated}; rewrote it from {model.as_uri()}" in out
    assert [v.version for v in open_registry(settings().registry_url).list("ctr")] == [1]


@pytest.mark.parametrize("run_model", ["changed", "missing"])
def test_reregistering_refuses_a_changed_copy_the_run_cannot_repair(registered, run_model, capsys):
    model, copy = registered
    registered_sha = sha256_of(model)
    copy.write_bytes(b"edited by hand")
    if run_model == "changed":
        model.write_bytes(b"not the registered model either")
        state = f"has sha256 {sha256_of(model)}"
    else:
        model.unlink()
        state = "is missing"
    capsys.readouterr()
    assert run_step("register") == EXIT_USER_ERROR
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"keiko: error: {copy.as_uri()} has sha256 {sha256_of(copy)}, not {registered_sha} (the sha256 it is "
        f"stored and registered under); it cannot be repaired from the run's {model.as_uri()}, which {state}: "
        "restore the file, or rerun train and register"
    )
    assert copy.read_bytes() == b"edited by hand"  # kept for whoever investigates, and loudly refused
