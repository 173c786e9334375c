"""features: apply the model's feature code, split by time, profile the training data.

The last day of the window is the out-of-time test set, the day before it the validation set
(early stopping), the rest is training data.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keiko.columns import from_arrow
from keiko.contract import RAW, SPLITS, FeaturesResult, Split
from keiko.errors import MissingDataError
from keiko.profiling import profile
from keiko.stages.context import StageContext


def split_masks(days: pa.ChunkedArray | pa.Array, ds: dt.date) -> dict[str, np.ndarray]:
    """Boolean row masks from the `dt` column (ISO dates compare correctly as strings)."""
    test_day, valid_day = ds.isoformat(), (ds - dt.timedelta(days=1)).isoformat()
    masks = {"train": pc.less(days, valid_day), "valid": pc.equal(days, valid_day), "test": pc.equal(days, test_day)}
    return {split: np.asarray(mask, dtype=bool) for split, mask in masks.items()}


def build_feature_table(
    features: dict[str, np.ndarray], label: np.ndarray, ids: np.ndarray, mask: np.ndarray, row_id: str
) -> pa.Table:
    columns = {slot: pa.array(values[mask]) for slot, values in sorted(features.items())}
    columns["label"] = pa.array(label[mask].astype(np.int8))
    columns[row_id] = pa.array(ids[mask])
    return pa.table(columns)


def run(ctx: StageContext) -> FeaturesResult:
    config, module = ctx.model.config, ctx.model.features
    raw = ctx.store.read_table(ctx.layout.raw)
    ctx.log(f"features {ctx.model.name}: {raw.num_rows:,} raw rows, feature module {config.features}")
    missing = [c for c in [*module.INPUT_SCHEMA, config.label, "dt", config.row_id] if c not in raw.column_names]
    if missing:
        raise MissingDataError(f"{RAW} lacks columns {missing} needed by {config.features}")

    columns = from_arrow(raw, module.INPUT_SCHEMA)
    features = module.transform(columns, **config.feature_params)
    ctx.log(f"computed {len(features)} feature slots")
    label = np.asarray(raw.column(config.label), dtype=np.int8)
    ids = np.asarray(raw.column(config.row_id))
    masks = split_masks(raw.column("dt"), ctx.ds)

    splits: dict[str, Split] = {}
    for split in SPLITS:
        n = int(masks[split].sum())
        if n == 0:
            raise MissingDataError(
                f"the {split} split is empty for ds={ctx.ds} (window {ctx.window[0]}..{ctx.window[1]})"
            )
        uri = ctx.layout.split(split)
        sha256 = ctx.store.write_table(uri, build_feature_table(features, label, ids, masks[split], config.row_id))
        rate = float(label[masks[split]].mean())
        splits[split] = Split(uri=uri, sha256=sha256, rows=n, label_rate=rate)
        ctx.log(f"{split}: {n:,} rows, label rate {rate:.4%}")

    train_columns = {name: values[masks["train"]] for name, values in columns.items()}
    stats = {
        "columns": profile(train_columns, module.INPUT_SCHEMA),
        "label_rate": {split: info.label_rate for split, info in splits.items()},
        "rows": {split: info.rows for split, info in splits.items()},
    }
    return FeaturesResult(
        splits=splits, profile_uri=ctx.layout.profile, profile_sha256=ctx.store.write_json(ctx.layout.profile, stats)
    )
