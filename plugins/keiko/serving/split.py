"""Which variant of a model answers a request: the traffic split of a canary or an A/B experiment.

The split happens inside each model server, which holds both versions (keiko.serving.model_server): no extra
network hop on the hot path, and the same locally and on Kubernetes. A user's place in the split is a salted hash
of their user id, a number in [0, 1) that every replica computes alike; the user is on the canary when it is below the
canary's weight. So a user keeps one variant across requests and replicas, a new salt (a new rollout) draws the
users afresh, and raising the weight only moves users from stable to canary, never back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

STABLE, CANARY = "stable", "canary"
VARIANTS = (STABLE, CANARY)  # of a split; a batch model's answers are BATCH, or FALLBACK when its batch lacked the key
BATCH, FALLBACK = "batch", "fallback"
_SCALE = float(1 << 64)


def place(salt: bytes, user_id: int) -> float:
    """The user's place in [0, 1) for `salt`: BLAKE2b keyed with the salt (~0.4 us; uniform, and one rollout's
    places say nothing of another's)."""
    digest = hashlib.blake2b(user_id.to_bytes(8, "little", signed=True), key=salt, digest_size=8).digest()
    return int.from_bytes(digest, "little") / _SCALE


@dataclass(frozen=True)
class TrafficSplit:
    """`weight` of the users (by place) on the canary `version`; the rest on the stable one."""

    version: int
    weight: float
    salt: str

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"a canary's weight is between 0 and 1, not {self.weight}")
        if not self.salt:
            raise ValueError("a traffic split needs a salt")

    @property
    def key(self) -> bytes:
        return hashlib.blake2b(self.salt.encode(), digest_size=32).digest()  # BLAKE2b keys are at most 64 bytes

    def on_canary(self, user_id: int | None, key: bytes | None = None) -> bool:
        """A request without a user id goes to stable: it cannot be kept on one variant."""
        if user_id is None or self.weight == 0.0:
            return False
        return place(key or self.key, user_id) < self.weight

    def describe(self) -> str:
        return f"v{self.version} canary at {self.weight:.0%} (salt {self.salt})"
