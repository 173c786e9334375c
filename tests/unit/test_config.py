"""The configuration surface: one list of settings (config.SETTINGS), all of them documented, none unknown."""

import re

import pytest

from conftest import ROOT
from keiko.config import SETTINGS, settings
from keiko.errors import KeikoError


def keiko_variables_read_by_the_code() -> set[str]:
    found = set()
    for path in (ROOT / "plugins" / "keiko").rglob("*.py"):
        text = path.read_text()
        found |= set(re.findall(r"""["'](KEIKO_[A-Z0-9_]+)["']""", text))
        found |= {f"{prefix}<MODEL>" for prefix in re.findall(r"""f["'](KEIKO_[A-Z_]+_)\{""", text)}
    return found


def test_every_variable_the_code_reads_is_a_listed_setting():
    listed = {s.env for s in SETTINGS}
    # Set by the operators for one run, not configuration.
    per_run = {"KEIKO_RUN_ID", "KEIKO_RUN_TYPE", "KEIKO_RUN_PARAMS", "KEIKO_RESULT_FILE", "KEIKO_RETRIES_LEFT"}
    per_run |= {"KEIKO_APPROVAL", "KEIKO_APPROVED_BY"}  # promote's: a person's answer to approve_promotion
    assert keiko_variables_read_by_the_code() - per_run == listed


def test_the_readme_table_lists_every_setting_with_its_default_and_production_value():
    readme = (ROOT / "README.md").read_text()
    rows = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`KEIKO_"):
            rows[cells[0].strip("`")] = cells
    for setting in SETTINGS:
        assert setting.env in rows, f"README's configuration table lacks {setting.env}"
        assert rows[setting.env][1:] == [setting.default, setting.production, setting.meaning], setting.env


def test_defaults_are_the_embedded_ones(monkeypatch, tmp_path):
    for setting in SETTINGS:
        monkeypatch.delenv(setting.env, raising=False)
    monkeypatch.setenv("KEIKO_HOME", str(tmp_path))
    config = settings()
    assert config.artifact_root == (tmp_path / "artifacts").as_uri()
    assert config.registry_url == f"sqlite:///{tmp_path / 'registry.db'}"
    assert config.athena_output == f"{config.artifact_root}/athena-results"
    assert (config.warehouse, config.stage_runner, config.deploy_backend) == ("duckdb", "local", "local")
    assert config.aws_conn_id == ""
    assert config.prediction_log_url == (tmp_path / "warehouse" / "predictions").as_uri()  # a warehouse table


@pytest.mark.parametrize(("variable", "value"), [("KEIKO_WAREHOUSE", "redshift"), ("KEIKO_STAGE_RUNNER", "ecs")])
def test_a_bad_choice_is_refused_naming_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(KeikoError, match=f"{variable}='{value}': expected one of"):
        settings()
