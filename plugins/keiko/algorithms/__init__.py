"""Model families behind one interface; stages and the server never branch on the algorithm."""

from __future__ import annotations

import importlib

from keiko.algorithms.base import Algorithm, TrainedModel
from keiko.errors import ModelConfigError

# name -> (module, class, the first bytes of its artifacts). Imported on first use: training libraries
# stay out of DAG parsing, and a server imports only its model's family.
ALGORITHMS: dict[str, tuple[str, str, bytes]] = {
    "hashed_logistic_regression": ("keiko.algorithms.hashed_lr", "HashedLogisticRegression", b"PK\x03\x04"),
    "catboost": ("keiko.algorithms.catboost_classifier", "CatBoostAlgorithm", b"CBM1"),
}


def get_algorithm(name: str) -> type[Algorithm]:
    if name not in ALGORITHMS:
        raise ModelConfigError(f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}")
    module, cls, _ = ALGORITHMS[name]
    return getattr(importlib.import_module(module), cls)


def load_model_bytes(data: bytes) -> TrainedModel:
    """Load any saved model: the artifact's format names its algorithm."""
    for name, (_, _, magic) in ALGORITHMS.items():
        if data.startswith(magic):
            return get_algorithm(name).load(data)
    raise ValueError(f"not a model artifact of any known algorithm ({', '.join(ALGORITHMS)}): starts {data[:8]!r}")


__all__ = ["ALGORITHMS", "Algorithm", "TrainedModel", "get_algorithm", "load_model_bytes"]
