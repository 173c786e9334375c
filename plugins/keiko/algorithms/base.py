"""The model interface: what a model family takes in and gives back (TFX-style, no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class TrainingLog:
    """Per-epoch losses (for the training gate) and why training stopped."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_because: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "best_epoch": self.best_epoch, "stopped_because": self.stopped_because}


class TrainedModel(Protocol):
    algorithm: str
    feature_params: dict[str, Any]

    def predict(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Probabilities in (0, 1), one per row, from the model's feature columns."""

    def to_bytes(self) -> bytes:
        """A deterministic, pickle-free serialisation: same model, same bytes."""

    def describe(self) -> dict[str, Any]:
        """Small JSON-able facts (size, parameters) for the registry and logs."""


class Algorithm(Protocol):
    name: str

    @staticmethod
    def fit(
        train: dict[str, np.ndarray],
        y_train: np.ndarray,
        valid: dict[str, np.ndarray],
        y_valid: np.ndarray,
        *,
        params: dict[str, Any],
        feature_params: dict[str, Any],
        progress: Any = print,
    ) -> tuple[TrainedModel, TrainingLog]: ...
