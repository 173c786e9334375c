"""What a version must answer before it may serve: known rows scored offline by its own verified artifact.

A deploy has these already (evaluate's golden set holds the candidate's offline predictions). A rollback
target was evaluated on another day, so its answers are computed here, as evaluate computes production's:
the verified artifact, its own feature parameters, the batch feature path.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from keiko.contract import GOLDEN_EXPECTED, RunLayout
from keiko.errors import KeikoError
from keiko.modeldef import ModelDefinition
from keiko.registry import ModelVersion
from keiko.rollout import SMOKE_ROWS, SmokeTest, json_rows
from keiko.storage import ArtifactStore


def golden_rows(store: ArtifactStore, model: str, days: Iterable[str]) -> pa.Table:
    """The first SMOKE_ROWS golden rows (request fields only) of the first of `days` whose run has them
    (an old day's artifacts may have been cleaned up)."""
    days = list(dict.fromkeys(days))
    for ds in days:
        uri = RunLayout(store, model, ds).golden
        if store.exists(uri):
            golden = store.read_table(uri).slice(0, SMOKE_ROWS)
            return golden.drop_columns([c for c in (GOLDEN_EXPECTED,) if c in golden.column_names])
    raise KeikoError(
        f"no golden rows to smoke-test with: no run of {model} on {', '.join(days)} has a golden set "
        f"({RunLayout(store, model, '<ds>').golden})"
    )


def known_answers(store: ArtifactStore, model: ModelDefinition, target: ModelVersion, rows: pa.Table) -> SmokeTest:
    """`rows` and `target`'s offline predictions for them."""
    from keiko.algorithms import load_model_bytes
    from keiko.columns import from_arrow

    data = store.read_verified(target.artifact_uri, target.artifact_sha256)
    try:
        loaded = load_model_bytes(data)
    except Exception as exc:  # any loader's error: the artifact is unusable, say so before touching servers
        raise KeikoError(f"{model.name} v{target.version}'s artifact does not load: {exc}") from None
    features = model.features.transform(from_arrow(rows, model.features.INPUT_SCHEMA), **loaded.feature_params)
    return SmokeTest(json_rows(rows), [float(p) for p in loaded.predict(features)])
