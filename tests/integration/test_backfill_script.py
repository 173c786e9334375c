"""`make backfill` refuses what cannot work, before asking Airflow for anything."""

import os
import subprocess

import pytest

from conftest import ROOT


def backfill(tmp_path, **variables: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), **variables}
    return subprocess.run([str(ROOT / "scripts" / "backfill.sh")], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "variables, message",
    [
        ({"FROM": "2026-11-18"}, "MODEL=<model>"),
        ({"MODEL": "ctr", "FROM": "2026-11-31", "TO": "2026-12-02"}, "'2026-11-31' is not a day (YYYY-MM-DD)"),
        ({"MODEL": "ctr", "FROM": "20261118", "TO": "2026-11-20"}, "'20261118' is not a day"),
        ({"MODEL": "ctr", "FROM": "2026-11-20", "TO": "2026-11-18"}, "FROM=2026-11-20 is after TO=2026-11-18"),
        (
            {"MODEL": "ctr", "FROM": "2026-11-18", "TO": "2026-11-20"},
            "no Airflow scheduler is running here. Start one with 'make airflow'",
        ),
    ],
)
def test_make_backfill_refuses_bad_input_with_one_line(tmp_path, variables, message):
    result = backfill(tmp_path, **variables)
    assert result.returncode != 0
    assert message in result.stderr
