"""When a canary that passed every step is promoted by a person: a forced deploy, or a thin margin."""

from types import SimpleNamespace

import pytest

from keiko.contract import CanaryCheck, CanaryVerdict
from keiko.modeldef import load_model
from keiko.stages.canary import needs_a_person


def verdict(low: float, high: float, stable: float = 0.120, canary: float = 0.121) -> CanaryVerdict:
    logloss = CanaryCheck(
        check="online logloss", stable=stable, canary=canary, allowed="canary <= stable x 1.02", verdict="pass",
        low=low, high=high,
    )  # fmt: skip
    return CanaryVerdict(
        at="2026-12-02T00:00:00+00:00", step=2, weight=0.5, held_minutes=1.5, verdict="pass",
        requests={"stable": 9000, "canary": 9000}, outcomes={"stable": 9000, "canary": 9000},
        positives={"stable": 250, "canary": 250}, checks=[logloss], summary="every check passed with its sample",
    )  # fmt: skip


def ctx(deploy: str = "auto") -> SimpleNamespace:
    return SimpleNamespace(params=SimpleNamespace(deploy=deploy))


@pytest.fixture
def plan():
    return load_model("ctr").config.deploy.plan("canary")


def test_a_canary_not_shown_worse_is_promoted_without_a_person(plan):
    assert needs_a_person(ctx(), verdict(low=-0.002, high=0.004), plan) is None


def test_a_canary_significantly_worse_though_within_the_allowance_asks_a_person(plan):
    why = needs_a_person(ctx(), verdict(low=0.0004, high=0.0016), plan)
    assert why.startswith("its margin is thin: online logloss 0.1210 against stable's 0.1200 (+0.8%")
    assert "a step allows up to +2.0%" in why
    assert (
        needs_a_person(ctx(), verdict(low=0.0004, high=0.0016), plan.model_copy(update={"approve_thin_margin": False}))
        is None
    )


def test_a_forced_deploy_always_asks_a_person(plan):
    assert needs_a_person(ctx("force"), verdict(low=-0.002, high=0.004), plan) == "the run asked deploy=force"
