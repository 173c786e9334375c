"""deploy/athena/predictions.sql declares what the model servers write: every column of every model's
prediction log with its Athena type, partitioned as the log's folders are, projected over every model."""

import re

import pyarrow as pa

from conftest import ROOT
from keiko.modeldef import load_model, model_names
from keiko.serving.prediction_log import log_schema

DDL = (ROOT / "deploy" / "athena" / "predictions.sql").read_text()
ATHENA = {pa.string(): "string", pa.int64(): "bigint", pa.int32(): "int", pa.float64(): "double",
          pa.timestamp("us"): "timestamp"}  # fmt: skip


def declared_columns() -> dict[str, str]:
    body = DDL.split("CREATE EXTERNAL TABLE IF NOT EXISTS predictions (", 1)[1].split("\n)", 1)[0]
    return dict(re.findall(r"^\s+(\w+) (\w+),?$", body, flags=re.M))


def test_every_model_s_log_columns_are_declared_with_their_types():
    declared = declared_columns()
    for name in model_names():
        schema = log_schema(load_model(name).request_schema)  # what the server logs (app.open_prediction_log)
        assert {f.name: ATHENA[f.type] for f in schema} == {f.name: declared[f.name] for f in schema}, name


def test_partitions_are_the_log_s_folders_projected_over_every_model():
    assert "PARTITIONED BY (dt string, model string)" in DDL
    assert f"'projection.model.values' = '{','.join(model_names())}'" in DDL
    assert "dt=${dt}/model=${model}/" in DDL
