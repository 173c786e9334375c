"""ctr and cvr in one server process: one request gets both answers (over /predict, REST and gRPC), each model keeps
its own version, rollout, prediction log and metrics, and `keiko serve --model ctr --model cvr` runs it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import (
    DS,
    ROOT,
    UP_TO_REGISTER,
    copy_home,
    free_port,
    register_variant,
    run_steps,
    schemathesis_run,
    serve_in_thread,
    use_home,
    v1_bytes,
)
from keiko.errors import KeikoError
from keiko.rollout import SmokeTest
from keiko.rollout.local import LocalRollout
from keiko.serving.app import create_app
from keiko.serving.http_write import OneWriteHttpToolsProtocol
from keiko.summary import sample_rows

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def both_models_home(tmp_path_factory, pipeline_home, warehouse_dir) -> tuple[Path, Path]:
    """pipeline_home (ctr v1) with cvr v1 registered too, and the project cvr was trained with: the tests' warehouse
    holds 9 days, so cvr's window is 8 of them here (14 in include/), with thresholds for its ~80 conversions a day."""
    root = tmp_path_factory.mktemp("both-models")
    project = root / "project"
    shutil.copytree(ROOT / "include", project / "include")
    path = project / "include" / "models" / "cvr" / "model.yaml"
    config = yaml.safe_load(path.read_text())
    config["window_days"] = 8
    config["thresholds"].update(min_auc=0.51, max_logloss=0.6)
    config["algorithm"]["params"]["iterations"] = 200
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    home = copy_home(pipeline_home, root / "home")
    with pytest.MonkeyPatch.context() as patch:
        use_home(patch, home, warehouse_dir)
        patch.setenv("KEIKO_PROJECT_DIR", str(project))
        run_steps(*UP_TO_REGISTER, model="cvr")
    return home, project


@pytest.fixture
def both_models(tmp_path, monkeypatch, both_models_home, warehouse_dir) -> Path:
    home, project = both_models_home
    home = copy_home(home, tmp_path / "home")
    use_home(monkeypatch, home, warehouse_dir)
    monkeypatch.setenv("KEIKO_PROJECT_DIR", str(project))
    monkeypatch.delenv("KEIKO_ADMIN_TOKEN", raising=False)
    return home


@pytest.fixture
def rows(both_models) -> list[dict]:
    import datetime as dt

    from keiko.stages.context import StageContext

    picked = sample_rows(StageContext.create("ctr", dt.date.fromisoformat(DS)), n=5)
    return [{**row, "user_id": 100 + i, "impression_id": 700 + i} for i, row in enumerate(picked)]


@contextlib.contextmanager
def one_process():
    """ctr v1 and cvr v1 in one server; yields (its URL, its gRPC address, the app)."""
    app = create_app(["ctr", "cvr"], load_production=False, grpc_port=0)
    for server in app.state.servers.values():
        server.load(1)
    with serve_in_thread(app, http=OneWriteHttpToolsProtocol) as url:
        yield url, f"127.0.0.1:{app.state.grpc_port}", app


def oip_inputs(module, rows: list[dict]) -> list:
    from keiko.modeldef import load_model

    made = []
    for name, kind in {**load_model("ctr").features.INPUT_SCHEMA, "user_id": "int"}.items():
        if kind in ("str", "timestamp"):
            array, datatype = np.array([str(r[name]).encode() for r in rows], dtype=object), "BYTES"
        else:
            array = np.array([r[name] for r in rows], dtype=np.int64 if kind == "int" else np.float64)
            datatype = "INT64" if kind == "int" else "FP64"
        tensor = module.InferInput(name, [len(rows)], datatype)
        tensor.set_data_from_numpy(array)
        made.append(tensor)
    return made


def test_one_request_gets_every_models_answer_on_every_protocol(both_models, rows):
    with one_process() as (url, address, _app):
        alone = {m: httpx.post(f"{url}/models/{m}/predict", json={"rows": rows}).json() for m in ("ctr", "cvr")}
        assert alone["ctr"]["predictions"] != alone["cvr"]["predictions"]  # two models, not one twice
        together = httpx.post(f"{url}/models/ctr+cvr/predict", json={"rows": rows}).json()
        assert together == {"models": alone}

        rest = httpclient.InferenceServerClient(url.removeprefix("http://")).infer(
            "ctr+cvr", oip_inputs(httpclient, rows)
        )
        rpc = grpcclient.InferenceServerClient(address).infer("ctr+cvr", oip_inputs(grpcclient, rows))
        for result in (rest, rpc):
            for model in ("ctr", "cvr"):
                assert result.as_numpy(model).tolist() == alone[model]["predictions"]
        # Asking for one output scores that model only.
        only_cvr = [grpcclient.InferRequestedOutput("cvr")]
        answer = grpcclient.InferenceServerClient(address).infer(
            "ctr+cvr", oip_inputs(grpcclient, rows), outputs=only_cvr
        )
        assert [o.name for o in answer.get_response().outputs] == ["cvr"]

        metadata = httpx.get(f"{url}/v2/models/ctr+cvr").json()
        assert [o["name"] for o in metadata["outputs"]] == ["ctr", "cvr"]
        # The root serves no model of its own: it says where they are.
        refused = httpx.post(f"{url}/predict", json={"rows": rows})
        assert refused.status_code == 404 and "/models/ctr+cvr/predict" in refused.json()["error"]
        assert httpx.post(f"{url}/models/ctr+ads/predict", json={"rows": rows}).status_code == 404


def test_each_model_has_its_own_version_rollout_log_and_metrics(both_models, rows):
    from keiko.warehouse import DuckDBWarehouse

    v2 = register_variant(v1_bytes("cvr"), window_start="2026-11-10", model="cvr")
    golden = pq.read_table(both_models / "artifacts" / "cvr" / DS / "golden.parquet")
    with one_process() as (url, _address, _app):
        rollout = LocalRollout(model="cvr", urls=[f"{url}/models/cvr"], smoke=SmokeTest.from_golden(golden), log=print)
        rollout.run(v2, 1)
        versions = httpx.get(f"{url}/version").json()["models"]
        assert (versions["ctr"]["version"], versions["cvr"]["version"]) == (1, v2)
        answer = httpx.post(f"{url}/models/ctr+cvr/predict", json={"rows": rows, "request_id": "bid-9"}).json()
        assert {m: a["model_version"] for m, a in answer["models"].items()} == {"ctr": 1, "cvr": v2}
        # A rollout pointed at the process rather than at its model refuses, saying where the model is.
        with pytest.raises(KeikoError, match="/models/cvr"):
            LocalRollout(model="cvr", urls=[url], smoke=SmokeTest.from_golden(golden), log=print).run(1, v2)

        text = httpx.get(f"{url}/metrics").text
        families = {f.name: f for f in text_string_to_metric_families(text)}  # one block per family, both models in it
        served = {s.labels["model"]: s.value for s in families["keiko_serving_version"].samples}
        assert served == {"ctr": 1, "cvr": v2}
        cvr_only = httpx.get(f"{url}/models/cvr/metrics").text
        assert 'model="cvr"' in cvr_only and 'model="ctr"' not in cvr_only
    logged = (
        DuckDBWarehouse(both_models / "served")
        .query("SELECT model, version, request_id FROM predictions WHERE request_id = 'bid-9'")
        .to_pylist()
    )
    assert sorted((r["model"], r["version"]) for r in logged) == sorted([("ctr", 1)] * 5 + [("cvr", v2)] * 5)


def test_keiko_serve_hosts_several_models_in_each_replica(both_models, rows):
    from keiko.config import settings
    from keiko.registry import open_registry

    registry = open_registry(settings().registry_url)
    for model in ("ctr", "cvr"):
        registry.move_alias(model, 1)
    port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "keiko", "serve", "--model", "ctr", "--model", "cvr", "--replicas", "1",
               "--port", str(port), "--grpc-port", str(grpc_port)]  # fmt: skip
    server = subprocess.Popen(
        command, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            assert time.monotonic() < deadline and server.poll() is None, "the server did not get ready"
            time.sleep(0.3)
        rpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert rpc.is_model_ready("ctr+cvr")
        answer = rpc.infer("ctr+cvr", oip_inputs(grpcclient, rows[:1]))
        rest = httpx.post(f"http://127.0.0.1:{port}/models/ctr+cvr/predict", json={"rows": rows[:1]}).json()
        assert answer.as_numpy("cvr").tolist() == rest["models"]["cvr"]["predictions"]
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert f"KEIKO_SERVING_URLS_CVR=http://127.0.0.1:{port}/models/cvr" in output, output


def test_schemathesis_finds_the_group_true_to_its_document(both_models):
    with one_process() as (url, _address, _app):
        assert "/models/ctr+cvr/predict" in httpx.get(f"{url}/openapi.json").json()["paths"]
        run = schemathesis_run(url)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
