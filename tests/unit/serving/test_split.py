"""A canary's traffic split: which users a salted hash of their user id puts on the canary."""

from __future__ import annotations

import math

import numpy as np
import pytest

from keiko.serving.split import TrafficSplit, place

USERS = range(1, 100_001)


def on_canary(split: TrafficSplit, users=USERS) -> set[int]:
    key = split.key
    return {user for user in users if split.on_canary(user, key)}


def test_a_users_place_is_the_same_on_every_call_and_every_replica():
    split = TrafficSplit(version=2, weight=0.3, salt="s")
    assert [place(split.key, user) for user in (1, 42, -7, 2**62)] == [
        place(TrafficSplit(2, 0.3, "s").key, user) for user in (1, 42, -7, 2**62)
    ]
    assert all(0.0 <= place(split.key, user) < 1.0 for user in range(1000))
    assert on_canary(split, range(5000)) == on_canary(TrafficSplit(2, 0.3, "s"), range(5000))


def test_places_are_uniform_so_the_canary_gets_its_weight_of_the_users():
    split = TrafficSplit(version=2, weight=0.3, salt="s")
    assert abs(len(on_canary(split)) / len(USERS) - 0.3) < 0.015
    places = np.array([place(split.key, user) for user in USERS])
    deciles = np.histogram(places, bins=10, range=(0.0, 1.0))[0] / len(USERS)
    assert np.all(np.abs(deciles - 0.1) < 0.01), deciles


@pytest.mark.parametrize("weight", [0.05, 0.5, 0.9])
def test_the_canary_share_follows_the_weight(weight):
    assert abs(len(on_canary(TrafficSplit(2, weight, "s"))) / len(USERS) - weight) < 0.015


def test_raising_the_weight_only_moves_users_from_stable_to_canary():
    at_10, at_50, at_100 = (on_canary(TrafficSplit(2, weight, "rollout-1")) for weight in (0.1, 0.5, 1.0))
    assert at_10 < at_50 < at_100
    assert at_100 == set(USERS)
    assert on_canary(TrafficSplit(2, 0.0, "rollout-1")) == set()


def test_another_salt_draws_other_users():
    weight = 0.3
    first, second = on_canary(TrafficSplit(2, weight, "rollout-1")), on_canary(TrafficSplit(3, weight, "rollout-2"))
    both = len(first & second) / len(USERS)
    # Independent draws: a user is on both canaries with probability weight**2 (0.09), not weight (0.3).
    assert abs(both - weight**2) < 0.01
    assert abs(len(second) / len(USERS) - weight) < 0.015


def test_a_request_without_a_user_id_is_on_stable():
    assert not TrafficSplit(2, 1.0, "s").on_canary(None)
    assert not TrafficSplit(2, 0.999, "s").on_canary(None)


@pytest.mark.parametrize("weight", [-0.1, 1.5, math.nan])
def test_a_weight_outside_0_to_1_is_refused(weight):
    with pytest.raises(ValueError, match="a canary's weight is between 0 and 1"):
        TrafficSplit(version=2, weight=weight, salt="s")


def test_an_empty_salt_is_refused():
    with pytest.raises(ValueError, match="a traffic split needs a salt"):
        TrafficSplit(version=2, weight=0.3, salt="")


def test_a_split_describes_itself():
    assert TrafficSplit(version=7, weight=0.25, salt="ctr-v7").describe() == "v7 canary at 25% (salt ctr-v7)"
