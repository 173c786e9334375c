"""The Open Inference Protocol with NVIDIA's own client (tritonclient), over REST and gRPC, against a live server: the
same answers as /predict, refusals that name the input, versions, a canary and /metrics whichever protocol asks."""

from __future__ import annotations

import contextlib

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import register_variant, serve_in_thread, v1_bytes
from keiko.modeldef import load_model
from keiko.serving.app import create_app
from keiko.serving.http_write import OneWriteHttpToolsProtocol
from keiko.serving.prediction_log import IDENTIFIERS
from keiko.summary import sample_rows

pytestmark = pytest.mark.server

SCHEMA = load_model("ctr").features.INPUT_SCHEMA
NUMPY = {"int": np.int64, "float": np.float64}


@pytest.fixture
def rows(run_home) -> list[dict]:
    import datetime as dt

    from conftest import DS
    from keiko.stages.context import StageContext

    picked = sample_rows(StageContext.create("ctr", dt.date.fromisoformat(DS)), n=6)
    return [{**row, "user_id": 5_000 + i, "impression_id": 9_000 + i} for i, row in enumerate(picked)]


@contextlib.contextmanager
def live_server(**kwargs):
    """ctr v1 served over REST (as `keiko serve` runs it) and gRPC; yields (REST URL, gRPC address, app)."""
    app = create_app("ctr", load_production=False, grpc_port=0, **kwargs)
    app.state.server.load(1)
    with serve_in_thread(app, http=OneWriteHttpToolsProtocol) as url:
        yield url, f"127.0.0.1:{app.state.grpc_port}", app


@pytest.fixture
def server(run_home):
    with live_server() as served:
        yield served


def columns(rows: list[dict], fields: dict[str, str]) -> dict[str, np.ndarray]:
    """One array per input, as a client builds its tensors (strings and timestamps as BYTES objects)."""
    return {
        name: np.array([row[name] for row in rows], dtype=NUMPY.get(kind, object))
        if kind in NUMPY
        else np.array([str(row[name]).encode() for row in rows], dtype=object)
        for name, kind in fields.items()
    }


def inputs(module, rows: list[dict], *, binary: bool | None = None, fields: dict[str, str] | None = None) -> list:
    made = []
    for name, array in columns(rows, fields or {**SCHEMA, **IDENTIFIERS}).items():
        datatype = {np.int64: "INT64", np.float64: "FP64"}.get(array.dtype.type, "BYTES")
        tensor = module.InferInput(name, list(array.shape), datatype)
        if binary is None:
            tensor.set_data_from_numpy(array)
        else:
            tensor.set_data_from_numpy(array, binary_data=binary)
        made.append(tensor)
    return made


def predicted(url: str, rows: list[dict]) -> list[float]:
    answer = httpx.post(f"{url}/predict", json={"rows": rows})
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


@pytest.mark.parametrize("binary", [None, False], ids=["binary tensors (tritonclient's default)", "JSON tensors"])
def test_tritonclient_over_http_gets_the_predict_answers(server, rows, binary):
    url, _, _ = server
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("ctr")
    metadata = client.get_model_metadata("ctr")
    declared = {i["name"]: i["datatype"] for i in metadata["inputs"]}
    assert declared == {**{n: "BYTES" if k in ("str", "timestamp") else "INT64" if k == "int" else "FP64"
                           for n, k in SCHEMA.items()}, "impression_id": "INT64", "user_id": "INT64"}  # fmt: skip
    assert metadata["outputs"] == [{"name": "ctr", "datatype": "FP64", "shape": [-1]}]
    assert metadata["versions"] == ["1"]

    outputs = None if binary is None else [httpclient.InferRequestedOutput("ctr", binary_data=False)]
    result = client.infer("ctr", inputs(httpclient, rows, binary=binary), outputs=outputs, request_id="bid-1")
    assert result.as_numpy("ctr").tolist() == predicted(url, rows)
    response = result.get_response()
    assert response["model_name"] == "ctr" and response["model_version"] == "1" and response["id"] == "bid-1"
    assert response["outputs"][0]["parameters"]["variant"] == "stable"


def test_tritonclient_over_grpc_gets_the_predict_answers(server, rows):
    url, address, _ = server
    client = grpcclient.InferenceServerClient(address)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("ctr")
    assert client.get_server_metadata().name == "keiko"
    metadata = client.get_model_metadata("ctr")
    assert [i.name for i in metadata.inputs] == [*SCHEMA, *sorted(IDENTIFIERS)]
    assert [(o.name, o.datatype, list(o.shape)) for o in metadata.outputs] == [("ctr", "FP64", [-1])]

    result = client.infer("ctr", inputs(grpcclient, rows), request_id="bid-2")
    assert result.as_numpy("ctr").tolist() == predicted(url, rows)
    response = result.get_response()
    assert response.model_version == "1" and response.id == "bid-2"
    # One row, as a bidder sends it: the same answer as the same row in a batch.
    one = client.infer("ctr", inputs(grpcclient, rows[:1]), model_version="1")
    assert one.as_numpy("ctr").tolist() == predicted(url, rows[:1])


def refusal_over_http(url: str, module_inputs, model: str = "ctr", version: str = "") -> tuple[str, str]:
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    with pytest.raises(InferenceServerException) as refused:
        client.infer(model, module_inputs, model_version=version)
    return refused.value.status(), refused.value.message()


def refusal_over_grpc(address: str, module_inputs, model: str = "ctr", version: str = "") -> tuple[str, str]:
    client = grpcclient.InferenceServerClient(address)
    with pytest.raises(InferenceServerException) as refused:
        client.infer(model, module_inputs, model_version=version)
    return refused.value.status(), refused.value.message()


def test_bad_requests_are_refused_naming_the_input_on_both_transports(server, rows):
    url, address, _ = server
    without_country = {n: k for n, k in SCHEMA.items() if n != "country"}
    country_as_number = {**SCHEMA, "country": "int"}
    long_country = [{**rows[0], "country": "x" * 300}]
    cases = [
        (dict(fields=without_country), rows, "missing input 'country'"),
        (dict(fields=country_as_number), [{**rows[0], "country": 7}], "'country' is INT64: a str field takes BYTES"),
        ({}, long_country, "input 'country' element 0: String should have at most 256 characters"),
    ]  # fmt: skip
    for options, sent, message in cases:
        status, said = refusal_over_http(url, inputs(httpclient, sent, **options))
        assert status == "400" and message in said, said
        status, said = refusal_over_grpc(address, inputs(grpcclient, sent, **options))
        assert status == "StatusCode.INVALID_ARGUMENT" and message in said, said
    # Inputs that disagree on the batch size, and an unknown one.
    mixed = inputs(grpcclient, rows[:2])[:-1] + inputs(grpcclient, rows[:3])[-1:]
    assert "has 3 rows but" in refusal_over_grpc(address, mixed)[1]
    extra = grpcclient.InferInput("colour", [1], "BYTES")
    extra.set_data_from_numpy(np.array([b"red"], dtype=object))
    assert "unknown input 'colour'" in refusal_over_grpc(address, [*inputs(grpcclient, rows[:1]), extra])[1]
    # A model or a version this server does not serve.
    assert refusal_over_http(url, inputs(httpclient, rows), model="cvr")[0] == "404"
    assert refusal_over_grpc(address, inputs(grpcclient, rows), version="7") == (
        "StatusCode.NOT_FOUND", "ctr v7 is not served here (serving v1)"
    )  # fmt: skip
    # Garbage is a 400 with a message, never a 500.
    answer = httpx.post(f"{url}/v2/models/ctr/infer", content=b'{"inputs": "many"}')
    assert answer.status_code == 400 and "Expected `array`" in answer.json()["error"]
    metrics = httpx.get(f"{url}/metrics").text
    assert 'keiko_serving_refused_requests_total{model="ctr",reason="invalid_request"}' in metrics
    assert 'protocol="v2_grpc",status="400",variant="unrouted"' in metrics


def test_a_canary_routes_and_counts_the_same_whichever_protocol_asks(run_home, rows, monkeypatch):
    monkeypatch.delenv("KEIKO_ADMIN_TOKEN", raising=False)
    v2 = register_variant(v1_bytes(), window_start="2026-11-09")
    with live_server() as (url, address, _app):
        httpx.post(f"{url}/admin/split", json={"version": v2, "weight": 0.5, "salt": "s"}).raise_for_status()
        http = httpclient.InferenceServerClient(url.removeprefix("http://"))
        rpc = grpcclient.InferenceServerClient(address)
        by_user = {}
        for user in range(100, 140):
            row = [{**rows[0], "user_id": user}]
            expected = httpx.post(f"{url}/predict", json={"rows": row}).json()
            over_http = http.infer("ctr", inputs(httpclient, row)).get_response()
            over_grpc = rpc.infer("ctr", inputs(grpcclient, row)).get_response()
            assert over_http["model_version"] == over_grpc.model_version == str(expected["model_version"])
            assert over_http["parameters"]["variant"] == over_grpc.parameters["variant"].string_param
            by_user[user] = expected["variant"]
        assert set(by_user.values()) == {"stable", "canary"}  # 40 users at 50%: both variants answered
        # A known-answer check asks for a variant (gate_serving, a canary step): over any protocol.
        forced = http.infer("ctr", inputs(httpclient, rows[:1]), headers={"X-Keiko-Variant": "canary"})
        assert forced.get_response()["model_version"] == str(v2)
        forced = rpc.infer("ctr", inputs(grpcclient, rows[:1]), headers={"x-keiko-variant": "canary"})
        assert forced.get_response().model_version == str(v2)
        assert rpc.infer(
            "ctr", inputs(grpcclient, rows[:1]), model_version=str(v2)
        ).get_response().model_version == str(v2)
        canary = sum(v == "canary" for v in by_user.values())
        metrics = httpx.get(f"{url}/metrics").text
        for protocol, extra in (("predict", 0), ("v2_rest", 1), ("v2_grpc", 2)):
            line = f'keiko_serving_requests_total{{model="ctr",protocol="{protocol}",status="200",variant="canary"}}'
            assert f"{line} {canary + extra}.0" in metrics, (line, metrics)


def test_answers_are_logged_as_predict_answers_are(run_home, rows):
    from keiko.warehouse import DuckDBWarehouse

    with live_server() as (url, address, _app):
        grpcclient.InferenceServerClient(address).infer("ctr", inputs(grpcclient, rows[:2]), request_id="rpc-7")
        httpclient.InferenceServerClient(url.removeprefix("http://")).infer(
            "ctr", inputs(httpclient, rows[2:3]), request_id="rest-8"
        )
    # The server has stopped: what its prediction log held is in the warehouse (KEIKO_PREDICTION_LOG_URL).
    logged = (
        DuckDBWarehouse(run_home / "served")
        .query("SELECT request_id, user_id, impression_id FROM predictions ORDER BY user_id")
        .to_pylist()
    )
    assert [(r["request_id"], r["user_id"], r["impression_id"]) for r in logged] == [
        ("rpc-7", rows[0]["user_id"], rows[0]["impression_id"]),
        ("rpc-7", rows[1]["user_id"], rows[1]["impression_id"]),
        ("rest-8", rows[2]["user_id"], rows[2]["impression_id"]),
    ]
