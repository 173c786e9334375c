"""Request validation for /predict, derived from the feature module's INPUT_SCHEMA."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import TypedDict

MAX_ROWS = 10_000

_TYPES: dict[str, Any] = {
    "int": Annotated[int, Field(ge=-(2**63), le=2**63 - 1)],  # int64 columns, as in the warehouse
    "float": Annotated[float, Field(allow_inf_nan=False)],
    "str": str,
    "timestamp": dt.datetime,
}


def request_adapter(schema: Mapping[str, str]) -> TypeAdapter:
    """Validates {"rows": [...]} JSON bytes in one pass (pydantic-core), errors located by row and field."""
    row = with_config(ConfigDict(extra="ignore"))(
        TypedDict("Row", {name: _TYPES[kind] for name, kind in schema.items()})
    )
    body = with_config(ConfigDict(extra="forbid"))(
        TypedDict("PredictRequest", {"rows": Annotated[list[row], Field(min_length=1, max_length=MAX_ROWS)]})
    )
    return TypeAdapter(body)


def describe_errors(errors: list[dict[str, Any]], limit: int = 20) -> list[dict[str, Any]]:
    described = []
    for error in errors[:limit]:
        loc = list(error["loc"])
        item: dict[str, Any] = {"error": error["msg"]}
        if len(loc) >= 2 and loc[0] == "rows" and isinstance(loc[1], int):
            item["row"] = loc[1]
            if len(loc) > 2:
                item["field"] = ".".join(str(p) for p in loc[2:])
        else:
            item["field"] = ".".join(str(p) for p in loc) or "(body)"
        value = error.get("input")
        if isinstance(value, (str, int, float, bool)):
            item["got"] = value if not isinstance(value, float) or math.isfinite(value) else str(value)
        described.append(item)
    return described
