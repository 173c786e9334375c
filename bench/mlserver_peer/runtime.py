"""MLServer custom runtime serving a keiko model with keiko's own loader and feature code.

Runs inside the MLServer virtualenv (mlserver_peer.ensure_env()), with the checkout's plugins/ on PYTHONPATH,
as `implementation: mlserver_peer.runtime.KeikoRuntime` in model-settings.json (mlserver_peer.command()).

It scores as keiko's ModelServer.score does (plugins/keiko/serving/app.py): a request of up to 64 rows through
the model family's row scorer when it has one (hashed LR: cached slot weights), any other through
`features.transform(from_rows(rows, INPUT_SCHEMA), **feature_params)` and `model.predict`. What keiko's server
does besides scoring (validating against model.yaml's serving limits, counting values training never saw, the
prediction log, canary routing) the peer does not: it is MLServer's serving cost around keiko's scoring, no more.

Request tensors are decoded by hand, not through MLServer's codecs (its pandas codec builds a DataFrame per
request, which costs more than scoring one row): one list per input, the values converted as keiko's request
validation converts them (ISO 8601 strings to datetimes, BYTES to str), zipped into rows.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput

from keiko.algorithms import TrainedModel, load_model_bytes
from keiko.columns import example_row, from_rows

from . import ARTIFACT_VARIABLE, features_path

ROW_PATH_MAX_ROWS = 64  # keiko.serving.app.ROW_PATH_MAX_ROWS (not imported: that module needs the server's stack)


def _text(value: Any) -> str:
    """A BYTES element: str from JSON, bytes from gRPC's bytes_contents."""
    return value.decode() if isinstance(value, bytes) else value


def _timestamp(value: Any) -> dt.datetime:
    """An ISO 8601 string as pydantic reads it for keiko's /predict (naive: UTC, as in the warehouse)."""
    return dt.datetime.fromisoformat(_text(value))


# How a tensor's elements become row values of each INPUT_SCHEMA kind; None: used as they come.
_CONVERT: dict[str, Callable[[Any], Any] | None] = {"str": _text, "timestamp": _timestamp, "int": None, "float": None}


def load_features(model: str, path: str | None = None) -> ModuleType:
    """The model's feature module, imported from its file as keiko.modeldef does (same module name), without
    keiko.modeldef, whose model.yaml validation needs Airflow's jsonschema and croniter. `path`: model-settings'
    parameters.extra.features (command() writes it), else found under KEIKO_PROJECT_DIR."""
    path = path or str(features_path(model))
    name = f"keiko_features_{model}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{path}: feature module not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class KeikoRuntime(MLModel):
    """One keiko model version; answers one FP64 output named after the model, shape [rows]."""

    async def load(self) -> bool:
        parameters = self.settings.parameters
        extra = (parameters.extra if parameters else None) or {}
        uri = (parameters.uri if parameters else None) or os.environ[ARTIFACT_VARIABLE]
        self.keiko_name: str = extra.get("keiko_model") or self.name
        self.features = load_features(self.keiko_name, extra.get("features"))
        self.schema: dict[str, str] = self.features.INPUT_SCHEMA
        self.model: TrainedModel = load_model_bytes(Path(uri.removeprefix("file://")).read_bytes())
        self.row_scorer = self.model.row_scorer(self.features)
        self.warm_up()
        return True

    def warm_up(self) -> None:
        """What keiko's ModelServer.prepare checks before serving: 64 example rows score inside (0, 1) through the
        vectorised path, and the row scorer agrees with it (it also fills the first cache entries)."""
        rows = [example_row(self.schema)] * 64
        scores = np.asarray(self.score_vectorised(rows))
        if not np.all((scores > 0) & (scores < 1)):
            raise RuntimeError(f"{self.keiko_name} failed warm-up: predictions outside (0, 1)")
        if self.row_scorer is not None and abs(self.row_scorer(rows[0]) - scores[0]) > 1e-12:
            raise RuntimeError(f"{self.keiko_name} failed warm-up: row and vectorised scoring disagree")

    def rows(self, inputs: list[RequestInput]) -> list[dict[str, Any]]:
        """The request's rows: one input tensor per INPUT_SCHEMA field, each of shape [n]; other inputs ignored."""
        given = {tensor.name: tensor for tensor in inputs}
        missing = [name for name in self.schema if name not in given]
        if missing:
            raise InferenceError(f"missing input tensors: {', '.join(missing)} (one per INPUT_SCHEMA field)")
        columns = []
        for name, kind in self.schema.items():
            values = given[name].data.root
            convert = _CONVERT[kind]
            columns.append(values if convert is None else [convert(v) for v in values])
        n = len(columns[0])
        if n == 0 or any(len(column) != n for column in columns):
            raise InferenceError(f"input tensors must be non-empty and of one length: {[len(c) for c in columns]}")
        names = list(self.schema)
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]

    def score_vectorised(self, rows: list[Mapping[str, Any]]) -> list[float]:
        columns = from_rows(rows, self.schema)
        return self.model.predict(self.features.transform(columns, **self.model.feature_params)).tolist()

    def score(self, rows: list[dict[str, Any]]) -> list[float]:
        if self.row_scorer is not None and len(rows) <= ROW_PATH_MAX_ROWS:
            return [self.row_scorer(row) for row in rows]
        return self.score_vectorised(rows)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        scores = self.score(self.rows(payload.inputs))
        output = ResponseOutput(name=self.keiko_name, shape=[len(scores)], datatype="FP64", data=scores)
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=[output])
