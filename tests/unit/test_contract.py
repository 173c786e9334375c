"""The step contract (keiko.contract): one module names every run artifact, every step returns its declared
typed result, and a result file that does not match its record is a clear error."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

from conftest import ROOT
from keiko import contract
from keiko.contract import RESULTS, ExtractResult, RunLayout, TrainResult
from keiko.errors import KeikoError, MissingDataError
from keiko.pipeline import MONITOR, MONITOR_TASK_IDS, PIPELINE, TASK_IDS
from keiko.storage import ArtifactStore

PACKAGE = ROOT / "plugins" / "keiko"
# Every file name and directory the contract gives a run or a model, as code would spell them.
NOT_NAMES = {"GOLDEN_EXPECTED", "MODEL_DAG", "MONITOR_DAG"}  # a column; which DAG a layout is of (from keiko.pipeline)
TEMPLATES = [v for k, v in vars(contract).items() if k.isupper() and isinstance(v, str) and k not in NOT_NAMES]
SPELLINGS = sorted(
    {part for template in TEMPLATES for part in re.split(r"\{\w+\}", template) if len(part) > 4}
    - {".json", "model."}  # parts of templates only: the artifact-suffix check below covers them
)
ARTIFACT_SUFFIX = re.compile(r"\.(json|parquet|npz|cbm|html|png|sql)\b")
# File names outside any run directory, each with the reason it is not the contract's.
NOT_RUN_ARTIFACTS = {
    ("modeldef.py", "extract.sql"): "the model's SQL template in include/sql/<model>/, not a run's rendered copy",
    ("modeldef.py", ".*.json"): "a model folder's own expectation suites",
    ("modeldef.py", ".json"): "a model folder's own expectation suites",
    ("modeldef.py", "label column produced by extract.sql"): "the field's description",
    ("pipeline.py", "renders include/sql/<model>/extract.sql for the data window and runs it on the warehouse"): (
        "what the step does, in words"
    ),
    ("report/page.py", "run_page.html.j2"): "the run page's template, in the package",
    ("warehouse.py", "*.parquet"): "warehouse partitions",
    ("warehouse.py", "*=*/*.parquet"): "warehouse partitions",
    ("traffic.py", "changes.json"): "the synthetic world's changes, kept beside its warehouse",
    ("serving/prediction_log.py", ".parquet"): "the prediction log's files, partitions of the warehouse table",
    ("synth.py", "part-0.parquet"): "warehouse partitions the synthetic warehouse writes",
    ("config.py", "DuckDB warehouse: `<table>/dt=<day>/*.parquet`"): "the setting's description",
    ("operators/pod.py", "/airflow/xcom/return.json"): "where KubernetesPodOperator's XCom sidecar reads",
    ("modeldef.py", "monitor.sql"): "the model's monitor SQL template in include/sql/<model>/",
    ("modeldef.py", "batch_keys.sql"): "a batch model's key-set SQL template in include/sql/<model>/",
    ("modeldef.py", "extract.sql's row identifier: a row's key through splits and truth"): "the field's description",
    (
        "pipeline.py",
        "renders include/sql/<model>/monitor.sql for the day: each answer the servers logged, with its outcome",
    ): "what the step does, in words",
    ("stages/join_outcomes.py", ": running monitor.sql on "): "the template's name in a log line",
    ("stages/join_outcomes.py", "monitor.sql returned no rows for "): "the template's name in an error",
    ("operators/sensors.py", "/*.parquet"): "warehouse partitions",
    ("run_pages.py", ".png"): "the monitoring page's plots, as its route serves them",
    ("gates/data_docs.py", "static/images/logo-long.png"): "a file of GE's Data Docs site, inside the site",
    ("gates/data_docs.py", "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png"): (
        "the remote logo GE's pages load, which data_docs replaces"
    ),
    ("gates/data_docs.py", "*.html"): "the pages of a Data Docs site GE built",
    ("serving/inference_protocol.py", "/versions/{version}"): "the inference protocol's URL path of a model version",
    ("serving/openapi.py", "/openapi.json"): "the URL path of the model server's OpenAPI document",
}


def code_strings(path: Path) -> list[tuple[int, str]]:
    """The string constants of a module's code (f-string parts included), docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if path.name != "contract.py")


def test_the_spellings_checked_are_the_contracts():
    assert {"raw.parquet", "evaluation.json", "blessing.json", "deploy.json", "stages/", "gates/", "steps/"} <= set(
        SPELLINGS
    )


def test_no_module_but_the_contract_spells_a_run_artifact_name():
    found = []
    for path in modules():
        relative = path.relative_to(PACKAGE).as_posix()
        for line, text in code_strings(path):
            if (relative, text) in NOT_RUN_ARTIFACTS:
                continue
            named = [spelling for spelling in SPELLINGS if spelling in text]
            if named or ARTIFACT_SUFFIX.search(text):
                found.append(f"{relative}:{line}: {text!r}")
    assert found == [], "name these through keiko.contract (RunLayout, ModelLayout):\n" + "\n".join(found)


def test_no_module_reads_a_result_file_as_an_untyped_dict():
    for path in modules():
        text = path.read_text()
        assert not re.search(r"read_json\([^)]*step_result", text), path
        assert "stage_result(" not in text, path


def test_every_step_declares_its_result_and_returns_it():
    assert tuple(RESULTS) == (*TASK_IDS, *MONITOR_TASK_IDS)
    for step in (*PIPELINE, *MONITOR):
        run = importlib.import_module(step.module).run
        assert inspect.signature(run).return_annotation == RESULTS[step.task_id].__name__, step.module


@pytest.fixture
def layout(tmp_path) -> RunLayout:
    return RunLayout(ArtifactStore(tmp_path.as_uri()), "ctr", "2026-11-21")


def test_a_result_round_trips_typed(layout):
    written = ExtractResult(raw_uri=layout.raw, raw_sha256="ab", rows=3, window_start="a", window_end="b")
    layout.write_result(written)
    assert layout.step_result("extract").endswith("/ctr/2026-11-21/stages/extract.json")
    assert layout.read_result(ExtractResult) == written


def test_a_missing_upstream_result_says_which_command_to_run(layout):
    with pytest.raises(MissingDataError, match=r"train has no result for ctr 2026-11-21 .*run `keiko stage train "):
        layout.read_result(TrainResult)


def test_a_result_file_of_another_version_is_a_clear_error(layout):
    layout.store.write_json(layout.step_result("extract"), {"raw_uri": "x", "rows": "many"})
    with pytest.raises(KeikoError) as error:
        layout.read_result(ExtractResult)
    message = str(error.value)
    assert message.startswith(f"{layout.step_result('extract')} is not a valid ExtractResult")
    assert "raw_sha256" in message or "rows" in message
