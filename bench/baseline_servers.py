"""The servers bench/serving.py compares keiko's model server with, run by the same uvicorn setup.

* `ceiling`: a bare ASGI app that reads the request and answers a fixed prediction. No Python server on
  this machine can be faster; the distance from it is what scoring and validation cost.
* `naive_app()`: the model server most teams write first: FastAPI with pydantic request models, a pandas
  DataFrame per request, the feature code, a one-hot sparse matrix and scikit-learn's `predict_proba`
  on an SGDClassifier holding the same weights. KEIKO_BENCH_MODEL is the model artifact to serve.
* `keiko_app()`: keiko's own server, for running it under plain uvicorn (`--http httptools`: two socket writes
  a response) beside `keiko serve` (one: keiko.serving.http_write).
* `unbatched_app()`: keiko's own server for KEIKO_BENCH_MODEL_NAME (cvr) with micro-batching switched off:
  each request scored by its own vectorised call, as if requests were handled one at a time. What
  micro-batching gains is keiko's cvr row against this one.
* `uncounted_app()`: keiko's own server for KEIKO_BENCH_MODEL_NAME (ctr) with the counting of values
  training never saw switched off (keiko.serving.unseen): what that counting costs is keiko's ctr row
  against this one.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint's annotations at run time, and
# PredictRequest is local to naive_app().
import datetime as dt
import os
from pathlib import Path

_FIXED = b'{"model_version":0,"predictions":[0.5]}'


async def ceiling(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(_FIXED)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _FIXED})


def naive_app():
    import numpy as np
    import pandas as pd
    from fastapi import FastAPI
    from pydantic import BaseModel, create_model
    from sklearn.linear_model import SGDClassifier

    from keiko.algorithms import load_model_bytes
    from keiko.algorithms.hashed_lr import _one_hot
    from keiko.columns import from_rows
    from keiko.modeldef import load_model

    features = load_model("ctr").features
    model = load_model_bytes(Path(os.environ["KEIKO_BENCH_MODEL"]).read_bytes())
    classifier = SGDClassifier(loss="log_loss")
    classifier.coef_ = model.weights.reshape(1, -1)
    classifier.intercept_ = np.array([model.bias])
    classifier.classes_ = np.array([0, 1])
    types = {"int": int, "float": float, "str": str, "timestamp": dt.datetime}
    Row = create_model("Row", **{name: (types[kind], ...) for name, kind in features.INPUT_SCHEMA.items()})

    class PredictRequest(BaseModel):
        rows: list[Row]

    app = FastAPI()

    @app.post("/predict")
    def predict(request: PredictRequest) -> dict:
        frame = pd.DataFrame([row.model_dump() for row in request.rows])
        columns = from_rows(frame.to_dict("records"), features.INPUT_SCHEMA)
        hashed = features.transform(columns, **model.feature_params)
        one_hot = _one_hot(hashed, model.slots, model.weights.size)
        return {"model_version": 0, "predictions": classifier.predict_proba(one_hot)[:, 1].tolist()}

    return app


def keiko_app():
    """keiko's own server of KEIKO_BENCH_MODEL_NAME, under whichever uvicorn HTTP protocol the command line picks."""
    from keiko.serving.app import create_app

    return create_app(os.environ["KEIKO_BENCH_MODEL_NAME"])


def unbatched_app():
    from keiko.serving.app import create_app

    app = create_app(os.environ["KEIKO_BENCH_MODEL_NAME"])
    app.state.server.micro_batching = False  # each request scored by its own vectorised call
    return app


def uncounted_app():
    from keiko.serving.app import create_app
    from keiko.serving.unseen import UnseenValues

    UnseenValues.count = lambda self, rows: None
    return create_app(os.environ["KEIKO_BENCH_MODEL_NAME"])
