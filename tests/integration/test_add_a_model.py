"""Adding a model is adding two folders: no code, no test, no DAG file changes.

A person following the README's "Adding a model" copies include/models/ctr and include/sql/ctr to
ctr_ios, edits model.yaml (owner, description, schedule, serving port, and what makes this model its
own: iOS traffic only, a smaller hash space, other slices) and the SQL (iOS impressions only). Then the
unchanged DAG file yields `keiko_ctr_ios` with the same gated chain as keiko_ctr, and the pipeline runs
it on the synthetic warehouse through register, reading the edited SQL and YAML.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pytest
from airflow.dag_processing.dagbag import DagBag

from conftest import DS, END_DATE, ROOT, UP_TO_REGISTER, run_steps
from keiko.config import settings
from keiko.modeldef import load_model, model_names
from keiko.pipeline import TASK_IDS
from keiko.registry import open_registry
from keiko.storage import open_store

MODEL = "ctr_ios"
OWNER = "ml-ads-ios"
SCHEDULE = "15 2 * * *"
PORT = 8621  # ctr serves on 8601-8602, cvr on 8611-8612: each model its own ports
EXPECTED_CHAIN = [
    "extract", "gate_raw", "features", "gate_features", "train", "gate_training",
    "evaluate", "gate_evaluation", "register", "batch_score", "gate_batch", "deploy", "gate_serving", "canary",
    "approve_promotion", "promote", "rollback",
]  # fmt: skip

# (pattern, replacement): one line each, as a person edits the copied model.yaml. Keyed on the field,
# not on ctr's current values, so retuning ctr does not break this test; each must match exactly once.
#
# Thresholds and gate bands are ctr's, unchanged, on purpose: they still hold for iOS-only rows of the
# session warehouse (8 days x ~30k rows, seed 7). iOS is ~63% of the synthetic traffic: 17.6k-21.2k
# rows a day, so the test day's ~19.7k rows clear gates.features.min_rows (5,000) and every day is
# 0.92-1.11 x the median (volume band 0.7-1.3); the daily iOS click rate is 2.57-2.99% (label_rate
# band 1.5-4.5%). Measured on ctr_ios for 2026-11-21: AUC 0.686 (min_auc 0.65; ctr on all traffic:
# 0.675-0.713), logloss 0.122 (max 0.15), calibration 0.978 (1 +- 0.15). A slice much smaller than
# this would need min_rows and the label-rate band revisited, and the ranges measured again.
YAML_EDITS = (
    (r"\A# .*$", "# Click-through rate of iOS traffic only: P(click | iOS impression), for the iOS bidder."),
    (r"^owner: .*$", f"owner: {OWNER}"),
    (r"^description: .*$", "description: Click-through rate of iOS impressions; hashed logistic regression."),
    (r'^schedule: "[^"]*"', f'schedule: "{SCHEDULE}"'),
    (r"^  hash_bits: \d+$", "  hash_bits: 18"),  # a quarter of ctr's hash space for a smaller slice
    (r"^slices: .*$", "slices: [position, country]"),  # every row is iOS: an `os` slice says nothing
    (r"^  port: \d+$", f"  port: {PORT}"),
    (r"starts them on ports \d+, \d+", f"starts them on ports {PORT}, {PORT + 1}"),
    # gate_raw: an Android row in the extract is a bug (the source table holds both, as it should)
    (r"^      clicked: \[0, 1\]$", "      clicked: [0, 1]\n      os: [ios]"),
)
SQL_EDITS = (
    (r"\A-- .*$", f"-- {MODEL} training rows: one row per iOS impression in the data window, 1 if it was clicked."),
    (r"^(WHERE i\.dt BETWEEN .*)$", r"\1\n    AND i.os = 'ios'"),
)


MONITOR_SQL_EDITS = (
    (r"\A-- ctr online rows", f"-- {MODEL} online rows (iOS impressions only)"),
    (r"^(WHERE i\.dt = .*)$", r"\1\n    AND i.os = 'ios'"),
)


def edit(path: Path, edits: tuple[tuple[str, str], ...]) -> None:
    text = path.read_text()
    for pattern, replacement in edits:
        text, count = re.subn(pattern, replacement, text, count=0, flags=re.MULTILINE)
        assert count == 1, f"{path}: {pattern!r} matched {count} times; the ctr folder changed, update this test"
    path.write_text(text)


@pytest.fixture
def ctr_ios(project_copy: Path) -> Path:
    """The project copy with a third model, ctr_ios, made from ctr's two folders; its include/."""
    include = project_copy / "include"
    shutil.copytree(include / "models" / "ctr", include / "models" / MODEL)
    shutil.copytree(include / "sql" / "ctr", include / "sql" / MODEL)
    edit(include / "models" / MODEL / "model.yaml", YAML_EDITS)
    edit(include / "sql" / MODEL / "extract.sql", SQL_EDITS)
    edit(include / "sql" / MODEL / "monitor.sql", MONITOR_SQL_EDITS)

    config = load_model(MODEL).config  # the edits mean what they say (and the file is still valid)
    assert (config.owner, config.schedule, config.serving.port) == (OWNER, SCHEDULE, PORT)
    assert config.gates.raw.accepted_values["os"] == ["ios"] and config.feature_params == {"hash_bits": 18}
    assert config.slices == ["position", "country"]
    return include


def gated_chain(dag) -> list[str]:
    """Task ids from extract along the main chain (register also hangs off evaluate, as a side edge)."""
    chain = [dag.get_task("extract")]
    while chain[-1].downstream_list:
        downstream = chain[-1].downstream_list
        (nxt,) = [t for t in downstream if not any(t in o.get_flat_relatives() for o in downstream if o is not t)]
        chain.append(nxt)
    return [t.task_id for t in chain]


def test_the_unchanged_dag_file_builds_the_new_models_dag(ctr_ios):
    # dags/keiko_models.py reads the models of KEIKO_PROJECT_DIR (set by project_copy) when it is parsed.
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    names = [*model_names(ROOT / "include" / "models"), MODEL]
    assert set(bag.dag_ids) == {f"keiko_{kind}{name}" for name in names for kind in ("", "monitor_")}

    dag, ctr = bag.dags[f"keiko_{MODEL}"], bag.dags["keiko_ctr"]
    assert gated_chain(dag) == gated_chain(ctr) == EXPECTED_CHAIN
    assert [task for task in EXPECTED_CHAIN if task != "approve_promotion"] == list(TASK_IDS)  # Airflow's own task
    assert sorted(dag.task_ids) == sorted(ctr.task_ids)
    register = dag.get_task("register")
    assert {t.task_id for t in register.upstream_list} == {"evaluate", "gate_evaluation"}
    assert register.trigger_rule == "all_done_min_one_success"

    assert set(dag.tags) == {"keiko", f"model:{MODEL}", f"owner:{OWNER}"}
    assert dag.timetable.expression == SCHEDULE
    assert OWNER in dag.doc_md and "iOS" in dag.description
    for task in dag.tasks:
        assert task.owner == OWNER and task.model == MODEL, task.task_id
        assert task.retries == ctr.get_task(task.task_id).retries, task.task_id
        if task.task_id not in ("wait_for_data", "approve_promotion"):  # Airflow's own: no keiko command
            assert task.command[-4:-2] == ["--model", MODEL], task.task_id


@pytest.mark.slow  # the whole pipeline, through register
def test_the_new_model_trains_and_registers_with_its_lineage(ctr_ios, keiko_home, warehouse_dir):
    run_steps(*UP_TO_REGISTER, model=MODEL)

    config, store = settings(), open_store(settings())
    window_start = (END_DATE - dt.timedelta(days=load_model(MODEL).config.window_days - 1)).isoformat()

    # extract ran the edited SQL: exactly the window's iOS impressions, nothing else.
    raw = store.read_table(store.uri(MODEL, DS, "raw.parquet"))
    assert pc.unique(raw.column("os")).to_pylist() == ["ios"]
    impressions = pds.dataset(
        warehouse_dir / "impressions",
        format="parquet",
        partitioning=pds.partitioning(pa.schema([("dt", pa.string())]), flavor="hive"),
    )
    in_window = (pds.field("dt") >= window_start) & (pds.field("dt") <= DS)
    assert raw.num_rows == impressions.count_rows(filter=in_window & (pds.field("os") == "ios"))
    assert raw.num_rows < impressions.count_rows(filter=in_window)
    assert "AND i.os = 'ios'" in store.read_bytes(store.uri(MODEL, DS, "extract.sql")).decode()

    # ... and the stages read the edited model.yaml: gate_raw held the rows to os in {ios}, evaluate
    # reported the new slices.
    outcomes = store.read_json(store.uri(MODEL, DS, "gates/raw.json"))["outcomes"]
    # every extracted row (the source table's own set is android and ios)
    (os_values,) = [o for o in outcomes if o["suite"] == "window" and o["column"] == "os outside {ios}"]
    assert os_values["observed"] == "0" and os_values["passed"]
    assert sorted(store.read_json(store.uri(MODEL, DS, "evaluation.json"))["slices"]) == ["country", "position"]

    # register: one version of ctr_ios, with its lineage; nothing written under ctr.
    registry = open_registry(config.registry_url)
    (version,) = registry.list(MODEL)
    assert registry.list("ctr") == []
    definition = load_model(MODEL)
    assert (version.model, version.version, version.status) == (MODEL, 1, "registered"), version.reason
    assert (version.ds, version.window_start, version.window_end) == (DS, window_start, DS)
    assert version.algorithm == "hashed_logistic_regression"
    assert (
        version.config_sha256
        == definition.config_sha256
        != load_model("ctr", ROOT / "include" / "models").config_sha256
    )
    assert version.features_sha256 == definition.features_sha256
    assert f"/{MODEL}/versions/" in version.artifact_uri
    artifact = store.read_verified(version.artifact_uri, version.artifact_sha256)
    assert hashlib.sha256(artifact).hexdigest() == version.artifact_sha256
    raw_bytes = store.read_bytes(store.uri(MODEL, DS, "raw.parquet"))
    assert version.metrics["raw_rows"] == raw.num_rows
    assert version.metrics["raw_sha256"] == hashlib.sha256(raw_bytes).hexdigest()
    assert version.metrics["test"]["rows"] == raw.filter(pc.equal(raw.column("dt"), DS)).num_rows
    assert version.metrics["blessing"]["blessed"] and version.metrics["production"] is None
