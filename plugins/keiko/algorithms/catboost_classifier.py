"""Gradient-boosted trees with CatBoost, categorical fields handled natively (ordered target statistics).

The feature module's transform() says what is categorical: string columns are categorical, numeric
ones numeric. Saved in CatBoost's own format (cbm), with keiko's facts in the model's metadata.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import numpy as np

from keiko.algorithms.base import TrainingLog

ALGORITHM = "catboost"
KEIKO_METADATA = "keiko"
# Below this many rows a prediction runs on one thread: thread start-up would cost more than it saves.
SINGLE_THREAD_ROWS = 10_000
LOG_EVERY = 25  # training rounds between progress lines and training-log entries


def split_columns(features: Mapping[str, np.ndarray]) -> tuple[list[str], list[str]]:
    """(numeric, categorical) column names: object and string arrays are categorical."""
    categorical = sorted(name for name, values in features.items() if values.dtype.kind in "OUS")
    numeric = sorted(name for name in features if name not in categorical)
    return numeric, categorical


def features_data(features: Mapping[str, np.ndarray], numeric: list[str], categorical: list[str]):
    """CatBoost's FeaturesData: numeric columns first, then categorical, the order the model was trained in.

    FeaturesData, not a DataFrame: no pandas per request, and CatBoost reads the arrays directly.
    """
    from catboost import FeaturesData

    rows = len(next(iter(features.values())))
    return FeaturesData(
        num_feature_data=np.column_stack([np.asarray(features[n], dtype=np.float32) for n in numeric])
        if numeric
        else np.empty((rows, 0), dtype=np.float32),
        cat_feature_data=np.column_stack([np.asarray(features[c]).astype(str).astype(object) for c in categorical])
        if categorical
        else np.empty((rows, 0), dtype=object),
        num_feature_names=numeric,
        cat_feature_names=categorical,
    )


class CatBoostModel:
    algorithm = ALGORITHM
    artifact_format = "cbm"

    def __init__(self, booster: Any, *, feature_params: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        self.booster = booster
        self.feature_params = feature_params
        self.extra = extra or {}
        categorical = set(booster.get_cat_feature_indices())
        self.numeric = [name for i, name in enumerate(booster.feature_names_) if i not in categorical]
        self.categorical = [name for i, name in enumerate(booster.feature_names_) if i in categorical]

    def predict(self, features: dict[str, np.ndarray]) -> np.ndarray:
        data = features_data(features, self.numeric, self.categorical)
        threads = 1 if data.get_object_count() < SINGLE_THREAD_ROWS else -1
        return self.booster.predict(data, prediction_type="Probability", thread_count=threads)[:, 1]

    def row_scorer(self, features: ModuleType) -> Callable[[Mapping[str, Any]], float] | None:
        return None  # a call costs ~270 us even for one row: the server batches requests instead

    def describe(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "trees": int(self.booster.tree_count_),
            "numeric_features": self.numeric,
            "categorical_features": self.categorical,
            "feature_params": self.feature_params,
            **self.extra,
        }

    def to_bytes(self) -> bytes:
        metadata = self.booster.get_metadata()
        # CatBoost stamps a random model_guid and the finish time into every model: fixed, so the same
        # training gives the same bytes (and the same sha256, which registration is idempotent on).
        metadata["model_guid"] = "keiko"
        metadata["train_finish_time"] = "1970-01-01T00:00:00Z"
        metadata[KEIKO_METADATA] = json.dumps(
            {"feature_params": self.feature_params, "extra": self.extra}, sort_keys=True, default=float
        )
        with tempfile.TemporaryDirectory(prefix="keiko-cbm-") as directory:
            path = os.path.join(directory, "model")
            self.booster.save_model(path, format="cbm")
            with open(path, "rb") as f:
                return f.read()

    @classmethod
    def from_bytes(cls, data: bytes) -> CatBoostModel:
        from catboost import CatBoostClassifier

        booster = CatBoostClassifier()
        try:
            booster.load_model(blob=data, format="cbm")
        except Exception as exc:  # CatBoostError: not a cbm file, or a truncated one
            raise ValueError(f"not a CatBoost model: {exc}") from None
        meta_text = booster.get_metadata().get(KEIKO_METADATA)
        if meta_text is None:
            raise ValueError("a CatBoost model without keiko's metadata: not trained by keiko")
        meta = json.loads(meta_text)
        return cls(booster, feature_params=meta["feature_params"], extra=meta["extra"])


class CatBoostAlgorithm:
    name = ALGORITHM
    load = staticmethod(CatBoostModel.from_bytes)

    @staticmethod
    def fit(train, y_train, valid, y_valid, *, params, feature_params, progress=print):
        from catboost import CatBoostClassifier, Pool

        numeric, categorical = split_columns(train)
        settings = dict(params)
        patience = int(settings.pop("patience", 50))
        booster = CatBoostClassifier(
            loss_function="Logloss",
            random_seed=int(settings.pop("seed", 0)),
            od_type="Iter",
            od_wait=patience,
            use_best_model=True,
            allow_writing_files=False,
            verbose=False,
            **settings,
        )
        train_pool = Pool(features_data(train, numeric, categorical), label=y_train)
        valid_pool = Pool(features_data(valid, numeric, categorical), label=y_valid)

        class Progress:
            def after_iteration(self, info) -> bool:
                if info.iteration % LOG_EVERY == 0:
                    loss = info.metrics["validation"]["Logloss"][-1]
                    progress(f"round {info.iteration}: valid logloss {loss:.5f}")
                return True

        booster.fit(train_pool, eval_set=valid_pool, callbacks=[Progress()])
        history = booster.get_evals_result()
        train_losses, valid_losses = history["learn"]["Logloss"], history["validation"]["Logloss"]
        log = TrainingLog(best_epoch=int(booster.get_best_iteration()) + 1)
        rounds = len(valid_losses)
        for i in sorted({*range(0, rounds, LOG_EVERY), rounds - 1}):
            log.epochs.append({"epoch": i + 1, "train_logloss": train_losses[i], "valid_logloss": valid_losses[i]})
        iterations = booster.get_all_params()["iterations"]
        log.stopped_because = (
            f"valid logloss did not improve for {patience} rounds"
            if rounds < iterations
            else f"reached iterations={iterations}"
        )
        best = float(booster.get_best_score()["validation"]["Logloss"])
        model = CatBoostModel(
            booster,
            feature_params=dict(feature_params),
            extra={"best_iteration": log.best_epoch, "best_valid_logloss": best},
        )
        return model, log
