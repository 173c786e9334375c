"""GET /openapi.json documents the model server's REST API, and schemathesis finds a live server keeping to it: every
documented response, never a 500 (tests/integration/schemathesis.toml says which checks are relaxed where, and why)."""

from __future__ import annotations

import httpx
import pytest

from conftest import schemathesis_run, serve_in_thread
from keiko.serving.app import create_app

pytestmark = pytest.mark.server


def test_the_document_lists_the_models_paths_with_their_validators_schemas(run_home):
    app = create_app("ctr", load_production=False)
    with serve_in_thread(app) as url:
        document = httpx.get(f"{url}/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    for path in ("/predict", "/models/ctr/predict", "/v2/models/ctr/infer", "/v2/health/ready", "/admin/split"):
        assert path in document["paths"], path
    row = document["components"]["schemas"]["ctr_Row"]
    assert row["properties"]["country"] == {"maxLength": 256, "title": "Country", "type": "string"}
    request = document["components"]["schemas"]["ctr_PredictRequest"]
    assert request["properties"]["rows"]["maxItems"] == 1000  # serving.max_rows, from the same adapter


def test_schemathesis_finds_a_live_server_true_to_its_document(run_home):
    app = create_app("ctr", load_production=False)
    app.state.server.load(1)
    with serve_in_thread(app) as url:
        run = schemathesis_run(url)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout or " passed" in run.stdout, run.stdout[-3000:]
