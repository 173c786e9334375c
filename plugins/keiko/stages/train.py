"""train: fit the algorithm named in model.yaml on train, early-stopping on valid; save without pickle."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from keiko.algorithms import get_algorithm
from keiko.contract import TrainResult
from keiko.stages.context import StageContext


def feature_arrays(table: pa.Table, row_id: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A split's feature slots and labels: every column but the label and the model's row id."""
    features = {name: table.column(name).to_numpy() for name in table.column_names if name not in ("label", row_id)}
    return features, table.column("label").to_numpy().astype(np.float64)


def run(ctx: StageContext) -> TrainResult:
    config = ctx.model.config
    train, y_train = feature_arrays(ctx.store.read_table(ctx.layout.split("train")), config.row_id)
    valid, y_valid = feature_arrays(ctx.store.read_table(ctx.layout.split("valid")), config.row_id)
    ctx.log(
        f"train {ctx.model.name}: {config.algorithm.name} on {len(y_train):,} rows, "
        f"early stopping on {len(y_valid):,} valid rows, params {config.algorithm.params}"
    )
    algorithm = get_algorithm(config.algorithm.name)
    model, log = algorithm.fit(
        train,
        y_train,
        valid,
        y_valid,
        params=config.algorithm.params,
        feature_params=config.feature_params,
        progress=ctx.log,
    )
    ctx.log(f"best epoch {log.best_epoch}; stopped: {log.stopped_because}")
    data = model.to_bytes()
    model_uri = ctx.layout.model_artifact(model.artifact_format)
    sha256 = ctx.store.write_bytes(model_uri, data)
    ctx.store.write_json(ctx.layout.training_log, log.to_dict())
    return TrainResult(
        model_uri=model_uri,
        model_sha256=sha256,
        model_bytes=len(data),
        algorithm=model.algorithm,
        best_epoch=log.best_epoch,
        describe=model.describe(),
    )
