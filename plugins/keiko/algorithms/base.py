"""The model interface: what a model family takes in and gives back (TFX-style, no I/O here).

Stages, gates and the server only talk to these two protocols; each model family implements them
in its own module, registered by name in keiko.algorithms.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import numpy as np


@dataclass
class TrainingLog:
    """Per-epoch (or per-round) losses, for the training gate, and why training stopped."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_because: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "best_epoch": self.best_epoch, "stopped_because": self.stopped_because}


class TrainedModel(Protocol):
    algorithm: str
    feature_params: dict[str, Any]
    artifact_format: str  # the saved model's format, its file extension (npz, cbm): keiko.contract names the file

    def predict(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Probabilities in (0, 1), one per row, from the feature module's transform() output."""

    def to_bytes(self) -> bytes:
        """A deterministic, pickle-free serialisation: same model, same bytes."""

    def describe(self) -> dict[str, Any]:
        """Small JSON-able facts (size, parameters) for the registry and logs."""

    def row_scorer(self, features: ModuleType) -> Callable[[Mapping[str, Any]], float] | None:
        """A function scoring one request row exactly as predict() does, when the family has a faster way
        than the vectorised path for a few rows; None: the server batches rows through predict()."""


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

    @staticmethod
    def load(data: bytes) -> TrainedModel:
        """The model saved by to_bytes(); refuses anything else (never unpickles)."""
