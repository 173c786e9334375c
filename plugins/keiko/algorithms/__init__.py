"""Model families behind one interface; stages and the server never branch on the algorithm."""

from __future__ import annotations

from keiko.algorithms.base import Algorithm, TrainedModel
from keiko.errors import ModelConfigError


def get_algorithm(name: str) -> type[Algorithm]:
    # Imported lazily: training libraries stay out of DAG parsing and out of the server.
    if name == "hashed_logistic_regression":
        from keiko.algorithms.hashed_lr import HashedLogisticRegression

        return HashedLogisticRegression
    raise ModelConfigError(f"unknown algorithm {name!r}; known: hashed_logistic_regression")


def load_model_bytes(data: bytes) -> TrainedModel:
    """Load any saved model; the artifact names its own algorithm."""
    from keiko.algorithms.hashed_lr import HashedLRModel

    return HashedLRModel.from_bytes(data)


__all__ = ["Algorithm", "TrainedModel", "get_algorithm", "load_model_bytes"]
