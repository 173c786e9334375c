"""Request validation for /predict, derived from the feature module's INPUT_SCHEMA and model.yaml's
`serving:` limits."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Annotated, Any, NotRequired

import msgspec
from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import TypedDict

from keiko.errors import ModelConfigError
from keiko.modeldef import Serving


def _iso_text(value: Any) -> Any:
    if not isinstance(value, str | dt.datetime):
        raise ValueError("a timestamp is an ISO 8601 string, such as 2026-11-21T09:30:00")
    return value


# Numbers are strict: a JSON number, never true, "3" or (for an int) 3.0; a timestamp is text, never a number. Lax
# parsing would score a floor_price of false as 0.0 and an event_time of 0 as 1970 (both found by schemathesis).
_TYPES: dict[str, Any] = {
    "int": Annotated[int, Field(ge=-(2**63), le=2**63 - 1, strict=True)],  # int64 columns, as in the warehouse
    "float": Annotated[float, Field(allow_inf_nan=False, strict=True)],
    "timestamp": Annotated[dt.datetime, BeforeValidator(_iso_text)],
}
GOT_MAX_CHARS = 80  # of a refused value echoed in an error: a 1 MB string is not sent back
REQUEST_ID_MAX_CHARS = 128


def string_limits(schema: Mapping[str, str], limits: Serving) -> dict[str, int]:
    """Characters allowed in each string field: max_string_length, or the field's own limit."""
    strings = [name for name, kind in schema.items() if kind == "str"]
    unknown = sorted(set(limits.max_string_length_per_field) - set(strings))
    if unknown:
        raise ModelConfigError(
            f"serving.max_string_length_per_field: {', '.join(unknown)} is not a string field of INPUT_SCHEMA"
            f" (string fields: {', '.join(strings) or 'none'})"
        )
    return {name: limits.max_string_length_per_field.get(name, limits.max_string_length) for name in strings}


def request_adapter(
    schema: Mapping[str, str],
    limits: Serving,
    identifiers: Mapping[str, str] | None = None,
    optional: Mapping[str, str] | None = None,
) -> TypeAdapter:
    """Validates {"request_id"?: str, "rows": [...]} JSON bytes in one pass (pydantic-core), errors located by
    row and field. Each row holds the schema's fields, and may hold `identifiers` (the prediction log's
    impression and user ids), kept for the log, and `optional` fields, checked as the schema's when present (a
    batch model's feature inputs, for its online fallback); other fields are ignored."""
    optional = {name: kind for name, kind in (optional or {}).items() if name not in schema}
    lengths = string_limits({**schema, **optional}, limits)

    def checked(name: str, kind: str) -> Any:
        return Annotated[str, Field(max_length=lengths[name])] if kind == "str" else _TYPES[kind]

    fields: dict[str, Any] = {
        name: NotRequired[_TYPES[kind]]
        for name, kind in (identifiers or {}).items()
        if name not in schema and name not in optional
    }
    fields.update((name, NotRequired[checked(name, kind)]) for name, kind in optional.items())
    fields.update((name, checked(name, kind)) for name, kind in schema.items())
    row = with_config(ConfigDict(extra="ignore"))(TypedDict("Row", fields))
    # max_length backs up too_many_rows() for the bodies it leaves to this parse (NaN literals, ...).
    rows = Annotated[list[row], Field(min_length=1, max_length=limits.max_rows)]
    request = {"request_id": NotRequired[Annotated[str, Field(max_length=REQUEST_ID_MAX_CHARS)]], "rows": rows}
    return TypeAdapter(with_config(ConfigDict(extra="forbid"))(TypedDict("PredictRequest", request)))


class _RowsOnly(msgspec.Struct):
    rows: list[msgspec.Raw]  # each row's bytes, unparsed


_ROWS_ONLY = msgspec.json.Decoder(_RowsOnly)


def too_many_rows(body: bytes, max_rows: int) -> int | None:
    """How many rows `body` holds when that is more than `max_rows`, without parsing them; else None.

    A list of n items has n - 1 commas, so a body with fewer than `max_rows` commas is within the cap
    (one-row requests stop here: ~0.2 us). Otherwise msgspec counts the items without building them:
    1.6 ms for a MiB of ctr rows, where pydantic parses all of it and validates up to the cap (23 ms).
    Its worst case is a MiB of one-byte items (~30 ms, about what pydantic takes to refuse it): the body
    limit bounds it. A body that is not {"rows": [...]} is left to validation, which says what is wrong.
    """
    if body.count(b",") < max_rows:
        return None
    try:
        rows = len(_ROWS_ONLY.decode(body).rows)
    except msgspec.DecodeError:
        return None
    return rows if rows > max_rows else None


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
        if isinstance(value, str) and len(value) > GOT_MAX_CHARS:
            item["got"] = f"{value[:GOT_MAX_CHARS]}... ({len(value):,} characters)"
        elif isinstance(value, (str, int, float, bool)):
            item["got"] = value if not isinstance(value, float) or math.isfinite(value) else str(value)
        described.append(item)
    return described
