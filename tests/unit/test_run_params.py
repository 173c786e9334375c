import datetime as dt
import json

import pytest

from keiko.errors import KeikoError, ModelConfigError
from keiko.modeldef import load_model
from keiko.run_params import RUN_PARAMS_ENV, RunParams
from keiko.stages.context import StageContext


def test_a_run_by_hand_takes_model_yaml_as_it_is(monkeypatch):
    monkeypatch.delenv(RUN_PARAMS_ENV, raising=False)
    ctx = StageContext.create("ctr", dt.date(2026, 11, 21))
    assert ctx.params == RunParams(window_days=8, algorithm={"max_epochs": 20, "eta0": 1.0, "alpha": 1e-6})
    assert ctx.model.config == load_model("ctr").config


def test_a_trigger_changes_the_window_and_the_overridable_params_only(monkeypatch):
    values = {"window_days": 12, "max_epochs": 3, "reason": "try a longer window", "deploy": "skip"}
    monkeypatch.setenv(RUN_PARAMS_ENV, json.dumps(values))
    ctx = StageContext.create("ctr", dt.date(2026, 11, 21))
    original = load_model("ctr")
    assert ctx.model.config.window_days == 12 and ctx.window[0].isoformat() == "2026-11-10"
    assert ctx.model.config.algorithm.params == {**original.config.algorithm.params, "max_epochs": 3}
    assert ctx.model.config_sha256 == original.config_sha256  # the file's; the trigger is recorded beside it
    assert ctx.trigger == {
        "run_type": "manual",
        "deploy": "skip",
        "deploy_strategy": "rolling",
        "reason": "try a longer window",
        "window_days": 12,
        "algorithm": {"max_epochs": 3, "eta0": 1.0, "alpha": 1e-6},
    }


def test_a_run_may_pick_a_deploy_strategy_its_model_yaml_has_settings_for():
    assert RunParams.parse({"deploy_strategy": "canary"}, load_model("ctr").config).deploy_strategy == "canary"
    with pytest.raises(KeikoError, match="run parameter deploy_strategy='canary': 'canary' is not one of"):
        RunParams.parse({"deploy_strategy": "canary"}, load_model("cvr").config)  # cvr has no deploy.canary


def test_an_emptied_reason_is_no_reason():
    """The trigger form sends an emptied text field as null."""
    assert RunParams.parse({"reason": None}, load_model("ctr").config).reason == ""


@pytest.mark.parametrize(
    "values, message",
    [
        ({"window_days": 200}, "run parameter window_days=200: 200 is greater than the maximum of 90"),
        ({"max_epochs": 0}, "run parameter max_epochs=0: 0 is less than the minimum of 1"),
        (
            {"depth": 3},
            "unknown run parameter depth; known: deploy, deploy_strategy, reason, window_days, max_epochs, eta0, alpha",
        ),
        ({"deploy": "later"}, "run parameter deploy='later': 'later' is not one of ['auto', 'skip', 'force']"),
    ],
)
def test_the_stage_validates_the_params_again(values, message):
    """`keiko stage` can be run by hand with any KEIKO_RUN_PARAMS: it refuses what the trigger form would."""
    with pytest.raises(KeikoError) as error:
        RunParams.parse(values, load_model("ctr").config)
    assert str(error.value) == message


@pytest.mark.parametrize("text", ["not json", "[1, 2]"])
def test_params_that_are_not_a_json_object_are_a_clear_error(monkeypatch, text):
    monkeypatch.setenv(RUN_PARAMS_ENV, text)
    with pytest.raises(KeikoError, match=RUN_PARAMS_ENV):
        RunParams.from_environment(load_model("ctr").config)


@pytest.mark.parametrize(
    "overridable, message",
    [
        ("    epochs: {type: integer}\n", "overridable.epochs: not one of params"),
        ("    reason: {type: string}\n", "the name is taken by the run parameter 'reason'"),
        ("    max_epochs: {type: integer, maximum: 10}\n", "params.max_epochs itself is not allowed"),
    ],
)
def test_model_yaml_overrides_must_name_a_param_and_allow_its_own_value(project_copy, overridable, message):
    path = project_copy / "include" / "models" / "ctr" / "model.yaml"
    text = path.read_text()
    start = text.index("  overridable:\n") + len("  overridable:\n")
    end = text.index("\n", text.index("alpha:", start)) + 1
    path.write_text(text[:start] + overridable + text[end:])
    with pytest.raises(ModelConfigError, match=message):
        load_model("ctr")
