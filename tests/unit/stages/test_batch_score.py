"""batch_score's small parts: which scores are written (probabilities only) and which runs score no batch."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from keiko.contract import RegisterResult
from keiko.resources import Resources
from keiko.stages.batch_score import skip_reason, valid_scores
from keiko.stages.context import StageContext

DAY = dt.date(2026, 11, 21)


def test_only_finite_scores_within_0_and_1_are_valid():
    scores = np.array([0.0, 0.25, 1.0, np.nan, np.inf, -np.inf, -1e-9, 1.0 + 1e-9, 7.0])
    assert valid_scores(scores).tolist() == [True, True, True, False, False, False, False, False, False]


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("KEIKO_HOME", str(home))
    monkeypatch.setenv("KEIKO_WAREHOUSE_DIR", str(home / "warehouse"))
    monkeypatch.delenv("KEIKO_RUN_PARAMS", raising=False)
    return home


def registered(status: str, reason: str = "") -> int:
    """user_value's version registered with `status` (and the run's register result naming it)."""
    resources = Resources()
    registration = resources.registry.register(
        model="user_value", ds=DAY.isoformat(), window_start="2026-11-01", window_end=DAY.isoformat(),
        artifact_uri="file:///m.cbm", artifact_sha256="0", code_version="0", config_sha256="c",
        features_sha256="f", algorithm="catboost", metrics={}, status=status, reason=reason,
    )  # fmt: skip
    version = registration.version.version
    StageContext.create("user_value", DAY).layout.write_result(
        RegisterResult(version=version, status=status, created=True, artifact_sha256="0")
    )
    return version


def test_an_online_model_is_skipped_as_served_online(home):
    why = skip_reason(StageContext.create("ctr", DAY))
    assert why is not None and why.startswith("ctr is served online") and "no batch to score" in why


def test_a_registered_batch_model_is_scored(home):
    registered("registered")
    assert skip_reason(StageContext.create("user_value", DAY)) is None


def test_a_version_not_registered_scores_no_batch_and_says_why(home):
    version = registered("rejected", "gate_evaluation failed")
    why = skip_reason(StageContext.create("user_value", DAY))
    assert why == f"user_value v{version} is rejected: gate_evaluation failed; no batch scored, the serving batch stays"


def test_a_run_asking_deploy_skip_scores_no_batch(home, monkeypatch):
    registered("registered")
    monkeypatch.setenv("KEIKO_RUN_PARAMS", '{"deploy": "skip"}')
    why = skip_reason(StageContext.create("user_value", DAY))
    assert why is not None and "deploy=skip" in why
